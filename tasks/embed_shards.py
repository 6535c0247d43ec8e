"""The embed stage over N shards: N ``embed_shard`` stages (the model forward) and a cheap merge.

Shard ``i`` embeds a contiguous slice of the image rows and a contiguous slice of the distinct prompts
(first-appearance order, as :func:`tasks.embed.embed`). Slice boundaries fall on multiples of the
batch size, so each batch the model sees is a batch the unsharded stage sees too: the merged tables
are the unsharded ones, row for row and bit for bit, even where a row's result could depend on the
size of its batch. The merge stacks the shards in order and writes them as the ``embed`` stage under
its unsharded key (see :mod:`tasks.shards`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import polars as pl

import data.images
import data.schemas
import data.validate
import reward.clip
import tasks.embed
import tasks.shards
from reward.clip import ClipSpec, load_clip
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.embed import (
    COLUMNS,
    EMBED,
    TEXT,
    clip_params,
    distinct_prompts,
    embed_key,
    embed_output,
)
from tasks.prefect_stage import stage_task
from tasks.shards import Shard, check_cover, concat_tables, cover, finished_output, merged_stats

EMBED_SHARD = Stage(
    "embed_shard",
    1,
    (sys.modules[__name__], tasks.embed, reward.clip, tasks.shards, data.validate, data.images, data.schemas),
)
#: The slices a shard records: image rows and distinct prompts.
AXES = ("rows", "prompts")
#: ``load_clip`` seeds torch's global generator to draw random weights: shards running in threads of
#: one process load the model one at a time, so that each draws the weights the seed promises.
_load_lock = threading.Lock()


def embed_shard(
    ratings_path: str | Path,
    shard: int,
    shards: int,
    *,
    clip: ClipSpec = ClipSpec(),
    root: str | Path | None = None,
) -> StageResult:
    """Stage: embed shard ``shard`` of ``shards`` of the ratings' images (main table) and distinct
    prompts (table ``text``); undecodable images go to ``rejects`` as in the unsharded stage."""
    part = Shard(shard, shards)

    def compute() -> StageOutput:
        ratings = pl.read_parquet(ratings_path, columns=COLUMNS)
        every_prompt = distinct_prompts(ratings)
        row_start, row_stop = part.bounds(ratings.height, align=clip.batch_size)
        prompt_start, prompt_stop = part.bounds(every_prompt.height, align=clip.batch_size)
        rows = ratings.slice(row_start, row_stop - row_start)
        prompts = every_prompt.slice(prompt_start, prompt_stop - prompt_start)
        with _load_lock:
            encoder = load_clip(clip)
        # The unsharded stage's text table is 0 wide only when there is no prompt at all.
        return embed_output(
            encoder,
            rows,
            prompts,
            batch_size=clip.batch_size,
            text_width=int(encoder.model.visual.output_dim) if every_prompt.height else 0,
            stats={
                **part.params(),
                "rows": cover(row_start, row_stop, ratings.height),
                "prompts": cover(prompt_start, prompt_stop, every_prompt.height),
            },
        )

    return run_stage(
        EMBED_SHARD,
        params={**clip_params(clip), **part.params()},
        inputs={"ratings": ratings_path},
        compute=compute,
        root=root,
    )


def merge_embed_shards(
    ratings_path: str | Path,
    shard_results: Sequence[StageResult],
    *,
    clip: ClipSpec = ClipSpec(),
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the ``embed`` stage's output (its key, its tables) stacked from all its shards."""
    check_cover(shard_results, AXES)

    def compute() -> StageOutput:
        text = concat_tables(shard_results, TEXT)
        stats = {
            "prompts": text.height,
            "dimension": max(result.stats["dimension"] for result in shard_results),
        }
        return StageOutput(
            tables={
                MAIN: concat_tables(shard_results, MAIN),
                TEXT: text,
                REJECTS: concat_tables(shard_results, REJECTS),
            },
            rows_in=sum(result.rows_in for result in shard_results),
            rows_kept=sum(result.rows_kept for result in shard_results),
            stats=merged_stats(shard_results, stats),
        )

    return run_stage(EMBED, **embed_key(ratings_path, clip), compute=compute, root=root)


def finished_embed(
    ratings_path: str | Path, *, clip: ClipSpec = ClipSpec(), root: str | Path | None = None
) -> StageResult | None:
    """The finished ``embed`` output for these ratings and model, sharded or not, if there is one."""
    return finished_output(EMBED, **embed_key(ratings_path, clip), root=root)


embed_shard_task = stage_task(embed_shard, name="embed-shard")
merge_embed_task = stage_task(merge_embed_shards, name="embed-merge")
