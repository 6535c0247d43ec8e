"""Case 15: a run's stage table names the benchmark and scorer of each evaluation stage, and a folder
output (a trained model) is not listed among the Parquet tables."""

from __future__ import annotations

import json

import pytest
from prefect import flow
from prefect.artifacts import Artifact

from flows.common import publish_run_artifacts
from tasks.cache import StageResult

pytestmark = [pytest.mark.hostile_case(15), pytest.mark.usefixtures("prefect_harness")]


def result(stage: str, paths: dict[str, str], stats: dict) -> StageResult:
    return StageResult(
        stage=stage,
        key="k" + stage,
        paths=paths,
        manifest_path=f"/art/{stage}/k.json",
        cached=False,
        rows_in=3,
        rows_kept=3,
        rows_rejected=0,
        rows_out=dict.fromkeys(paths, 3),
        seconds=0.1,
        stats=stats,
    )


@flow(name="artifacts-probe")
def probe() -> None:
    stages = {
        "benchmark tifa160": result("eval_benchmark", {"main": "/art/b.parquet"}, {"benchmark": "tifa160"}),
        "scores": result(
            "eval_scores", {"main": "/art/s.parquet"}, {"benchmark": "tifa160", "scorer": "CLIPScore"}
        ),
        "train": result("train", {"main": "/art/train/k1"}, {"global_step": 2}),
    }
    publish_run_artifacts("artifacts-probe", stages, {"model": "/art/train/k1"})


def test_stage_table_and_outputs() -> None:
    probe()
    table = Artifact.get("artifacts-probe-stages").data
    rows = table if isinstance(table, list) else json.loads(table)
    assert [(row["stage"], row["benchmark"], row["scorer"]) for row in rows] == [
        ("eval_benchmark", "tifa160", None),
        ("eval_scores", "tifa160", "CLIPScore"),
        ("train", None, None),
    ]
    markdown = Artifact.get("artifacts-probe-outputs").data
    tables, others = markdown.split("## Every stage's tables")[1].split("## Other outputs (folders)")
    assert "/art/b.parquet" in tables and "/art/s.parquet" in tables and "/art/train/k1`" not in tables
    assert "| train | main | `/art/train/k1` |" in others
