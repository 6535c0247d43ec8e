"""ratings → pairs: perspective scores, all non-tied pairs, ties counted, every image accounted for."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
import pytest

from tasks.ingest import ingest_ratings
from tasks.pairs import pairs as pairs_stage
from tasks.pairs import preference_pairs
from tasks.ratings import ratings as ratings_stage
from tasks.ratings import score_perspective


def ratings_frame(rows: list[tuple[str, str, float | None, int | None]]) -> pl.DataFrame:
    """rows of (prompt_id, image_id, alignment rating, rank)."""
    return pl.DataFrame(
        {
            "image_id": [row[1] for row in rows],
            "prompt_id": [row[0] for row in rows],
            "prompt": [f"prompt {row[0]}" for row in rows],
            "image_uri": [f"/img/{row[1]}.webp" for row in rows],
            "image_text_alignment_rating": [row[2] for row in rows],
            "rank": [row[3] for row in rows],
            "source_file": ["ratings.parquet"] * len(rows),
            "source_row": list(range(len(rows))),
        },
        schema_overrides={"image_text_alignment_rating": pl.Float32, "rank": pl.Int32},
    )


def test_ranking_score_prefers_the_lower_rank() -> None:
    scored, rejects = score_perspective(ratings_frame([("p", "a", 5.0, 2), ("p", "b", 3.0, 1)]), "ranking")
    assert dict(zip(scored["image_id"], scored["score"], strict=True)) == {"a": -2.0, "b": -1.0}
    assert rejects.is_empty()


def test_missing_rating_is_rejected_with_the_column_named() -> None:
    frame = ratings_frame([("p", "a", 5.0, 1), ("p", "b", None, 2), ("p", "c", float("nan"), 3)])
    scored, rejects = score_perspective(frame, "alignment")
    assert scored["image_id"].to_list() == ["a"]
    assert rejects["record_id"].to_list() == ["b", "c"]
    assert set(rejects["field"]) == {"image_text_alignment_rating"}
    assert rejects["source_row"].to_list() == [1, 2]


def test_unknown_perspective_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown perspective 'beauty'"):
        score_perspective(ratings_frame([("p", "a", 5.0, 1)]), "beauty")  # type: ignore[arg-type]


def test_pairs_exclude_ties_and_choose_the_higher_score() -> None:
    frame = ratings_frame(
        [
            ("p", "a", 7.0, 1),
            ("p", "b", 5.0, 2),
            ("p", "c", 5.0, 2),
            ("q", "d", 4.0, 1),
            ("r", "e", 3.0, 1),
            ("r", "f", 3.0, 1),
        ]
    )
    scored, _ = score_perspective(frame, "alignment")
    pairs, rejects, counts = preference_pairs(scored)
    assert counts == {"combinations": 4, "ties": 2, "pairs": 2}
    assert sorted(zip(pairs["chosen_image_id"], pairs["rejected_image_id"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
    ]
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()
    assert (pairs["chosen_prompt"] == pairs["rejected_prompt"]).all()
    reasons = dict(zip(rejects["record_id"], rejects["reason"], strict=True))
    assert reasons == {
        "d": "the only image of its prompt: nothing to compare with",
        "e": "tied with every other image of its prompt",
        "f": "tied with every other image of its prompt",
    }


def test_pairs_stage_accounts_for_every_image(tmp_path: Path) -> None:
    frame = ratings_frame([("p", "a", 7.0, 1), ("p", "b", 5.0, 2), ("q", "d", 4.0, 1)])
    path = tmp_path / "ratings.parquet"
    frame.write_parquet(path)
    scored = ratings_stage(path, perspective="alignment", root=tmp_path / "art")
    result = pairs_stage(scored.path, root=tmp_path / "art")
    assert result.rows_in == 3 == result.rows_kept + result.rows_rejected
    assert result.stats == {"combinations": 1, "ties": 0, "pairs": 1}


@pytest.mark.real_data
def test_imagereward_test_json_yields_the_published_pair_counts(real_data: Path, tmp_path: Path) -> None:
    test_json = real_data / "imagereward" / "test.json"
    items = json.loads(test_json.read_text())
    combinations = ties = 0
    for item in items:  # an independent count, straight from the JSON
        for left, right in itertools.combinations(item["ranking"], 2):
            combinations += 1
            ties += left == right
    assert (combinations, ties) == (7230, 831)

    art = tmp_path / "art"
    ingested = ingest_ratings(test_json, image_check="none", root=art)  # the images are not public here
    assert ingested.rows_rejected == 0
    scored = ratings_stage(ingested.path, perspective="ranking", root=art)
    result = pairs_stage(scored.path, root=art)
    assert result.stats == {"combinations": 7230, "ties": 831, "pairs": 6399}
    pairs = result.read()
    assert pairs.height == 6399 and pairs["pair_id"].n_unique() == 6399
    rank_of = {
        (item["id"], Path(generation).stem): rank
        for item in items
        for generation, rank in zip(item["generations"], item["ranking"], strict=True)
    }
    for row in pairs.head(200).iter_rows(named=True):
        assert (
            rank_of[(row["prompt_id"], row["chosen_image_id"])]
            < rank_of[(row["prompt_id"], row["rejected_image_id"])]
        )
