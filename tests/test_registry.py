"""The model registry on disk (no Prefect): registration of verified copies, the champion pointer,
the promotion rule, the Parquet ledger and the retraining lock."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

import reward.registry
from reward.checkpoint import CheckpointError
from reward.config import HeadConfig, LoraSettings
from reward.registry import (
    LEDGER_SCHEMA,
    LedgerRow,
    ModelRegistry,
    RegistryBusy,
    RegistryError,
    decide,
    file_digests,
    resolve_model_folder,
    utc_now,
    verify_model_folder,
)
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, save, trained_model  # noqa: F401


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two fidelity folders with LoRA (different weights) and one without LoRA (projector file)."""
    root = tmp_path_factory.mktemp("registry-models")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    lora = LoraSettings(rank=2, dropout=0.0)
    folders = {}
    for name, seed, settings in (("a", 0, lora), ("b", 1, lora), ("plain", 2, None)):
        model = trained_model(backbone, perspective="fidelity", head=HeadConfig(), lora=settings, seed=seed)
        folders[name] = save(model, root / name, backbone)
    return folders


def copy_of(folder: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(folder, target)
    return target


def promote(registry: ModelRegistry, key: str, value: float = 0.5):
    return registry.promote(
        "fidelity",
        key,
        run_id=f"run-{key}",
        benchmark="mjbench-quality",
        metric="acc",
        value=value,
        reason="test",
    )


# --------------------------------------------------------------------------------------------
# Registration and verification


def test_register_makes_a_verified_copy_once(models, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    folder = registry.register("fidelity", "k1", models["a"])
    assert folder == (tmp_path / "registry" / "fidelity" / "models" / "k1").resolve()
    assert file_digests(folder) == file_digests(models["a"])
    entry = json.loads((folder.parent / "k1.json").read_text())
    assert entry["files"] == file_digests(models["a"]) and entry["source"] == str(models["a"].resolve())
    assert "reward_config.json" in entry["files"] and "adapter/adapter_model.safetensors" in entry["files"]

    stamp = (folder / "head.safetensors").stat().st_mtime_ns
    assert registry.register("fidelity", "k1", models["a"]) == folder
    assert (folder / "head.safetensors").stat().st_mtime_ns == stamp  # not copied again
    assert sorted(p.name for p in folder.parent.iterdir()) == ["k1", "k1.json", "k1.lock"]
    assert registry.verify("fidelity", "k1").perspective == "fidelity"


def test_a_model_without_lora_needs_its_projector(models, tmp_path: Path) -> None:
    folder = copy_of(models["plain"], tmp_path / "plain")
    assert verify_model_folder(folder).lora is None
    (folder / "projector.safetensors").unlink()
    with pytest.raises(RegistryError, match=r"projector\.safetensors is missing"):
        verify_model_folder(folder)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: truncate(f / "head.safetensors"), r"head\.safetensors: not a readable safetensors file"),
        (
            lambda f: truncate(f / "adapter" / "adapter_model.safetensors"),
            r"adapter_model\.safetensors: not a readable safetensors file",
        ),
        (lambda f: (f / "adapter" / "adapter_config.json").unlink(), r"adapter_config\.json is missing"),
        (lambda f: (f / "reward_config.json").unlink(), r"no reward_config\.json"),
        (lambda f: (f / "reward_config.json").write_text("{"), r"reward_config\.json: not valid JSON"),
    ],
    ids=["truncated-head", "truncated-adapter", "no-adapter-config", "no-config", "bad-config"],
)
def test_an_incomplete_folder_is_never_registered(models, tmp_path: Path, damage, message) -> None:
    folder = copy_of(models["a"], tmp_path / "half")
    damage(folder)
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match=message):
        registry.register("fidelity", "half", folder)
    left = sorted(p.name for p in (tmp_path / "registry" / "fidelity" / "models").iterdir())
    assert left == ["half.lock"]  # no folder, no entry, no temporary copy


def test_a_folder_of_another_perspective_is_refused(models, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"perspective 'fidelity', expected 'safety'"):
        ModelRegistry(tmp_path).register("safety", "k", models["a"])
    with pytest.raises(RegistryError, match="perspective name must start with a letter"):
        ModelRegistry(tmp_path).champion("../etc")


# --------------------------------------------------------------------------------------------
# The champion pointer


def test_promotion_switches_the_pointer(models, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.champion("fidelity") is None
    registry.register("fidelity", "ka", models["a"])
    registry.register("fidelity", "kb", models["b"])
    first = promote(registry, "ka", 0.6)
    assert registry.champion("fidelity") == first and first.folder == str(
        registry.model_folder("fidelity", "ka")
    )
    second = promote(registry, "kb", math.nan)
    assert registry.champion("fidelity") == second and second.value is None  # NaN is stored as null
    on_disk = json.loads(registry.champion_path("fidelity").read_text())
    assert on_disk["model_key"] == "kb" and on_disk["run_id"] == "run-kb"


@pytest.mark.hostile_case(18)
def test_a_registry_perspective_folder_stands_for_its_champion(models, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    perspective_dir = registry.perspective_dir("fidelity")
    with pytest.raises(
        CheckpointError, match="no champion yet; run `prefect deployment run retrain-reward-model/fidelity"
    ):
        resolve_model_folder(perspective_dir)  # no champion yet: says what to run first
    registry.register("fidelity", "ka", models["a"])
    promote(registry, "ka")
    champion = registry.model_folder("fidelity", "ka")
    assert resolve_model_folder(perspective_dir) == champion
    assert resolve_model_folder(registry.champion_path("fidelity")) == champion
    assert resolve_model_folder(str(models["b"])) == models["b"]  # a model folder is itself
    assert resolve_model_folder(tmp_path / "nothing") == tmp_path / "nothing"  # loading names what is missing


def test_a_truncated_registered_model_is_not_promoted(models, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("fidelity", "ka", models["a"])
    registry.register("fidelity", "kb", models["b"])
    promote(registry, "ka")
    pointer = registry.champion_path("fidelity").read_bytes()

    truncate(registry.model_folder("fidelity", "kb") / "head.safetensors")
    with pytest.raises(RegistryError, match=r"head\.safetensors: not a readable safetensors file"):
        promote(registry, "kb")
    assert registry.champion_path("fidelity").read_bytes() == pointer


def test_a_changed_or_unfinished_registered_model_is_not_promoted(models, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    folder = registry.register("fidelity", "kb", models["b"])
    head = load_file(folder / "head.safetensors")
    save_file({name: torch.zeros_like(t) for name, t in head.items()}, folder / "head.safetensors")
    with pytest.raises(
        RegistryError, match=r"differs from the registered copy: .*changed \['head\.safetensors'\]"
    ):
        promote(registry, "kb")

    unfinished = copy_of(models["a"], registry.model_folder("fidelity", "kc"))  # renamed, entry not written
    assert unfinished.is_dir()
    with pytest.raises(RegistryError, match=r"not a registered model \(no entry kc\.json"):
        promote(registry, "kc")
    assert registry.champion("fidelity") is None
    assert registry.register("fidelity", "kc", models["a"]) == unfinished  # registration finishes it


def test_a_crash_while_switching_leaves_the_old_pointer(models, tmp_path: Path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("fidelity", "ka", models["a"])
    registry.register("fidelity", "kb", models["b"])
    promote(registry, "ka")

    def crash(source, target):
        raise OSError("power cut")

    monkeypatch.setattr(reward.registry.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        promote(registry, "kb")
    monkeypatch.undo()
    assert registry.champion("fidelity").model_key == "ka"
    assert not list(registry.perspective_dir("fidelity").glob("*.tmp-*"))


def test_a_broken_pointer_names_its_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.perspective_dir("fidelity").mkdir(parents=True)
    registry.champion_path("fidelity").write_text('{"model_key": "k"}')
    with pytest.raises(RegistryError, match=r"champion\.json: missing field\(s\) \['perspective'"):
        registry.champion("fidelity")


# --------------------------------------------------------------------------------------------
# The promotion rule


@pytest.mark.parametrize(
    ("challenger", "champion_key", "champion", "tolerance", "action", "threshold"),
    [
        (0.40, None, None, 0.01, "promoted", None),  # no champion yet
        (0.70, "old", 0.60, 0.00, "promoted", 0.60),  # better
        (0.595, "old", 0.60, 0.01, "promoted", 0.59),  # worse, within the tolerance
        (0.58, "old", 0.60, 0.01, "rejected", 0.59),  # worse beyond the tolerance
        (0.60, "old", 0.60, 0.00, "promoted", 0.60),  # equal is not worse
        (math.nan, "old", 0.60, 0.01, "rejected", None),  # undefined challenger
        (math.nan, None, None, 0.01, "rejected", None),  # ... even without a champion
        (0.30, "old", math.nan, 0.01, "promoted", None),  # undefined champion
        (0.10, "new", 0.90, 0.01, "kept", None),  # the challenger is the champion
    ],
)
def test_decide(challenger, champion_key, champion, tolerance, action, threshold) -> None:
    decision = decide(
        metric="acc",
        challenger_key="new",
        challenger_value=challenger,
        champion_key=champion_key,
        champion_value=champion,
        tolerance=tolerance,
    )
    assert decision.action == action
    assert decision.threshold == (None if threshold is None else pytest.approx(threshold))
    if action == "rejected" and threshold is not None:
        assert f"worse by {champion - challenger:.4f}" in decision.reason


def test_decide_refuses_a_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -0.1"):
        decide(
            metric="acc",
            challenger_key="a",
            challenger_value=1,
            champion_key=None,
            champion_value=None,
            tolerance=-0.1,
        )


# --------------------------------------------------------------------------------------------
# The ledger and the lock


def row(run_id: str, perspective: str = "fidelity", **fields) -> LedgerRow:
    now = utc_now()
    times = {"requested_at": now, "started_at": now, **fields}
    return LedgerRow(run_id=run_id, perspective=perspective, **times)


def test_ledger_round_trip_and_concurrent_appends(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.ledger().schema == pl.Schema(LEDGER_SCHEMA) and registry.ledger().is_empty()
    first = row("r0", data_key="d0", challenger_value=0.5, decision="promoted", champion_after="k0")
    registry.append(first)
    ledger = registry.ledger()
    assert ledger.row(0, named=True) == {**{name: None for name in LEDGER_SCHEMA}, **vars(first)}

    def writer(perspective: str) -> None:
        for index in range(8):
            registry.append(row(f"{perspective}-{index}", perspective))

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("alignment", "safety", "ranking")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger = registry.ledger()
    assert ledger.height == 1 + 3 * 8 and ledger["run_id"].n_unique() == ledger.height
    for name in ("alignment", "safety", "ranking"):  # each writer's rows are in its own order
        assert ledger.filter(pl.col("perspective") == name)["run_id"].to_list() == [
            f"{name}-{i}" for i in range(8)
        ]
    assert registry.last_run("fidelity", with_data=True)["data_key"] == "d0"
    assert (
        registry.last_run("alignment")["run_id"] == "alignment-7"
        and registry.last_run("safety", with_data=True) is None
    )
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_foreign_ledger_file_is_refused_with_its_path(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    pl.DataFrame({"run_id": ["x"]}).write_parquet(registry.ledger_path)
    with pytest.raises(RegistryError, match=r"ledger\.parquet: columns .* do not match the ledger schema"):
        registry.append(row("r1"))
    registry.ledger_path.write_text("not parquet")
    with pytest.raises(RegistryError, match=r"ledger\.parquet: not a readable Parquet ledger"):
        registry.ledger()


def test_the_retrain_lock_serializes_and_times_out(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    spans: list[tuple[str, float, float]] = []

    def hold(name: str) -> None:
        with registry.retrain_lock("fidelity"):
            start = time.perf_counter()
            time.sleep(0.2)
            spans.append((name, start, time.perf_counter()))

    threads = [threading.Thread(target=hold, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (_, _, end_first), (_, start_second, _) = sorted(spans, key=lambda span: span[1])
    assert start_second >= end_first

    with registry.retrain_lock("fidelity"):
        with pytest.raises(
            RegistryBusy, match=r"retrain\.lock: another retraining run of 'fidelity' still holds"
        ):
            with registry.retrain_lock("fidelity", timeout=0.05):
                pass
        with registry.retrain_lock("safety", timeout=0.05):  # other perspectives are not blocked
            pass


def test_ledger_timestamps_are_utc(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    started = utc_now()
    registry.append(row("r", started_at=started, finished_at=started + timedelta(seconds=1)))
    stored = registry.ledger().row(0, named=True)
    assert stored["started_at"] == started and stored["finished_at"] - stored["started_at"] == timedelta(
        seconds=1
    )
    assert stored["started_at"].utcoffset() == timedelta(0)


#: The reason of a run that ended without recording its outcome, word for word (issue #11 case 11).
CRASHED = "process ended without recording an outcome (killed?)"


@pytest.mark.hostile_case(11)
def test_a_run_that_never_recorded_its_outcome_is_reconciled_once(tmp_path: Path) -> None:
    """A run's marker outlives it only when it was killed: reconcile turns it into one crashed row, never
    while a run holds the lock, and never twice or for a run whose row is already in the ledger."""
    registry = ModelRegistry(tmp_path)
    registry.append(row("done", perspective="fidelity", decision="kept"))
    killed = row("killed", perspective="fidelity", champion_key="k0", benchmark="heldout", tolerance=0.01)
    registry.begin_run(killed)
    with registry.retrain_lock("fidelity"):  # a live run: its marker is no leftover
        assert registry.reconcile("fidelity") == [] and registry.running_path("fidelity").is_file()
    (crashed,) = registry.reconcile("fidelity")
    ledger = registry.ledger()
    assert ledger["run_id"].to_list() == ["done", "killed"] and not registry.running_path("fidelity").exists()
    last = ledger.row(-1, named=True)
    assert last == {**{name: None for name in LEDGER_SCHEMA}, **vars(crashed)}
    assert (last["decision"], last["started_at"], last["finished_at"]) == ("crashed", killed.started_at, None)
    assert (last["champion_key"], last["benchmark"], last["tolerance"]) == ("k0", "heldout", 0.01)
    assert last["reason"].startswith(f"{CRASHED}: run killed started ")
    assert last["reason"].endswith("; the champion is none yet")  # no champion pointer in this registry
    assert registry.reconcile("fidelity") == [] and registry.ledger().equals(ledger)

    recorded = row("recorded", perspective="fidelity", decision="kept")
    registry.begin_run(recorded)
    registry.append(recorded)  # killed after its row was written, before its marker was removed
    assert registry.reconcile("fidelity", locked=True) == [] and registry.ledger().height == 3
    assert not registry.running_path("fidelity").exists()
