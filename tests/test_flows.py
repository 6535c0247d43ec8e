"""The build-data flows as real Prefect flow runs on a small demo corpus."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from prefect.artifacts import Artifact

from flows.build_alignment_data import build_alignment_data
from flows.build_fidelity_data import build_fidelity_data
from flows.build_ranking_data import build_ranking_data
from flows.build_safety_data import build_safety_data

pytestmark = pytest.mark.usefixtures("prefect_harness")


def stage_table(flow_name: str) -> dict[str, dict]:
    artifact = Artifact.get(f"{flow_name}-stages")
    assert artifact is not None, f"{flow_name} published no stage table"
    rows = artifact.data if isinstance(artifact.data, list) else __import__("json").loads(artifact.data)
    return {row["stage"]: row for row in rows}


def demo_paths(corpus: Path) -> dict[str, str]:
    return {"imagereward_path": str(corpus / "imagerewarddb"), "benchmark_path": str(corpus / "mjbench")}


def test_alignment_flow_builds_cached_and_invalidated_stages(demo_corpus: Path, tmp_path: Path) -> None:
    art = str(tmp_path / "art")
    outputs = build_alignment_data(**demo_paths(demo_corpus), artifacts_dir=art)
    train = pl.read_parquet(outputs["train"])
    validation = pq.read_table(outputs["validation"])
    assert train.height > 0 and validation.num_rows > 0
    assert set(train["kind"]) == {"rating", "negative_text", "negative_image"}
    first = stage_table("build-alignment-data")
    assert list(first) == [
        "ingest_ratings",
        "ingest_benchmark",
        "dedup",
        "ratings",
        "pairs",
        "embed",
        "negatives",
        "assemble_pairs",
    ]
    assert {row["status"] for row in first.values()} == {"computed"}
    assert first["dedup"]["rows_rejected"] > 0, "the demo benchmark copies some training prompts"

    again = build_alignment_data(**demo_paths(demo_corpus), artifacts_dir=art)
    assert again == outputs
    assert {row["status"] for row in stage_table("build-alignment-data").values()} == {"cached"}

    changed = build_alignment_data(**demo_paths(demo_corpus), artifacts_dir=art, dedup_threshold=0.0)
    status = {stage: row["status"] for stage, row in stage_table("build-alignment-data").items()}
    assert status == {
        "ingest_ratings": "cached",
        "ingest_benchmark": "cached",
        "dedup": "computed",
        "ratings": "computed",
        "pairs": "computed",
        "embed": "computed",
        "negatives": "computed",
        "assemble_pairs": "computed",
    }
    assert changed["train"] != outputs["train"] and Path(outputs["train"]).is_file()

    markdown = Artifact.get("build-alignment-data-outputs")
    assert markdown is not None and changed["train"] in markdown.data
    assert_every_table_opens(Path(art))


def assert_every_table_opens(root: Path) -> None:
    """Every stage table opens with polars, pyarrow and duckdb, with the same row count."""
    tables = sorted(root.glob("*/*.parquet"))
    assert len(tables) >= 20
    for path in tables:
        rows = pl.read_parquet(path).height
        assert pq.read_table(path).num_rows == rows
        assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(rows,)]


@pytest.mark.parametrize("flow", [build_fidelity_data, build_ranking_data])
def test_rating_flows_build_pairs(flow, demo_corpus: Path, tmp_path: Path) -> None:
    outputs = flow(**demo_paths(demo_corpus), artifacts_dir=str(tmp_path / "art"))
    pairs = pl.read_parquet(outputs["train"])
    assert pairs.height > 0 and set(pairs["kind"]) == {"rating"}
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()


def test_safety_flow_builds_labelled_rows(demo_corpus: Path, tmp_path: Path) -> None:
    outputs = build_safety_data(
        unsafebench_path=str(demo_corpus / "unsafebench"), artifacts_dir=str(tmp_path / "a")
    )
    rows = pl.concat([pl.read_parquet(outputs["train"]), pl.read_parquet(outputs["validation"])])
    assert set(rows["label"]) == {0, 1}
    assert (rows["split"] == "train").sum() > (rows["split"] == "validation").sum() > 0


def test_demo_default_generates_the_corpus_inside_the_artifact_root(tmp_path: Path) -> None:
    outputs = build_ranking_data(artifacts_dir=str(tmp_path / "art"), demo_prompts=24)
    assert Path(outputs["train"]).is_relative_to(tmp_path / "art")
    assert (tmp_path / "art" / "demo-corpus" / "seed0-24p" / "corpus.json").is_file()
