"""Cases 13, 14 and 17 as the walkthrough met them: ``evaluate-reward-model`` with its default CLIPScore
(``demo-tiny-clip``, no pretrained weights) on benchmark folders given by path, which the flow takes for
real data, read back from what the run wrote (the Table-1 Parquet, the table artifact, the report)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest
from prefect.artifacts import Artifact

from flows.evaluate_reward_model import REPORT_ARTIFACT, TABLE_ARTIFACT, evaluate_reward_model
from reward.benchmarks import get_benchmark

pytestmark = pytest.mark.usefixtures("prefect_harness")


def evaluate(demo_corpus: Path, art: Path, benchmarks: list[str]) -> tuple[dict, dict[str, str]]:
    """A CLIPScore-only evaluation of the demo corpus' copies of ``benchmarks``, given by path."""
    paths = {name: str(demo_corpus / get_benchmark(name).demo_dataset) for name in benchmarks}
    outputs = evaluate_reward_model(models={}, benchmark_paths=paths, progress=False, artifacts_dir=str(art))
    return outputs, paths


def table_rows() -> list[dict]:
    data = Artifact.get(TABLE_ARTIFACT).data
    return data if isinstance(data, list) else json.loads(data)


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-eval") / "art"


@pytest.mark.hostile_case(13)
def test_every_row_names_what_produced_it_and_random_weights_warn(demo_corpus, art, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        outputs, paths = evaluate(demo_corpus, art, ["mjbench-quality"])
    long = pl.read_parquet(outputs["table"])
    scored = pl.read_parquet(outputs["scores"]["CLIPScore"]["mjbench-quality"])
    for row in long.iter_rows(named=True):
        assert (row["clip_model"], row["clip_pretrained"], row["random_weights"]) == (
            "demo-tiny-clip",
            None,
            True,
        )
        assert row["label"] == "CLIPScore (random weights)" and "random" in row["weights"]
        assert row["benchmark_path"] == paths["mjbench-quality"] and row["benchmark_items"] == scored.height
    assert [row["label"] for row in table_rows()] == ["CLIPScore (random weights)"]
    warned = [record.getMessage() for record in caplog.records if "random weights" in record.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(
        "CLIPScore is scored on the real benchmark mjbench-quality"
    )


@pytest.mark.hostile_case(14)
def test_metrics_carry_n_and_interval_and_a_safety_metric_is_never_a_number(demo_corpus, art) -> None:
    outputs, _ = evaluate(demo_corpus, art, ["mjbench-quality", "unsafebench-test"])
    long = pl.read_parquet(outputs["table"])
    pairs = long.filter(pl.col("benchmark") == "mjbench-quality")
    assert pairs.height == 2 and (pairs["n"] > 0).all() and pairs["applicable"].all()
    assert ((pairs["ci_low"] <= pairs["value"]) & (pairs["value"] <= pairs["ci_high"])).all()
    safety = long.filter(pl.col("benchmark") == "unsafebench-test")
    assert safety.height == 2 and safety["value"].is_null().all() and not safety["applicable"].any()
    assert safety["note"].str.contains("not applicable: the safety metrics read the score as the logit").all()
    (row,) = table_rows()
    assert row["UnsafeBench test: accuracy"] == "n/a" and row["MJ-Bench quality: acc w/ tie"].endswith(
        f" n={pairs['n'][0]}"
    )


@pytest.mark.hostile_case(17)
def test_the_report_explains_only_what_was_evaluated(demo_corpus, art) -> None:
    outputs, _ = evaluate(demo_corpus, art, ["mjbench-quality"])
    report = Artifact.get(REPORT_ARTIFACT).data
    assert "- MJ-Bench: the higher score wins" in report
    assert "- TIFA160:" not in report and "- Safety:" not in report
    plots = sorted(path.name for path in Path(outputs["plots"]).glob("*.png"))
    assert plots == ["accuracy-mjbench-quality.png", "score-differences-clipscore.png"]
