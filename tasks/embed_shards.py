"""The embed stage over N shards: N ``embed_shard`` stages (the model forward) and a cheap merge.

Shard ``i`` embeds a contiguous slice of the image rows and a contiguous slice of the distinct prompts
(first-appearance order, as :func:`tasks.embed.embed`). Slice boundaries fall on multiples of the
batch size, so each batch the model sees is a batch the unsharded stage sees too: the merged tables
are the unsharded ones, row for row and bit for bit, even where a row's result could depend on the
size of its batch. The merge stacks the shards in order and writes them as the ``embed`` stage under
its unsharded key (see :mod:`tasks.shards`).

:mod:`tasks.embed` itself is left untouched: its source is part of its cache key.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import data.images
import data.schemas
import data.validate
import tasks.embed
import tasks.shards
from data.validate import reject_rows
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.embed import EMBED, ClipEncoder, ClipSpec, _vectors, embed_images, load_clip
from tasks.prefect_stage import stage_task
from tasks.shards import Shard, check_cover, concat_tables, cover, finished_output, merged_stats

EMBED_SHARD = Stage(
    "embed_shard",
    1,
    (sys.modules[__name__], tasks.embed, tasks.shards, data.validate, data.images, data.schemas),
)
TEXT = "text"
DEFAULT_CLIP = ClipSpec()
#: The ratings columns the embed stage reads.
COLUMNS = ["image_id", "prompt_id", "prompt", "image_uri", "source_file", "source_row"]
#: The slices a shard records: image rows and distinct prompts.
AXES = ("rows", "prompts")
#: ``load_clip`` seeds torch's global generator to draw random weights: shards running in threads of
#: one process load the model one at a time, so that each draws the weights the seed promises.
_load_lock = threading.Lock()


def clip_params(clip: ClipSpec) -> dict[str, Any]:
    """The embed stage's key parameters (those of :func:`tasks.embed.embed`: the device is left out)."""
    return {key: value for key, value in asdict(clip).items() if key != "device"}


def _encode_texts(encoder: ClipEncoder, texts: list[str], *, batch_size: int, width: int) -> np.ndarray:
    batches = [
        encoder.encode_text(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, width), dtype=np.float32)


def embed_shard(
    ratings_path: str | Path,
    shard: int,
    shards: int,
    *,
    clip: ClipSpec = DEFAULT_CLIP,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: embed shard ``shard`` of ``shards`` of the ratings' images (main table) and distinct
    prompts (table ``text``); undecodable images go to ``rejects`` as in the unsharded stage."""
    part = Shard(shard, shards)

    def compute() -> StageOutput:
        ratings = pl.read_parquet(ratings_path, columns=COLUMNS)
        every_prompt = ratings.select("prompt_id", "prompt").unique(
            "prompt_id", keep="first", maintain_order=True
        )
        row_start, row_stop = part.bounds(ratings.height, align=clip.batch_size)
        prompt_start, prompt_stop = part.bounds(every_prompt.height, align=clip.batch_size)
        rows = ratings.slice(row_start, row_stop - row_start)
        prompts = every_prompt.slice(prompt_start, prompt_stop - prompt_start)
        with _load_lock:
            encoder = load_clip(clip)
        dimension = int(encoder.model.visual.output_dim)
        # The unsharded stage's text table is 0 wide only when there is no prompt at all.
        text_vectors = _encode_texts(
            encoder,
            prompts["prompt"].to_list(),
            batch_size=clip.batch_size,
            width=dimension if every_prompt.height else 0,
        )
        image_vectors, failures = embed_images(
            encoder, rows["image_uri"].to_list(), batch_size=clip.batch_size
        )
        failed = pl.Series([index in failures for index in range(rows.height)], dtype=pl.Boolean)
        kept = rows.filter(~failed)
        rejects = reject_rows(
            rows.filter(failed).with_columns(
                pl.Series("reason", [failures[i] for i in sorted(failures)], dtype=pl.String)
            ),
            stage="embed",
            field="image_uri",
            reason=pl.col("reason"),
        )
        return StageOutput(
            tables={
                MAIN: kept.select("image_id", "prompt_id").with_columns(_vectors("embedding", image_vectors)),
                TEXT: prompts.with_columns(_vectors("embedding", text_vectors)),
                REJECTS: rejects,
            },
            rows_in=rows.height,
            rows_kept=kept.height,
            stats={
                **part.params(),
                "rows": cover(row_start, row_stop, ratings.height),
                "prompts": cover(prompt_start, prompt_stop, every_prompt.height),
                "dimension": int(image_vectors.shape[1]) if image_vectors.size else 0,
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
    clip: ClipSpec = DEFAULT_CLIP,
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

    return run_stage(
        EMBED, params=clip_params(clip), inputs={"ratings": ratings_path}, compute=compute, root=root
    )


def finished_embed(
    ratings_path: str | Path, *, clip: ClipSpec = DEFAULT_CLIP, root: str | Path | None = None
) -> StageResult | None:
    """The finished ``embed`` output for these ratings and model, sharded or not, if there is one."""
    return finished_output(EMBED, params=clip_params(clip), inputs={"ratings": ratings_path}, root=root)


embed_shard_task = stage_task(embed_shard, name="embed-shard")
merge_embed_task = stage_task(merge_embed_shards, name="embed-merge")
