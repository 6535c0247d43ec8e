"""The stage cache: content-keyed Parquet outputs with a manifest, written atomically.

A stage writes ``ARTIFACTS/<stage>/<key>.parquet`` (its main table), optional extra tables
``<key>.<name>.parquet`` (always ``rejects``), and last a manifest ``<key>.json`` with its inputs,
parameters, code fingerprint, row counts and wall time. ``key`` hashes the stage name and version, the
source of the code that computes it, its parameters and the fingerprints of its inputs. A stage is
finished exactly when its manifest exists: every file is written to a temporary name and renamed into
place, the manifest last, so a killed run never leaves a file a later run would take for a finished one.

Nothing here imports Prefect; :mod:`tasks.prefect_stage` wraps stages into Prefect tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from data.schemas import REJECTS_SCHEMA, empty_frame
from reward.atomic import replace_atomically, write_text_atomically
from tasks.fingerprint import FingerprintMemo, code_fingerprint, default_memo_path, path_fingerprint

#: Environment variable that moves the artifact root (default ``./artifacts``).
ARTIFACTS_ENV = "LLAVA_REWARD_ARTIFACTS"
MAIN = "main"
REJECTS = "rejects"
MANIFEST_VERSION = 1

InputPaths = Mapping[str, "str | Path | Sequence[str | Path] | None"]


def artifacts_root(override: str | Path | None = None) -> Path:
    """The artifact root: ``override`` if given, else ``$LLAVA_REWARD_ARTIFACTS``, else ``./artifacts``."""
    chosen = override or os.environ.get(ARTIFACTS_ENV) or "artifacts"
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Stage:
    """A stage's identity: its name, a manual version and the modules whose source it depends on."""

    name: str
    version: int
    code: tuple[ModuleType, ...]

    def code_hash(self) -> str:
        return code_fingerprint(self.code)


@dataclass
class StageOutput:
    """What a stage computes: its tables and how its input rows were accounted for.

    ``rows_in`` input rows either reached the output (``rows_kept``) or the ``rejects`` table; the
    cache checks ``rows_in == rows_kept + len(rejects)`` so that nothing is silently dropped.
    """

    tables: dict[str, pl.DataFrame]
    rows_in: int
    rows_kept: int
    stats: dict[str, Any] = field(default_factory=dict)

    def rejects(self) -> pl.DataFrame:
        return self.tables.get(REJECTS, empty_frame(REJECTS_SCHEMA))


class AccountingError(RuntimeError):
    """A stage lost rows: rows in != rows kept + rows rejected."""


@dataclass(frozen=True)
class StageResult:
    """A finished stage: where its tables are and what its manifest says. Plain data, picklable.

    ``seconds`` is the compute time recorded when the output was made; ``elapsed`` is the wall time of
    this call (fingerprinting + cache lookup, plus computing when it was not cached)."""

    stage: str
    key: str
    paths: dict[str, str]
    manifest_path: str
    cached: bool
    rows_in: int
    rows_kept: int
    rows_rejected: int
    rows_out: dict[str, int]
    seconds: float
    stats: dict[str, Any]
    elapsed: float = 0.0

    @property
    def path(self) -> Path:
        """The main table's path."""
        return Path(self.paths[MAIN])

    def read(self, table: str = MAIN) -> pl.DataFrame:
        return pl.read_parquet(self.paths[table])

    def summary(self) -> dict[str, Any]:
        """One row for the flow's stage table artifact: ``rows_in = rows_kept + rows_rejected``, and
        ``main_rows`` is the main table's length (less than kept where kept rows go to other tables too,
        e.g. assemble's validation split)."""
        return {
            "stage": self.stage,
            "status": "cached" if self.cached else "computed",
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "main_rows": self.rows_out.get(MAIN, 0),
            "seconds": round(self.elapsed, 3),
            "compute_seconds": round(self.seconds, 3),
            "key": self.key,
        }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _manifest_path(output: Path) -> Path:
    """The manifest that would list ``output`` if it is a stage table (``<key>[.<name>].parquet``)."""
    key = output.name.split(".", 1)[0]
    return output.with_name(f"{key}.json")


def _stage_output_fingerprint(path: Path) -> str | None:
    """``stage:<name>:<key>:<table>`` when ``path`` is a table of a finished stage, else None."""
    if path.suffix != ".parquet":
        return None
    manifest_path = _manifest_path(path)
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    for table, entry in manifest.get("outputs", {}).items():
        if Path(entry["path"]).name == path.name:
            return f"stage:{manifest['stage']}:{manifest['key']}:{table}"
    return None


def input_fingerprints(inputs: InputPaths, memo: FingerprintMemo) -> dict[str, Any]:
    """Fingerprint each named input (a path, a list of paths, or None)."""

    def one(path: str | Path) -> str:
        resolved = Path(path).expanduser().resolve()
        return _stage_output_fingerprint(resolved) or path_fingerprint(resolved, memo)

    fingerprints: dict[str, Any] = {}
    for name, value in sorted(inputs.items()):
        if value is None:
            fingerprints[name] = None
        elif isinstance(value, (str, Path)):
            fingerprints[name] = one(value)
        else:
            fingerprints[name] = [one(item) for item in value]
    return fingerprints


def stage_key(stage: Stage, params: Mapping[str, Any], fingerprints: Mapping[str, Any]) -> str:
    """The content key of a stage run."""
    material = {
        "stage": stage.name,
        "version": stage.version,
        "code": stage.code_hash(),
        "params": params,
        "inputs": fingerprints,
    }
    return hashlib.blake2b(_canonical(material).encode(), digest_size=10).hexdigest()


def _table_path(directory: Path, key: str, table: str) -> Path:
    return directory / (f"{key}.parquet" if table == MAIN else f"{key}.{table}.parquet")


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` as zstd Parquet to a temporary file beside ``path``, then rename it into place."""
    replace_atomically(path, lambda target: frame.write_parquet(target, compression="zstd", statistics=True))


def result_from_manifest(
    manifest: dict[str, Any], manifest_path: Path, *, cached: bool, elapsed: float = 0.0
) -> StageResult:
    """The :class:`StageResult` a manifest describes."""
    outputs = manifest["outputs"]
    return StageResult(
        stage=manifest["stage"],
        key=manifest["key"],
        paths={name: entry["path"] for name, entry in outputs.items()},
        manifest_path=str(manifest_path),
        cached=cached,
        rows_in=manifest["rows_in"],
        rows_kept=manifest["rows_kept"],
        rows_rejected=manifest["rows_rejected"],
        rows_out={name: entry["rows"] for name, entry in outputs.items()},
        seconds=manifest["seconds"],
        stats=manifest.get("stats", {}),
        elapsed=elapsed,
    )


def output_matches(entry: Mapping[str, Any], memo: FingerprintMemo | None = None) -> bool:
    """Whether an output still is what its manifest entry recorded: it exists; a Parquet table's
    footer reads and holds ``rows`` rows; and, where recorded at write, its size (``bytes``) and
    content digest (``digest``, checked when ``memo`` is given; memoized by size, mtime and inode)."""
    path = Path(entry["path"])
    if not path.exists():
        return False
    if "bytes" in entry and path.stat().st_size != entry["bytes"]:
        return False
    if path.suffix == ".parquet" and path.is_file():
        try:
            if pq.read_metadata(path).num_rows != entry["rows"]:
                return False
        except (pa.ArrowException, OSError):
            return False
    return not (memo is not None and "digest" in entry and memo.digest(path) != entry["digest"])


def load_finished(manifest_path: Path, memo: FingerprintMemo | None = None) -> StageResult | None:
    """The finished stage behind ``manifest_path``, or None if it is absent or an output is missing or
    no longer matches its manifest (:func:`output_matches`): such a stage is recomputed."""
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if not all(output_matches(entry, memo) for entry in manifest["outputs"].values()):
        return None
    return result_from_manifest(manifest, manifest_path, cached=True)


class NoRowsLeft(RuntimeError):
    """A stage kept no rows where the next stage needs some; the message says where the rejects are."""


def require_rows(result: StageResult, table: str = MAIN) -> StageResult:
    """``result`` when its ``table`` has rows, else :class:`NoRowsLeft` naming the stage, the rejected
    row count and the rejects table."""
    if result.rows_out.get(table, 0) == 0:
        raise NoRowsLeft(
            f"no rows left after {result.stage}: {result.rows_rejected} rejected, "
            f"see {result.paths.get(REJECTS, 'its manifest ' + result.manifest_path)}"
        )
    return result


class OutputError(RuntimeError):
    """A table a stage wrote does not read back as written; the message names the file."""


def write_checked_table(frame: pl.DataFrame, path: Path, memo: FingerprintMemo) -> dict[str, Any]:
    """Write ``frame`` atomically, read it back whole (schema and row count must match), and return
    its manifest entry: path, rows, size in bytes and content digest."""
    atomic_write_parquet(frame, path)
    try:
        back = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise OutputError(f"{path}: the table just written does not read back ({error})") from error
    if back.schema != frame.schema or back.height != frame.height:
        raise OutputError(
            f"{path}: read back {back.height} rows with schema {dict(back.schema)}, "
            f"wrote {frame.height} with {dict(frame.schema)}"
        )
    return {
        "path": str(path),
        "rows": frame.height,
        "bytes": path.stat().st_size,
        "digest": memo.digest(path),
    }


def _remove_stale_temporaries(directory: Path, key: str) -> None:
    for leftover in directory.glob(f"{key}*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@dataclass
class Produced:
    """What a stage wrote into its directory: ``outputs`` maps a table (or folder) name to
    ``{"path": ..., "rows": ...}``; the row counts and statistics go into the manifest."""

    outputs: dict[str, dict[str, Any]]
    rows_in: int
    rows_kept: int
    rows_rejected: int
    stats: dict[str, Any] = field(default_factory=dict)


def run_keyed(
    stage: Stage,
    *,
    params: Mapping[str, Any],
    inputs: InputPaths,
    produce: Callable[[Path, str, dict[str, Any]], Produced],
    root: str | Path | None = None,
) -> StageResult:
    """The cache mechanics every stage shares: fingerprint the inputs, derive the key, and under a
    file lock either return the finished output or call ``produce(directory, key, fingerprints)`` —
    which must write its outputs atomically inside ``directory`` — then write the manifest last.

    Concurrent runs of the same key (two flows at once) serialize on the lock; the second finds the
    first one's output. Temporaries a killed run left behind (``<key>*.tmp-*``) are removed first.
    """
    called = time.perf_counter()
    artifacts = artifacts_root(root)
    memo = FingerprintMemo(default_memo_path(artifacts))
    fingerprints = input_fingerprints(inputs, memo)
    key = stage_key(stage, params, fingerprints)
    directory = artifacts / stage.name
    manifest_path = directory / f"{key}.json"
    # A finished output is read without the lock (its manifest is written last and never changed), so
    # a fully cached run needs no write access to the artifact root.
    finished = load_finished(manifest_path, memo)
    if finished is not None:
        return replace(finished, elapsed=time.perf_counter() - called)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory / f"{key}.lock"))
        lock.acquire()
    except OSError as error:
        raise OSError(
            f"{directory}: stage {stage.name} has no finished output for key {key} and must be computed, "
            f"which needs write access to the artifact root ({error})"
        ) from error
    with lock:  # re-entrant: the context manager holds it a second time ...
        lock.release()  # ... so give back the first hold; leaving the block releases the lock
        finished = load_finished(manifest_path, memo)
        if finished is not None:
            return replace(finished, elapsed=time.perf_counter() - called)
        _remove_stale_temporaries(directory, key)
        started = time.perf_counter()
        produced = produce(directory, key, fingerprints)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "stage": stage.name,
            "stage_version": stage.version,
            "key": key,
            "code": stage.code_hash(),
            "params": json.loads(_canonical(params)),
            "inputs": {
                name: {"path": _describe_paths(value), "fingerprint": fingerprints[name]}
                for name, value in inputs.items()
            },
            "outputs": produced.outputs,
            "rows_in": produced.rows_in,
            "rows_kept": produced.rows_kept,
            "rows_rejected": produced.rows_rejected,
            "stats": json.loads(_canonical(produced.stats)),
            "seconds": round(time.perf_counter() - started, 4),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
        }
        write_text_atomically(json.dumps(manifest, indent=2), manifest_path)
        result = result_from_manifest(manifest, manifest_path, cached=False)
        return replace(result, elapsed=time.perf_counter() - called)


def run_stage(
    stage: Stage,
    *,
    params: Mapping[str, Any],
    inputs: InputPaths,
    compute: Callable[[], StageOutput],
    root: str | Path | None = None,
) -> StageResult:
    """Return the finished Parquet output of ``stage`` for these inputs and parameters, computing it
    (``compute``) only when no finished output with the same key exists."""

    def produce(directory: Path, key: str, _fingerprints: dict[str, Any]) -> Produced:
        output = compute()
        rejects = output.rejects()
        if output.rows_in != output.rows_kept + rejects.height:
            raise AccountingError(
                f"stage {stage.name}: {output.rows_in} rows in but {output.rows_kept} kept "
                f"+ {rejects.height} rejected"
            )
        tables = {**output.tables, REJECTS: rejects}
        if MAIN not in tables:
            raise ValueError(f"stage {stage.name}: compute() returned no '{MAIN}' table")
        memo = FingerprintMemo(default_memo_path(directory.parent))
        outputs = {
            table: write_checked_table(frame, _table_path(directory, key, table), memo)
            for table, frame in tables.items()
        }
        return Produced(outputs, output.rows_in, output.rows_kept, rejects.height, output.stats)

    return run_keyed(stage, params=params, inputs=inputs, produce=produce, root=root)


def _describe_paths(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(Path(value).expanduser().resolve())
    return [str(Path(item).expanduser().resolve()) for item in value]


__all__ = [
    "ARTIFACTS_ENV",
    "AccountingError",
    "MAIN",
    "REJECTS",
    "Stage",
    "StageOutput",
    "Produced",
    "StageResult",
    "artifacts_root",
    "atomic_write_parquet",
    "input_fingerprints",
    "NoRowsLeft",
    "load_finished",
    "require_rows",
    "output_matches",
    "result_from_manifest",
    "run_keyed",
    "run_stage",
    "stage_key",
]
