"""Dedup against benchmark captions: normalized Levenshtein, nearest caption reported, rows accounted."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import polars as pl
import pytest
from rapidfuzz.distance import Levenshtein

from tasks.dedup import dedup, dedup_against_benchmark, nearest_within, normalize_prompt
from tasks.ingest import ingest_benchmark, ingest_ratings


def frame(prompts: dict[str, str], images_per_prompt: int = 2) -> pl.DataFrame:
    rows = [(pid, f"{pid}-{k}", text) for pid, text in prompts.items() for k in range(images_per_prompt)]
    return pl.DataFrame(
        {
            "image_id": [r[1] for r in rows],
            "prompt_id": [r[0] for r in rows],
            "prompt": [r[2] for r in rows],
            "source_file": ["f"] * len(rows),
            "source_row": list(range(len(rows))),
        }
    )


def test_normalization_ignores_case_and_spacing_only() -> None:
    assert normalize_prompt("  Two RED\tcircles \n above ") == "two red circles above"
    assert normalize_prompt("a cat.") != normalize_prompt("a cat")


def test_nearest_matches_a_brute_force_loop() -> None:
    queries = ["a red cat", "a blue dog", "green tree", "a red car", "zzzz"]
    choices = ["a red cap", "blue dogs", "a green tree", "the red car"]
    nearest = nearest_within(queries, choices, cutoff=0.35, chunk_rows=2)
    for i, query in enumerate(queries):
        distances = [Levenshtein.normalized_distance(query, choice) for choice in choices]
        best = min(range(len(choices)), key=distances.__getitem__)
        if distances[best] <= 0.35:
            assert nearest.index[i] == best and nearest.distance[i] == pytest.approx(
                distances[best], abs=1e-6
            )
        else:
            assert nearest.index[i] == -1 and nearest.distance[i] == 1.0


def test_removed_prompts_are_reported_and_their_images_rejected() -> None:
    ratings = frame(
        {"p1": "Two red circles above a square", "p2": "a blue triangle", "p3": "one green star!"}
    )
    captions = ["two red circles above a square", "one green star", "something else entirely"]
    kept, removed, rejects = dedup_against_benchmark(ratings, captions, threshold=0.1)
    assert sorted(kept["prompt_id"].unique()) == ["p2"]
    report = {row["prompt_id"]: row for row in removed.iter_rows(named=True)}
    assert (
        report["p1"]["distance"] == 0.0
        and report["p1"]["nearest_caption"] == "two red circles above a square"
    )
    assert report["p3"]["distance"] == pytest.approx(1 / 15, abs=1e-6)  # one deleted "!" of 15 characters
    assert report["p3"]["images_removed"] == 2
    assert rejects.height == 4 and set(rejects["field"]) == {"prompt"}
    assert kept.height + rejects.height == ratings.height
    assert all("near-duplicate of benchmark caption" in reason for reason in rejects["reason"])


def test_threshold_must_be_a_distance(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        dedup(tmp_path / "a.parquet", tmp_path / "b.parquet", threshold=1.5)


@pytest.mark.real_data
def test_imagereward_test_prompts_against_mjbench_alignment(real_data: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    ratings = ingest_ratings(real_data / "imagereward" / "test.json", image_check="none", root=art)
    benchmark = ingest_benchmark(real_data / "mjbench", subsets=["alignment"], root=art)
    result = dedup(ratings.path, benchmark.path, root=art)
    removed = result.read("removed")

    test_items = json.loads((real_data / "imagereward" / "test.json").read_text())
    overlap_captions = {
        item["caption"]
        for path in glob.glob(str(real_data / "mjbench/alignment/benchmark/*/imagereward_*_test.json"))
        for item in json.loads(Path(path).read_text())
    }
    exact_ids = {item["id"] for item in test_items if item["prompt"] in overlap_captions}
    assert len(overlap_captions) == 129 and len(exact_ids) >= 129
    assert exact_ids <= set(removed["prompt_id"])
    assert (removed.filter(pl.col("prompt_id").is_in(list(exact_ids)))["distance"] == 0).all()
    assert result.stats["exact_duplicates"] >= 129
    assert result.rows_in == result.rows_kept + result.rows_rejected
    kept = result.read()
    assert not set(kept["prompt_id"]) & set(removed["prompt_id"])
