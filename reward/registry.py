"""The model registry on disk: registered models, a champion pointer per perspective, and a run ledger.

Layout (``ARTIFACTS/registry`` by default, see :meth:`ModelRegistry.under`)::

    ledger.parquet                  one row per retraining run, all perspectives (LEDGER_SCHEMA)
    ledger.lock                     held while the ledger is rewritten
    <perspective>/
      champion.json                 the pointer: the registered model that serves this perspective
      retrain.lock                  held for the whole of a retraining run of this perspective
      running.json                  the run holding the lock, until its ledger row is written
      models/<model key>/           a registered model: a copy of a trained perspective folder
      models/<model key>.json       its entry (the digest of every file), written last

Every write is atomic: a file is written beside its target and renamed over it (``os.replace``), a
model is copied into ``<key>.tmp-<id>/`` and renamed into place, and its entry is written last, so a
model folder without its entry is unfinished and is never promoted. Before the pointer switches,
:func:`verify_model_folder` checks that the folder is a complete, loadable perspective folder
(``reward_config.json``, every weight file its config needs, each a readable safetensors file) and
that its files still have the digests recorded when it was registered.

The ledger is rewritten (read, append, write to a temporary file, rename) under ``ledger.lock``, so
runs of different perspectives may append at the same time. :func:`decide` is the promotion rule.

A retraining run that is killed (``kill -9``, a lost machine) records nothing itself: its
``running.json`` stays behind while the kernel frees its lock. :meth:`ModelRegistry.reconcile` (called
by the next run of the perspective under the lock, or by anyone while no run holds it) turns it into a
``crashed`` ledger row, exactly once. Nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file

from reward.atomic import replace_atomically, write_text_atomically
from reward.checkpoint import (
    ADAPTER_DIR,
    CONFIG_NAME,
    HEAD_WEIGHTS,
    PROJECTOR_WEIGHTS,
    CheckpointError,
    RewardModelConfig,
    check_perspective_name,
    read_reward_config,
)
from reward.config import ConfigError

REGISTRY_DIR = "registry"
LEDGER_FILE = "ledger.parquet"
CHAMPION_FILE = "champion.json"
MODELS_DIR = "models"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

RUNNING_FILE = "running.json"

Action = Literal["promoted", "kept", "rejected", "failed", "crashed"]
PROMOTED: Action = "promoted"
KEPT: Action = "kept"
REJECTED: Action = "rejected"
FAILED: Action = "failed"
#: A run that ended without recording an outcome (found by :meth:`ModelRegistry.reconcile`).
CRASHED: Action = "crashed"
CRASHED_REASON = "process ended without recording an outcome (killed?)"

_TIME = pl.Datetime("us", "UTC")
#: One row per retraining run. ``metrics`` is a JSON object of the challenger's headline metrics;
#: ``champion_*`` describe the champion before the run, ``champion_after`` the one after it.
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "perspective": pl.String(),
    "requested_at": _TIME,
    "started_at": _TIME,
    "finished_at": _TIME,
    "data_key": pl.String(),
    "data_unchanged": pl.Boolean(),
    "every_stage_cached": pl.Boolean(),
    "model_key": pl.String(),
    "model_folder": pl.String(),
    "train_cached": pl.Boolean(),
    "benchmark": pl.String(),
    "metric": pl.String(),
    "metrics": pl.String(),
    "challenger_value": pl.Float64(),
    "champion_key": pl.String(),
    "champion_value": pl.Float64(),
    "tolerance": pl.Float64(),
    "decision": pl.String(),
    "reason": pl.String(),
    "champion_after": pl.String(),
}


class RegistryError(RuntimeError):
    """A registry file or model folder is missing, incomplete or inconsistent; the message names it."""


class RegistryBusy(RegistryError):
    """Another retraining run of the same perspective holds the lock."""


# --------------------------------------------------------------------------------------------
# Atomic files


def _write_json(data: Mapping[str, Any], path: Path) -> None:
    write_text_atomically(json.dumps(data, indent=2) + "\n", path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RegistryError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def file_digests(folder: Path) -> dict[str, str]:
    """``{relative path: BLAKE2b-128}`` of every file below ``folder``."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
        digests[path.relative_to(folder).as_posix()] = digest
    return digests


# --------------------------------------------------------------------------------------------
# Model folders


def resolve_model_folder(path: str | Path) -> Path:
    """The perspective folder to load for ``path``: ``path`` itself when it holds a model (or when it is
    not a registry pointer, so that loading names what is missing); for a registry perspective folder
    (``<registry>/<perspective>``) or its ``champion.json``, the champion's model folder."""
    path = Path(path)
    pointer = path if path.name == CHAMPION_FILE else path / CHAMPION_FILE
    if (path / CONFIG_NAME).is_file():
        return path
    if not pointer.is_file():
        perspective = pointer.parent
        if perspective.parent.name == REGISTRY_DIR:
            raise CheckpointError(
                f"{perspective}: this registry perspective has no champion yet; run "
                f"`prefect deployment run retrain-reward-model/{perspective.name} --watch` first, "
                "or pass a trained model folder (artifacts/train/<key>)"
            )
        return path
    return Path(Champion.from_dict(_read_json(pointer), source=pointer).folder)


def required_files(config: RewardModelConfig) -> list[str]:
    """The files a perspective folder with ``config`` needs besides its config."""
    if config.lora is None:
        return [HEAD_WEIGHTS, PROJECTOR_WEIGHTS]
    return [HEAD_WEIGHTS, f"{ADAPTER_DIR}/{ADAPTER_CONFIG}", f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}"]


def verify_model_folder(
    folder: str | Path, *, perspective: str | None = None, digests: Mapping[str, str] | None = None
) -> RewardModelConfig:
    """Check that ``folder`` is a complete, loadable perspective folder and return its config.

    ``reward_config.json`` must parse (and name ``perspective`` when given); every weight file the
    config needs must be a readable safetensors file (a truncated file fails here); with ``digests``
    the folder must hold exactly those files with those digests. Raises :class:`RegistryError`."""
    folder = Path(folder)
    try:
        config = read_reward_config(folder)
    except CheckpointError as error:
        raise RegistryError(f"incomplete model folder: {error}") from error
    if perspective is not None and config.perspective != perspective:
        raise RegistryError(
            f"{folder / CONFIG_NAME}: perspective {config.perspective!r}, expected {perspective!r}"
        )
    for name in required_files(config):
        path = folder / name
        if not path.is_file():
            raise RegistryError(f"incomplete model folder: {path} is missing")
        if path.suffix == ".safetensors":
            try:
                load_file(path, device="cpu")
            except (SafetensorError, OSError) as error:
                raise RegistryError(f"{path}: not a readable safetensors file ({error})") from error
        else:
            _read_json(path)
    if digests is not None:
        actual = file_digests(folder)
        missing, extra = sorted(set(digests) - set(actual)), sorted(set(actual) - set(digests))
        changed = sorted(name for name in set(digests) & set(actual) if digests[name] != actual[name])
        if missing or extra or changed:
            raise RegistryError(
                f"{folder}: differs from the registered copy: missing {missing}, unexpected {extra}, "
                f"changed {changed}"
            )
    return config


# --------------------------------------------------------------------------------------------
# The promotion rule


@dataclass(frozen=True)
class Decision:
    """What to do with a challenger, and why (``threshold``: the lowest value that is promoted)."""

    action: Action
    reason: str
    threshold: float | None = None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decide(
    *,
    metric: str,
    challenger_key: str,
    challenger_value: float,
    champion_key: str | None,
    champion_value: float | None,
    tolerance: float,
) -> Decision:
    """The promotion rule (higher ``metric`` is better): keep when the challenger is the champion;
    reject an undefined (NaN) challenger; promote when there is no champion, when the champion's value
    is undefined, or when ``challenger >= champion - tolerance``; reject otherwise."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if challenger_key == champion_key:
        return Decision(KEPT, f"no change: the challenger is the champion (model {champion_key})")
    if not _finite(challenger_value):
        return Decision(REJECTED, f"the challenger's {metric} is undefined ({challenger_value})")
    if champion_key is None:
        return Decision(
            PROMOTED, f"no champion yet: the challenger ({metric} {challenger_value:.4f}) is promoted"
        )
    if not _finite(champion_value):
        return Decision(
            PROMOTED, f"the champion's {metric} is undefined ({champion_value}): challenger promoted"
        )
    threshold = champion_value - tolerance
    comparison = (
        f"challenger {metric} {challenger_value:.4f} vs champion {champion_value:.4f} "
        f"- tolerance {tolerance:g} = {threshold:.4f}"
    )
    if challenger_value >= threshold:
        return Decision(PROMOTED, f"not worse beyond the tolerance: {comparison}", threshold)
    return Decision(
        REJECTED,
        f"worse by {champion_value - challenger_value:.4f}, beyond the tolerance: {comparison}",
        threshold,
    )


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Champion:
    """The pointer of a perspective: which registered model serves, and the figures it won with."""

    perspective: str
    model_key: str
    folder: str
    benchmark: str
    metric: str
    value: float | None
    run_id: str
    promoted_at: str
    reason: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: Path) -> Champion:
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise RegistryError(f"{source}: missing field(s) {missing}")
        return cls(**{name: data[name] for name in names})


@dataclass
class LedgerRow:
    """One retraining run as the ledger records it (see :data:`LEDGER_SCHEMA`)."""

    run_id: str
    perspective: str
    requested_at: datetime
    started_at: datetime
    finished_at: datetime | None = None
    data_key: str | None = None
    data_unchanged: bool | None = None
    every_stage_cached: bool | None = None
    model_key: str | None = None
    model_folder: str | None = None
    train_cached: bool | None = None
    benchmark: str | None = None
    metric: str | None = None
    metrics: str | None = None
    challenger_value: float | None = None
    champion_key: str | None = None
    champion_value: float | None = None
    tolerance: float | None = None
    decision: str | None = None
    reason: str | None = None
    champion_after: str | None = None

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([asdict(self)], schema=LEDGER_SCHEMA)

    def to_json(self) -> dict[str, Any]:
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in asdict(self).items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerRow:
        times = {"requested_at", "started_at", "finished_at"}
        values = {
            f.name: datetime.fromisoformat(data[f.name])
            if f.name in times and data.get(f.name)
            else data.get(f.name)
            for f in fields(cls)
        }
        return cls(**values)


def utc_now() -> datetime:
    return datetime.now(UTC)


class ModelRegistry:
    """The registry rooted at ``root`` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def under(cls, artifacts: str | Path) -> ModelRegistry:
        """The registry of an artifact root: ``<artifacts>/registry``."""
        return cls(Path(artifacts) / REGISTRY_DIR)

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_FILE

    def perspective_dir(self, perspective: str) -> Path:
        try:
            return self.root / check_perspective_name(perspective)
        except ConfigError as error:
            raise RegistryError(str(error)) from error

    def champion_path(self, perspective: str) -> Path:
        return self.perspective_dir(perspective) / CHAMPION_FILE

    def model_folder(self, perspective: str, model_key: str) -> Path:
        return self.perspective_dir(perspective) / MODELS_DIR / model_key

    def running_path(self, perspective: str) -> Path:
        return self.perspective_dir(perspective) / RUNNING_FILE

    def _entry_path(self, perspective: str, model_key: str) -> Path:
        return self.perspective_dir(perspective) / MODELS_DIR / f"{model_key}.json"

    @contextmanager
    def retrain_lock(self, perspective: str, *, timeout: float = -1) -> Iterator[None]:
        """Hold the perspective's retraining lock (wait at most ``timeout`` seconds; -1: forever)."""
        directory = self.perspective_dir(perspective)
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory / "retrain.lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout as error:
            raise RegistryBusy(
                f"{lock.lock_file}: another retraining run of {perspective!r} still holds the lock "
                f"after {timeout:g} s"
            ) from error
        try:
            yield
        finally:
            lock.release()

    # -- models

    def register(self, perspective: str, model_key: str, source: str | Path) -> Path:
        """Copy the trained folder ``source`` into the registry as ``model_key`` (once) and return the
        registered folder. The source is verified first; the copy is checked against its digests."""
        source = Path(source)
        final, entry = self.model_folder(perspective, model_key), self._entry_path(perspective, model_key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final.with_name(f"{model_key}.lock"))):
            if entry.is_file():
                self.verify(perspective, model_key)
                return final
            config = verify_model_folder(source, perspective=perspective)
            digests = file_digests(source)
            staging = final.with_name(f"{model_key}.tmp-{uuid.uuid4().hex}")
            try:
                shutil.copytree(source, staging)
                verify_model_folder(staging, perspective=perspective, digests=digests)
                if final.exists():  # a registration killed before its entry was written
                    shutil.rmtree(final)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _write_json(
                {
                    "perspective": perspective,
                    "model_key": model_key,
                    "source": str(source.resolve()),
                    "backbone": config.backbone.name_or_path,
                    "training_data": config.training_data.get("key"),
                    "registered_at": utc_now().isoformat(),
                    "files": digests,
                },
                entry,
            )
        return final

    def verify(self, perspective: str, model_key: str) -> RewardModelConfig:
        """Check a registered model: its entry exists and the folder is complete and unchanged."""
        entry_path = self._entry_path(perspective, model_key)
        if not entry_path.is_file():
            raise RegistryError(
                f"{self.model_folder(perspective, model_key)}: not a registered model "
                f"(no entry {entry_path.name}: unfinished or never registered)"
            )
        entry = _read_json(entry_path)
        if not isinstance(entry.get("files"), dict):
            raise RegistryError(f"{entry_path}: no 'files' digests")
        folder = self.model_folder(perspective, model_key)
        return verify_model_folder(folder, perspective=perspective, digests=entry["files"])

    # -- the champion pointer

    def champion(self, perspective: str) -> Champion | None:
        """The perspective's champion, or None before the first promotion."""
        path = self.champion_path(perspective)
        if not path.is_file():
            return None
        return Champion.from_dict(_read_json(path), source=path)

    def promote(
        self,
        perspective: str,
        model_key: str,
        *,
        run_id: str,
        benchmark: str,
        metric: str,
        value: float | None,
        reason: str,
    ) -> Champion:
        """Verify the registered model ``model_key`` and switch the champion pointer to it atomically.
        A model that fails verification is not promoted (:class:`RegistryError`; the pointer stays)."""
        self.verify(perspective, model_key)
        champion = Champion(
            perspective=perspective,
            model_key=model_key,
            folder=str(self.model_folder(perspective, model_key)),
            benchmark=benchmark,
            metric=metric,
            value=value if _finite(value) else None,
            run_id=run_id,
            promoted_at=utc_now().isoformat(),
            reason=reason,
        )
        _write_json(asdict(champion), self.champion_path(perspective))
        return champion

    # -- the ledger

    def ledger(self) -> pl.DataFrame:
        """Every recorded run, oldest first (an empty frame with the schema before the first run)."""
        if not self.ledger_path.is_file():
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        try:
            frame = pl.read_parquet(self.ledger_path)
        except (pl.exceptions.PolarsError, OSError) as error:
            raise RegistryError(f"{self.ledger_path}: not a readable Parquet ledger ({error})") from error
        if frame.schema != pl.Schema(LEDGER_SCHEMA):
            raise RegistryError(
                f"{self.ledger_path}: columns {dict(frame.schema)} do not match the ledger schema "
                f"{LEDGER_SCHEMA}"
            )
        return frame

    def append(self, row: LedgerRow) -> pl.DataFrame:
        """Append ``row`` to the ledger (read, append, write a temporary file, rename; under the
        ledger lock) and return the new ledger."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "ledger.lock")):
            ledger = pl.concat([self.ledger(), row.frame()], how="vertical")
            replace_atomically(
                self.ledger_path, lambda target: ledger.write_parquet(target, compression="zstd")
            )
        return ledger

    # -- runs that never recorded their outcome

    def begin_run(self, row: LedgerRow) -> None:
        """Note that ``row``'s run (holding its perspective's retraining lock) has started and has no
        outcome yet: ``<perspective>/running.json``, removed by :meth:`end_run` once its row is written."""
        marker = {**row.to_json(), "pid": os.getpid(), "host": socket.gethostname()}
        path = self.running_path(row.perspective)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(json.dumps(marker, indent=2), path)

    def end_run(self, perspective: str, run_id: str) -> None:
        """Remove the marker of run ``run_id`` (its outcome is in the ledger, or it is being recorded)."""
        path = self.running_path(perspective)
        if path.is_file() and _read_json(path).get("run_id") == run_id:
            path.unlink()

    def reconcile(self, perspective: str, *, locked: bool = False) -> list[LedgerRow]:
        """Record a run of ``perspective`` that started and never recorded an outcome (its marker is
        there, no run holds the lock) as a ``crashed`` ledger row, once: a run already in the ledger is
        not added again. ``locked``: the caller holds the perspective's retraining lock; otherwise it is
        taken without waiting, and nothing is done while a run holds it. Returns the rows appended."""
        if not self.running_path(perspective).is_file():
            return []
        if locked:
            return self._reconcile(perspective)
        try:
            with self.retrain_lock(perspective, timeout=0):
                return self._reconcile(perspective)
        except RegistryBusy:
            return []  # a run is alive: its marker is no leftover

    def _reconcile(self, perspective: str) -> list[LedgerRow]:
        path = self.running_path(perspective)
        if not path.is_file():
            return []
        marker = _read_json(path)
        row = LedgerRow.from_json(marker)
        if row.run_id in self.ledger()["run_id"].to_list():  # recorded; killed before removing the marker
            path.unlink()
            return []
        champion = self.champion(perspective)
        row.champion_after = champion.model_key if champion else None
        row.decision = CRASHED
        started = row.started_at.isoformat(timespec="seconds")
        where = f"pid {marker.get('pid')} on {marker.get('host')}"
        row.reason = (
            f"{CRASHED_REASON}: run {row.run_id} started {started} ({where}); "
            f"the champion is {row.champion_after or 'none yet'}"
        )
        self.append(row)
        path.unlink()
        return [row]

    def last_run(self, perspective: str, *, with_data: bool = False) -> dict[str, Any] | None:
        """The perspective's latest ledger row (``with_data``: the latest that built its data)."""
        rows = self.ledger().filter(pl.col("perspective") == perspective)
        if with_data:
            rows = rows.filter(pl.col("data_key").is_not_null())
        return rows.row(-1, named=True) if rows.height else None


__all__ = [
    "CRASHED",
    "CRASHED_REASON",
    "Champion",
    "Decision",
    "FAILED",
    "KEPT",
    "LEDGER_SCHEMA",
    "LedgerRow",
    "ModelRegistry",
    "PROMOTED",
    "REGISTRY_DIR",
    "REJECTED",
    "RegistryBusy",
    "RegistryError",
    "decide",
    "file_digests",
    "required_files",
    "utc_now",
    "verify_model_folder",
]
