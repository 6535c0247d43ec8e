"""The dedup stage over N shards: N ``dedup_shard`` stages (the all-pairs search) and a cheap merge.

Shard ``i`` takes a contiguous slice of the distinct prompts (first-appearance order) and searches the
whole benchmark caption set, the shared side, for each prompt's nearest caption within the threshold.
Its table lists every prompt of the slice with that caption (null when none is near).

The merge runs :func:`tasks.dedup.dedup_against_benchmark` over all the ratings again, but against
only the captions some shard found nearest: a prompt's nearest caption is among them (and wins the
same ties, the captions keeping their sorted order) and no prompt without one finds one there, so the
merge writes exactly the unsharded ``dedup`` tables, under that stage's key (see :mod:`tasks.shards`),
at the cost of a search against a handful of captions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl

import data.schemas
import data.validate
import tasks.dedup
import tasks.shards
from tasks.cache import MAIN, Stage, StageOutput, StageResult, run_stage
from tasks.dedup import (
    DEDUP,
    DEFAULT_THRESHOLD,
    REMOVED,
    benchmark_captions,
    check_threshold,
    dedup_against_benchmark,
    dedup_key,
    dedup_output,
    normalize_prompt,
)
from tasks.prefect_stage import stage_task
from tasks.shards import Shard, check_cover, concat_tables, cover, finished_output, merged_stats

DEDUP_SHARD = Stage(
    "dedup_shard", 1, (sys.modules[__name__], tasks.dedup, tasks.shards, data.validate, data.schemas)
)
#: What dedup_against_benchmark needs of a shard's rows: the prompt and the provenance of a reject.
SHARD_COLUMNS = ["prompt_id", "prompt", "image_id", "source_file", "source_row"]
NEAREST_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "nearest_caption": pl.String(),
    "distance": pl.Float32(),
}
AXES = ("prompts",)


def dedup_shard(
    ratings_path: str | Path,
    benchmark_path: str | Path,
    shard: int,
    shards: int,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the nearest benchmark caption within ``threshold`` of each prompt of shard ``shard``."""
    check_threshold(threshold)
    part = Shard(shard, shards)

    def compute() -> StageOutput:
        ratings = pl.read_parquet(ratings_path, columns=SHARD_COLUMNS)
        prompt_ids = ratings["prompt_id"].unique(maintain_order=True)
        start, stop = part.bounds(prompt_ids.len())
        mine = prompt_ids.slice(start, stop - start)
        rows = ratings.filter(pl.col("prompt_id").is_in(mine.implode()))
        _, removed, _ = dedup_against_benchmark(rows, benchmark_captions(benchmark_path), threshold=threshold)
        nearest = (
            mine.to_frame()
            .join(
                removed.select("prompt_id", "nearest_caption", "distance"),
                on="prompt_id",
                how="left",
                maintain_order="left",
            )
            .cast(NEAREST_SCHEMA)
        )
        return StageOutput(
            tables={MAIN: nearest},
            rows_in=mine.len(),
            rows_kept=mine.len(),
            stats={**part.params(), "prompts": cover(start, stop, prompt_ids.len()), "near": removed.height},
        )

    return run_stage(
        DEDUP_SHARD,
        params={"threshold": threshold, **part.params()},
        inputs={"ratings": ratings_path, "benchmark": benchmark_path},
        compute=compute,
        root=root,
    )


def merge_dedup_shards(
    ratings_path: str | Path,
    benchmark_path: str | Path,
    shard_results: Sequence[StageResult],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the ``dedup`` stage's output (its key, its tables) from the nearest captions its shards
    found."""
    check_threshold(threshold)
    check_cover(shard_results, AXES)

    def compute() -> StageOutput:
        nearest = concat_tables(shard_results, MAIN).drop_nulls("nearest_caption")
        found = set(nearest["nearest_caption"].to_list())
        captions = benchmark_captions(benchmark_path)
        near = [caption for caption in captions if caption and normalize_prompt(caption) in found]
        output = dedup_output(
            pl.read_parquet(ratings_path), near, threshold=threshold, benchmark_size=len(captions)
        )
        removed = output.tables[REMOVED]
        if set(removed["prompt_id"].to_list()) != set(nearest["prompt_id"].to_list()):
            raise RuntimeError(
                f"dedup merge: the shards found {nearest.height} near-duplicate prompts but the merge "
                f"removes {removed.height}"
            )
        return replace(output, stats=merged_stats(shard_results, output.stats))

    return run_stage(DEDUP, **dedup_key(ratings_path, benchmark_path, threshold), compute=compute, root=root)


def finished_dedup(
    ratings_path: str | Path,
    benchmark_path: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    root: str | Path | None = None,
) -> StageResult | None:
    """The finished ``dedup`` output for these inputs, sharded or not, if there is one."""
    return finished_output(DEDUP, **dedup_key(ratings_path, benchmark_path, threshold), root=root)


dedup_shard_task = stage_task(dedup_shard, name="dedup-shard")
merge_dedup_task = stage_task(merge_dedup_shards, name="dedup-merge")
