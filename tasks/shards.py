"""Sharded stages: N contiguous, deterministic shards, each a cached stage of its own, and a merge.

A shard stage is keyed like any stage (:mod:`tasks.cache`) by its input, its parameters and its shard
index and count. The merge writes exactly the tables the unsharded stage writes, under the unsharded
stage's own name and key: how many shards computed a table is how the work was spread, not what it
is, so every downstream key (and cache) is the same for any shard count. A finished unsharded output
is therefore also found before any shard runs (:func:`finished_output`).

Each shard records the slice it covered in its stats (``{axis: [start, stop, total]}``); a merge
checks that its shards cover every row of every axis exactly once, in order (:func:`check_cover`).
Nothing here imports Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tasks.cache import (
    InputPaths,
    Stage,
    StageResult,
    artifacts_root,
    input_fingerprints,
    load_finished,
    stage_key,
)
from tasks.fingerprint import FingerprintMemo, default_memo_path

#: Stats keys a shard stage records: its index and the shard count.
SHARD, SHARDS = "shard", "shards"


def check_shard_count(shards: int) -> int:
    """``shards`` if it is a positive integer, else a ValueError naming the value."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    return shards


def shard_bounds(total: int, count: int, *, align: int = 1) -> list[tuple[int, int]]:
    """``count`` contiguous ``[start, stop)`` ranges that cover ``range(total)`` in order.

    Every boundary but the end falls on a multiple of ``align`` (so that a shard's batches of
    ``align`` rows are the very batches the unsharded stage forms); the ``ceil(total / align)`` blocks
    are dealt as evenly as possible, earlier shards taking one more. With fewer blocks than shards,
    the last shards are empty."""
    check_shard_count(count)
    if total < 0 or align < 1:
        raise ValueError(f"shard_bounds needs total >= 0 and align >= 1, got total={total}, align={align}")
    blocks = -(-total // align)
    base, extra = divmod(blocks, count)
    bounds, start = [], 0
    for index in range(count):
        stop = min(total, start + (base + (index < extra)) * align)
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        check_shard_count(self.count)
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index}")

    @property
    def label(self) -> str:
        """``"2/4"``: 1-based, for logs and run names."""
        return f"{self.index + 1}/{self.count}"

    def bounds(self, total: int, *, align: int = 1) -> tuple[int, int]:
        """This shard's ``[start, stop)`` of ``range(total)`` (see :func:`shard_bounds`)."""
        return shard_bounds(total, self.count, align=align)[self.index]

    def params(self) -> dict[str, int]:
        """What a shard stage adds to its key parameters and its stats."""
        return {SHARD: self.index, SHARDS: self.count}


def cover(start: int, stop: int, total: int) -> list[int]:
    """The stats entry of one axis of a shard: ``[start, stop, total]``."""
    return [start, stop, total]


def check_cover(results: Sequence[StageResult], axes: Sequence[str]) -> None:
    """Raise a ValueError unless ``results`` are shards 0..N-1 of one N-way split, in order, whose
    slices of every axis in ``axes`` join end to end from 0 to the axis' total."""
    if not results:
        raise ValueError("a merge needs at least one shard")
    count = len(results)
    for position, result in enumerate(results):
        index, shards = result.stats.get(SHARD), result.stats.get(SHARDS)
        if (index, shards) != (position, count):
            raise ValueError(
                f"shard at position {position} of {count} is shard {index} of {shards} "
                f"({result.stage} {result.key}): merge shards 0..{count - 1} of one split, in order"
            )
    for axis in axes:
        expected = 0
        total = results[0].stats[axis][2]
        for result in results:
            start, stop, shard_total = result.stats[axis]
            if start != expected or shard_total != total:
                raise ValueError(
                    f"{result.stage} {result.key}: covers {axis} [{start}, {stop}) of {shard_total}, "
                    f"expected to start at {expected} of {total}: the shards were cut from different inputs"
                )
            expected = stop
        if expected != total:
            raise ValueError(f"the shards cover {axis} [0, {expected}) of {total}")


def concat_tables(results: Sequence[StageResult], table: str) -> pl.DataFrame:
    """Table ``table`` of every shard, stacked in shard order."""
    return pl.concat([pl.read_parquet(result.paths[table]) for result in results], how="vertical")


def merged_stats(results: Sequence[StageResult], stats: Mapping[str, Any]) -> dict[str, Any]:
    """A merge's stats: ``stats`` plus the keys of the shards it merged."""
    return {**stats, SHARDS: [result.key for result in results]}


def finished_output(
    stage: Stage,
    *,
    params: Mapping[str, Any],
    inputs: InputPaths,
    root: str | Path | None = None,
) -> StageResult | None:
    """The finished output of ``stage`` for these parameters and inputs, if one exists (cached)."""
    artifacts = artifacts_root(root)
    fingerprints = input_fingerprints(inputs, FingerprintMemo(default_memo_path(artifacts)))
    key = stage_key(stage, params, fingerprints)
    return load_finished(artifacts / stage.name / f"{key}.json")


__all__ = [
    "SHARD",
    "SHARDS",
    "Shard",
    "check_cover",
    "check_shard_count",
    "concat_tables",
    "cover",
    "finished_output",
    "merged_stats",
    "shard_bounds",
]
