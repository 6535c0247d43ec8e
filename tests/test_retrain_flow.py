"""The retrain-reward-model flow as real flow runs on the demo corpus: first promotion, an unchanged
scheduled rerun, a worse challenger, failures that leave the champion alone, two concurrent runs, and
the held-out evaluation stage."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from prefect.artifacts import Artifact
from safetensors.torch import load_file, save_file

import flows.retrain_reward_model as retrain_module
import tasks.train
from flows.retrain_reward_model import retrain_reward_model
from reward.checkpoint import read_reward_config
from reward.config import HeadConfig, LoraSettings
from reward.evaluation import EvaluationError
from reward.metrics import pairwise_accuracy, safety_binary_metrics
from reward.registry import ModelRegistry, utc_now
from tasks.evaluate import reward_model_specs
from tasks.promote import (
    PRIMARY_METRICS,
    PrimaryMetric,
    heldout_metrics,
    metric_value,
    primary_metric,
    stage_output,
)
from tasks.train import tiny_backbone
from tests.reward_support import assembled_tables, one_torch_thread, save, trained_model  # noqa: F401

PERSPECTIVE = "fidelity"


def artifact_rows(key: str) -> list[dict]:
    data = Artifact.get(key).data
    return data if isinstance(data, list) else json.loads(data)


def benchmark_scores(art: Path, scorer: str) -> pl.DataFrame:
    """The per-item scores the score stage wrote for ``scorer`` (read back from its Parquet files)."""
    tables = [
        pl.read_parquet(path) for path in (art / "eval_scores").glob("*.parquet") if "." not in path.stem
    ]
    matches = [table for table in tables if table["scorer"][0] == scorer]
    assert len(matches) == 1, f"{len(matches)} score tables of {scorer}"
    return matches[0]


def accuracy_with_tie(art: Path, scorer: str) -> float:
    scores = benchmark_scores(art, scorer)
    return pairwise_accuracy(scores["score0"], scores["score1"], scores["label"]).accuracy_with_tie


@pytest.fixture(scope="module")
def service(prefect_harness, demo_corpus: Path, tmp_path_factory) -> dict[str, Any]:
    """A registry that has seen two scheduled runs of fidelity: the first and an unchanged rerun."""
    art = tmp_path_factory.mktemp("retrain") / "art"
    options = {
        "perspective": PERSPECTIVE,
        "data_parameters": {
            "imagereward_path": str(demo_corpus / "imagerewarddb"),
            "benchmark_path": str(demo_corpus / "mjbench"),
        },
        "max_steps": 2,
        "batch_size": 4,
        "lora_rank": 2,
        "tolerance": 0.01,
        "artifacts_dir": str(art),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope runs before the autouse one-thread fixture
    try:
        first = retrain_reward_model(**options)
        first_decision = Artifact.get(f"retrain-reward-model-{PERSPECTIVE}-decision").data
        pointer_after_first = ModelRegistry.under(art).champion_path(PERSPECTIVE).read_bytes()
        second = retrain_reward_model(**options)
    finally:
        torch.set_num_threads(threads)
    return {
        "art": art,
        "options": options,
        "registry": ModelRegistry.under(art),
        "first": first,
        "first_decision": first_decision,
        "pointer_after_first": pointer_after_first,
        "second": second,
    }


def test_the_first_run_promotes_its_model(service) -> None:
    first, art, registry = service["first"], service["art"], service["registry"]
    key = first["challenger"]["model_key"]
    assert (first["decision"], first["data_unchanged"], first["train_cached"]) == ("promoted", False, False)
    assert first["reason"].startswith("no champion yet")
    champion = registry.champion(PERSPECTIVE)
    assert champion.model_key == key and Path(champion.folder) == registry.model_folder(PERSPECTIVE, key)
    assert Path(first["challenger"]["folder"]) == registry.model_folder(PERSPECTIVE, key)
    assert (art / "train" / key / "reward_config.json").is_file()  # the train stage's own folder
    value = accuracy_with_tie(art, f"{PERSPECTIVE}-{key}")
    assert first["challenger"]["value"] == pytest.approx(value) and champion.value == pytest.approx(value)

    ledger = pl.read_parquet(first["ledger"])
    row = ledger.row(0, named=True)
    assert (row["run_id"], row["decision"], row["model_key"], row["champion_key"], row["champion_after"]) == (
        first["run_id"],
        "promoted",
        key,
        None,
        key,
    )
    assert row["benchmark"] == "mjbench-quality" and row["metric"] == "accuracy_with_tie"
    assert json.loads(row["metrics"])["accuracy_with_tie"] == pytest.approx(value)
    assert row["requested_at"] <= row["started_at"] <= row["finished_at"]
    decision = service["first_decision"]
    assert "# fidelity: promoted" in decision and f"{value:.4f}" in decision and "tolerance: 0.01" in decision
    assert "data changed" in decision and "training: trained" in decision


def test_an_unchanged_scheduled_run_rebuilds_nothing_and_keeps_the_champion(service) -> None:
    first, second, registry = service["first"], service["second"], service["registry"]
    key = first["challenger"]["model_key"]
    assert (second["decision"], second["data_unchanged"], second["every_stage_cached"]) == (
        "kept",
        True,
        True,
    )
    assert second["train_cached"] and second["challenger"]["model_key"] == key
    assert second["reason"] == f"no change: the challenger is the champion (model {key})"
    assert (
        second["data_key"] == first["data_key"]
        and second["challenger"]["value"] == first["challenger"]["value"]
    )
    assert registry.champion_path(PERSPECTIVE).read_bytes() == service["pointer_after_first"]

    row = registry.ledger().filter(pl.col("run_id") == second["run_id"]).row(0, named=True)
    assert (row["decision"], row["champion_key"], row["champion_after"], row["data_unchanged"]) == (
        "kept",
        key,
        key,
        True,
    )
    assert row["champion_value"] == row["challenger_value"] == first["challenger"]["value"]
    decision = Artifact.get(f"retrain-reward-model-{PERSPECTIVE}-decision").data
    assert f"data unchanged: key {first['data_key']}, every stage cached" in decision
    assert "the same job on the same data is reused, not retrained" in decision
    # the build subflow and the retraining stages both say so in their own stage tables
    assert {row["status"] for row in artifact_rows("build-fidelity-data-stages")} == {"cached"}
    assert {row["status"] for row in artifact_rows(f"retrain-reward-model-{PERSPECTIVE}-stages")} == {
        "cached"
    }


def zero_head_training(folder_root: Path):
    """The real train stage, then a copy of its model whose head is all zeros: a complete, loadable
    model that scores every image 0, so every MJ-Bench pair is a model tie (wrong "with ties")."""

    def train(job, **kwargs):
        result = tasks.train.train_task(job, **kwargs)
        folder = folder_root / f"zero-head-{result.key}"
        if not folder.exists():
            shutil.copytree(result.path, folder)
            head = load_file(folder / "head.safetensors")
            save_file({name: torch.zeros_like(t) for name, t in head.items()}, folder / "head.safetensors")
        return dataclasses.replace(
            result, key=f"{result.key}-zero-head", paths={**result.paths, "main": str(folder)}
        )

    return train


def test_the_registry_folder_stands_for_the_champion_and_the_report_shows_the_decision(service) -> None:
    from flows import report as run_report
    from flows.evaluate_reward_model import resolve_models

    registry = service["registry"]
    champion, served = registry.champion(PERSPECTIVE), str(registry.perspective_dir(PERSPECTIVE))
    demo = {
        "demo_perspectives": [],
        "demo_max_steps": 1,
        "demo_prompts": None,
        "seed": 0,
        "artifacts_dir": None,
    }
    assert resolve_models({"serving": served}, **demo) == {"serving": champion.folder}
    assert resolve_models([served], **demo) == {PERSPECTIVE: champion.folder}
    latest = run_report.report("retrain-reward-model")  # the unchanged rerun, the latest so far
    assert latest.completed and f"retrain-reward-model-{PERSPECTIVE}-decision" in latest.text
    assert f"# {PERSPECTIVE}: " in latest.text and champion.model_key in latest.text


def test_a_worse_challenger_is_not_promoted(service, monkeypatch, tmp_path: Path) -> None:
    registry, art = service["registry"], service["art"]
    before = registry.champion(PERSPECTIVE)
    pointer = registry.champion_path(PERSPECTIVE).read_bytes()
    monkeypatch.setattr(retrain_module, "train_task", zero_head_training(tmp_path))
    outcome = retrain_reward_model(**service["options"])

    challenger, champion = outcome["challenger"]["value"], outcome["champion_before"]["value"]
    scores = benchmark_scores(art, f"{PERSPECTIVE}-{outcome['challenger']['model_key']}")
    assert (scores["score0"] == 0).all() and (scores["score1"] == 0).all() and challenger == 0.0
    assert champion == pytest.approx(accuracy_with_tie(art, f"{PERSPECTIVE}-{before.model_key}"))
    assert champion > service["options"]["tolerance"]  # so 0 is worse beyond the tolerance
    assert outcome["decision"] == "rejected" and f"worse by {champion:.4f}" in outcome["reason"]
    assert registry.champion_path(PERSPECTIVE).read_bytes() == pointer
    row = registry.ledger().row(-1, named=True)
    assert (row["decision"], row["champion_key"], row["champion_after"]) == (
        "rejected",
        before.model_key,
        before.model_key,
    )
    decision = Artifact.get(f"retrain-reward-model-{PERSPECTIVE}-decision").data
    assert "# fidelity: rejected" in decision and f"= {champion - 0.01:.4f}" in decision


def test_a_challenger_within_the_tolerance_is_promoted(service) -> None:
    registry = service["registry"]
    before = registry.champion(PERSPECTIVE)
    outcome = retrain_reward_model(**{**service["options"], "max_steps": 3, "tolerance": 1.0})
    key = outcome["challenger"]["model_key"]
    assert key != before.model_key
    assert outcome["decision"] == "promoted" and "not worse beyond the tolerance" in outcome["reason"]
    assert outcome["data_unchanged"] and not outcome["every_stage_cached"]  # same data, new training
    assert registry.champion(PERSPECTIVE).model_key == key == registry.ledger()["champion_after"][-1]
    assert outcome["champion_before"] == {
        "model_key": before.model_key,
        "value": pytest.approx(accuracy_with_tie(service["art"], f"{PERSPECTIVE}-{before.model_key}")),
    }


def truncated_training(folder_root: Path):
    """A train stage that hands over a half-written model folder (its head cut in two)."""

    def train(job, **kwargs):
        result = tasks.train.train_task(job, **kwargs)
        folder = folder_root / "half-written"
        shutil.copytree(result.path, folder)
        head = folder / "head.safetensors"
        head.write_bytes(head.read_bytes()[:100])
        return dataclasses.replace(result, key="halfwritten", paths={**result.paths, "main": str(folder)})

    return train


def failing(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    ("step", "inject", "message"),
    [
        ("building the data", "missing-dataset", "missing-imagerewarddb"),
        ("training", "train", r"RuntimeError: CUDA out of memory \(injected\)"),
        ("registering the challenger", "truncated", r"head\.safetensors: not a readable safetensors file"),
        ("evaluating the challenger", "scores", r"EvaluationError: scorer crashed \(injected\)"),
    ],
)
def test_a_failed_step_leaves_the_champion_and_fails_the_run(
    service, monkeypatch, tmp_path: Path, step: str, inject: str, message: str
) -> None:
    registry, options = service["registry"], dict(service["options"])
    pointer, ledger = registry.champion_path(PERSPECTIVE).read_bytes(), registry.ledger()
    champion = registry.champion(PERSPECTIVE).model_key
    if inject == "missing-dataset":
        options["data_parameters"] = {
            **options["data_parameters"],
            "imagereward_path": str(tmp_path / "missing-imagerewarddb"),
        }
    elif inject == "train":
        monkeypatch.setattr(
            retrain_module, "train_task", failing(RuntimeError("CUDA out of memory (injected)"))
        )
    elif inject == "truncated":
        monkeypatch.setattr(retrain_module, "train_task", truncated_training(tmp_path))
    else:
        monkeypatch.setattr(
            retrain_module, "score_benchmark_task", failing(EvaluationError("scorer crashed (injected)"))
        )

    state = retrain_reward_model(**options, return_state=True)
    assert state.is_failed()
    assert f"{step} failed" in state.message and f"the champion is unchanged ({champion})" in state.message
    assert re.search(message, state.message), state.message
    assert registry.champion_path(PERSPECTIVE).read_bytes() == pointer
    after = registry.ledger()
    assert after.head(ledger.height).equals(ledger) and after.height == ledger.height + 1
    row = after.row(-1, named=True)
    assert (row["decision"], row["champion_key"], row["champion_after"]) == ("failed", champion, champion)
    assert row["reason"] in state.message and row["finished_at"] >= row["started_at"]
    assert not registry.model_folder(PERSPECTIVE, "halfwritten").exists()
    assert "# fidelity: failed" in Artifact.get(f"retrain-reward-model-{PERSPECTIVE}-decision").data


class Terminated(BaseException):
    """What a worker's termination looks like inside the flow: not an ``Exception``."""


@pytest.mark.hostile_case(11)
def test_a_crashed_run_leaves_a_ledger_row(service, monkeypatch) -> None:
    """Issue #11 case 11: a run that crashes mid-training (not an ordinary exception) is in the ledger."""
    registry = service["registry"]
    ledger, pointer = registry.ledger(), registry.champion_path(PERSPECTIVE).read_bytes()
    champion = registry.champion(PERSPECTIVE).model_key
    monkeypatch.setattr(retrain_module, "train_task", failing(Terminated("worker terminated (injected)")))
    with pytest.raises(Terminated):
        retrain_reward_model(**service["options"])
    after = registry.ledger()
    assert after.height == ledger.height + 1 and after.head(ledger.height).equals(ledger)
    row = after.row(-1, named=True)
    assert row["decision"] == "failed" and row["finished_at"] is not None
    assert row["reason"] == (
        f"training crashed: Terminated: worker terminated (injected); the champion is unchanged ({champion})"
    )
    assert registry.champion_path(PERSPECTIVE).read_bytes() == pointer


def start_run_to_kill(service, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A real retraining process on this registry (tests.retrain_kill_driver), paused in its training
    step: returns it once it is there, inside the locked section."""
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "options.json").write_text(json.dumps(service["options"]))
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    command = [sys.executable, "-m", "tests.retrain_kill_driver", str(tmp_path / "options.json"), str(ready)]
    child = subprocess.Popen(command, env={**env, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    while not ready.exists():
        if child.poll() is not None:
            raise AssertionError(
                f"the retraining process ended ({child.returncode}): {child.stderr.read()[-3000:]}"
            )
        assert time.monotonic() < deadline, "the retraining process never reached its training step"
        time.sleep(0.2)
    return child, ready


@pytest.mark.hostile_case(11)
def test_a_run_killed_with_sigkill_is_recorded_by_the_next_one(service, tmp_path: Path) -> None:
    """Issue #11 case 11, kill -9: the killed process writes nothing itself; the next run records it as
    crashed (reason, run id, start time) before its own row, exactly once."""
    registry = service["registry"]
    ledger, champion = registry.ledger(), registry.champion(PERSPECTIVE).model_key
    started = utc_now()
    child, _ = start_run_to_kill(service, tmp_path)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    killed = utc_now()
    assert registry.ledger().equals(ledger)  # the killed run recorded nothing itself

    outcome = retrain_reward_model(**service["options"])
    after = registry.ledger()
    assert after.height == ledger.height + 2 and after.head(ledger.height).equals(ledger)
    crashed, next_run = after.row(-2, named=True), after.row(-1, named=True)
    assert crashed["decision"] == "crashed" and crashed["run_id"] not in [
        outcome["run_id"],
        *ledger["run_id"],
    ]
    assert started < crashed["started_at"] < killed and crashed["finished_at"] is None
    assert crashed["reason"] == (
        f"process ended without recording an outcome (killed?): run {crashed['run_id']} started "
        f"{crashed['started_at'].isoformat(timespec='seconds')} (pid {child.pid} on {socket.gethostname()}); "
        f"the champion is {champion}"
    )
    assert crashed["champion_key"] == crashed["champion_after"] == champion
    assert (next_run["run_id"], next_run["decision"]) == (outcome["run_id"], outcome["decision"])
    assert next_run["champion_key"] == champion  # the killed run changed nothing
    assert not (registry.perspective_dir(PERSPECTIVE) / "running.json").exists()
    assert registry.reconcile(PERSPECTIVE) == [] and registry.ledger().equals(after)  # nothing twice


def test_two_concurrent_runs_are_serialized(service, monkeypatch) -> None:
    """Two runs started together: whichever gets the lock first waits (in its train step) until the
    other has asked for the lock, so they truly overlap in time; the ledger must show them one after
    the other, the second seeing the first one's champion."""
    registry = service["registry"]
    ledger_before = registry.ledger().height
    arrived = threading.Condition()
    asked: list[str] = []
    real_lock, real_train = ModelRegistry.retrain_lock, retrain_module.train_task

    def recorded_lock(self, perspective, **kwargs):
        with arrived:
            asked.append(threading.current_thread().name)
            arrived.notify_all()
        return real_lock(self, perspective, **kwargs)

    def train_once_both_asked(job, **kwargs):
        with arrived:
            assert arrived.wait_for(lambda: len(asked) == 2, timeout=60), (
                "the other run never asked for the lock"
            )
        return real_train(job, **kwargs)

    monkeypatch.setattr(ModelRegistry, "retrain_lock", recorded_lock)
    monkeypatch.setattr(retrain_module, "train_task", train_once_both_asked)
    settings = [{"max_steps": 2}, {"max_steps": 3}]
    outcomes: list[Any] = [None, None]

    def run(index: int) -> None:
        try:
            outcomes[index] = retrain_reward_model(
                **{**service["options"], **settings[index], "tolerance": 1.0}
            )
        except Exception as error:  # reported below
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,), name=f"run-{index}") for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(outcome, dict) for outcome in outcomes), outcomes
    rows = registry.ledger().slice(ledger_before).sort("started_at").to_dicts()
    assert sorted(row["run_id"] for row in rows) == sorted(outcome["run_id"] for outcome in outcomes)
    first, second = rows
    assert second["requested_at"] < first["finished_at"]  # the second was asked for while the first ran...
    assert second["started_at"] >= first["finished_at"]  # ...and started only after it had finished
    assert second["champion_key"] == first["champion_after"]  # it saw the first one's outcome
    assert registry.champion(PERSPECTIVE).model_key == second["champion_after"]
    for row in rows:
        expected = "kept" if row["model_key"] == row["champion_key"] else "promoted"
        assert row["decision"] == expected and row["champion_after"] == row["model_key"]


def test_a_run_waiting_too_long_for_the_lock_fails_without_a_trace(service) -> None:
    registry = service["registry"]
    ledger, pointer = registry.ledger(), registry.champion_path(PERSPECTIVE).read_bytes()
    with registry.retrain_lock(PERSPECTIVE):
        state = retrain_reward_model(**service["options"], lock_timeout_minutes=0.005, return_state=True)
    assert state.is_failed() and "another retraining run of 'fidelity' still holds the lock" in state.message
    assert registry.ledger().equals(ledger) and registry.champion_path(PERSPECTIVE).read_bytes() == pointer


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"perspective": "beauty"}, "unknown perspective 'beauty'"),
        (
            {"data_parameters": {"imagereward_pth": "x"}},
            r"data_parameters \['imagereward_pth'\] are not parameters",
        ),
        (
            {"data_parameters": {"artifacts_dir": "x"}},
            r"data_parameters \['artifacts_dir'\] are not parameters",
        ),
        ({"benchmark": "tifa160"}, "benchmark='tifa160' needs a metric"),
        ({"benchmark": "pickapic", "metric": "acc"}, "unknown benchmark 'pickapic'"),
        ({"tolerance": -0.5}, "tolerance must be >= 0"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(parameters, message, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        retrain_reward_model(**{"perspective": "fidelity", **parameters}, artifacts_dir=str(tmp_path))
    assert not (tmp_path / "registry" / "ledger.parquet").exists()


def test_ranking_is_judged_on_its_held_out_pairs(service) -> None:
    assert primary_metric("ranking") == PRIMARY_METRICS["ranking"]
    assert (PRIMARY_METRICS["ranking"].benchmark, PRIMARY_METRICS["ranking"].metric) == (
        "heldout",
        "accuracy_with_tie",
    )
    outcome = retrain_reward_model(**{**service["options"], "perspective": "ranking"})
    assert outcome["decision"] == "promoted" and outcome["metric"] == "heldout: accuracy_with_tie"
    art = service["art"]
    scorer = f"ranking-{outcome['challenger']['model_key']}"
    tables = [pl.read_parquet(p) for p in (art / "eval_heldout").glob("*.parquet") if "." not in p.stem]
    (scores,) = [table for table in tables if table["scorer"][0] == scorer]
    chosen_wins = float((scores["chosen_score"] > scores["rejected_score"]).mean())
    assert outcome["challenger"]["value"] == pytest.approx(chosen_wins)
    validation_path = Path(read_reward_config(outcome["challenger"]["folder"]).training_data["eval"])
    assert stage_output(validation_path).stage == "assemble_pairs"  # the validation split of the built data
    assert sorted(scores["pair_id"]) == sorted(
        pl.read_parquet(validation_path)["pair_id"]
    )  # every pair scored
    assert ModelRegistry.under(art).champion("ranking").model_key == outcome["challenger"]["model_key"]


def test_safety_is_judged_on_unsafebench_test_f1(service, demo_corpus: Path) -> None:
    options = {**service["options"], "perspective": "safety"}
    options["data_parameters"] = {"unsafebench_path": str(demo_corpus / "unsafebench")}
    outcome = retrain_reward_model(**options)
    assert outcome["decision"] == "promoted" and outcome["metric"] == "unsafebench-test: f1"
    scores = benchmark_scores(service["art"], f"safety-{outcome['challenger']['model_key']}")
    assert scores["image_uri"].str.starts_with(str(demo_corpus / "unsafebench")).all()  # the given dataset
    reference = safety_binary_metrics(scores["score"], scores["label"], positive_class="unsafe")
    assert outcome["challenger"]["value"] == pytest.approx(reference.f1)


# --------------------------------------------------------------------------------------------
# The held-out stage on its own


@pytest.fixture(scope="module")
def tiny_models(demo_corpus: Path, tmp_path_factory) -> dict[str, Any]:
    art = tmp_path_factory.mktemp("heldout")
    backbone = tiny_backbone(root=art)
    lora = LoraSettings(rank=2, dropout=0.0)
    pairs = trained_model(backbone, perspective="fidelity", head=HeadConfig(), lora=lora, seed=3)
    rows = trained_model(backbone, perspective="safety", head=HeadConfig(kind="linear"), lora=None, seed=4)
    return {
        "art": art,
        "tables": assembled_tables(demo_corpus, art),
        "pairs": save(pairs, art / "pairs-model", backbone),
        "rows": save(rows, art / "rows-model", backbone),
    }


def test_heldout_stage_scores_pairs_and_rows(tiny_models) -> None:
    art, tables = tiny_models["art"], tiny_models["tables"]
    (pair_spec,), _ = reward_model_specs({"fidelity": tiny_models["pairs"]}, device="cpu")
    result = heldout_metrics(tables["pairs_validation"], scorer=pair_spec, root=art)
    scores, metrics = result.read(), result.read("metrics")
    validation = pl.read_parquet(tables["pairs_validation"])
    assert scores.height == validation.height == result.rows_in and result.rows_rejected == 0
    expected = float((scores["chosen_score"] > scores["rejected_score"]).mean())
    assert (
        metrics["accuracy_with_tie"][0] == pytest.approx(expected)
        and metrics["n_pairs"][0] == validation.height
    )
    assert heldout_metrics(tables["pairs_validation"], scorer=pair_spec, root=art).cached

    (row_spec,), _ = reward_model_specs({"safety": tiny_models["rows"]}, device="cpu")
    rows = heldout_metrics(tables["rows_validation"], scorer=row_spec, root=art)
    scored = rows.read()
    reference = safety_binary_metrics(scored["score"], scored["label"], positive_class="unsafe")
    assert rows.read("metrics")["f1"][0] == pytest.approx(reference.f1)
    assert rows.read("metrics")["positive_class"][0] == "unsafe"


def test_heldout_stage_rejects_unreadable_images(tiny_models, tmp_path: Path) -> None:
    validation = pl.read_parquet(tiny_models["tables"]["pairs_validation"]).head(3)
    broken = validation.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(str(tmp_path / "gone.png")))
        .otherwise(pl.col("rejected_image_uri"))
        .alias("rejected_image_uri")
    )
    broken.write_parquet(tmp_path / "validation.parquet")
    (spec,), _ = reward_model_specs({"fidelity": tiny_models["pairs"]}, device="cpu")
    result = heldout_metrics(tmp_path / "validation.parquet", scorer=spec, root=tmp_path)
    assert (result.rows_in, result.rows_kept, result.rows_rejected) == (3, 2, 1)
    reject = result.read("rejects").row(0, named=True)
    assert (reject["source_row"], reject["record_id"], reject["field"]) == (
        1,
        broken["pair_id"][1],
        "rejected_image_uri",
    )
    assert (
        "gone.png" in reject["reason"]
        and result.read()["pair_id"].to_list() == broken["pair_id"].drop_nulls().gather([0, 2]).to_list()
    )


def test_primary_metrics_and_their_overrides() -> None:
    assert {name: (m.benchmark, m.metric) for name, m in PRIMARY_METRICS.items()} == {
        "alignment": ("mjbench-alignment", "accuracy_with_tie"),
        "fidelity": ("mjbench-quality", "accuracy_with_tie"),
        "ranking": ("heldout", "accuracy_with_tie"),
        "safety": ("unsafebench-test", "f1"),
    }
    assert primary_metric("alignment", "heldout") == PrimaryMetric("heldout", "accuracy_with_tie")
    assert primary_metric("safety", "heldout") == PrimaryMetric("heldout", "f1")
    assert primary_metric("fidelity", metric="accuracy_without_tie") == PrimaryMetric(
        "mjbench-quality", "accuracy_without_tie"
    )
    assert primary_metric("alignment", "tifa160", "kendall_tau_b").label == "tifa160: kendall_tau_b"
    with pytest.raises(ValueError, match="benchmark='tifa160' needs a metric"):
        primary_metric("alignment", "tifa160")
    with pytest.raises(EvaluationError, match="unknown benchmark 'pickapic'"):
        primary_metric("alignment", "pickapic", "accuracy")


def test_metric_value_reads_the_overall_row() -> None:
    metrics = pl.DataFrame(
        {"level": ["category", "overall"], "accuracy_with_tie": [0.25, 0.75], "n_pairs": [4, 8]}
    )
    assert metric_value(metrics, "accuracy_with_tie") == 0.75
    undefined = pl.DataFrame({"f1": [None]}, schema={"f1": pl.Float64})
    assert math.isnan(metric_value(undefined, "f1"))
    with pytest.raises(
        EvaluationError,
        match=r"no metric 'f1' in the metrics table; it has \['accuracy_with_tie', 'n_pairs'\]",
    ):
        metric_value(metrics, "f1")
