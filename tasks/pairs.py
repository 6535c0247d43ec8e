"""Pairs stage: scored images → preference pairs within each prompt.

Every unordered pair of images of a prompt is a combination; equal scores are ties, excluded from
Bradley-Terry pairs and counted. The higher score is chosen (ImageReward's own rule with ranks: lower
rank wins, equal ranks are skipped). An image that ends up in no pair (its prompt has one image, or all
its comparisons are ties) is rejected with that reason, so images in = images paired + rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

import data.schemas
import data.validate
from data.schemas import PAIRS_SCHEMA
from data.validate import reject_rows
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

PAIRS = Stage("pairs", 1, (sys.modules[__name__], data.validate, data.schemas))
_SIDE_COLUMNS = ("_position", "image_id", "image_uri", "score", "prompt")


def _side(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
    return frame.select(
        "prompt_id", *[pl.col(column).alias(f"{column}_{suffix}") for column in _SIDE_COLUMNS]
    )


def preference_pairs(scored: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(pairs in PAIRS_SCHEMA, rejected images, counts of combinations / ties / pairs)."""
    indexed = scored.with_columns(pl.int_range(pl.len()).over("prompt_id").alias("_position"))
    left, right = _side(indexed, "a"), _side(indexed, "b")
    combinations = left.join(right, on="prompt_id").filter(pl.col("_position_a") < pl.col("_position_b"))
    tied = combinations["score_a"] == combinations["score_b"]
    decided = combinations.filter(~tied)
    a_wins = pl.col("score_a") > pl.col("score_b")

    def pick(column: str, *, chosen: bool) -> pl.Expr:
        winner, loser = pl.col(f"{column}_a"), pl.col(f"{column}_b")
        return pl.when(a_wins).then(winner if chosen else loser).otherwise(loser if chosen else winner)

    pairs = decided.select(
        pl.format(
            "{}:{}>{}", "prompt_id", pick("image_id", chosen=True), pick("image_id", chosen=False)
        ).alias("pair_id"),
        pl.lit("rating").alias("kind"),
        "prompt_id",
        pick("prompt", chosen=True).alias("chosen_prompt"),
        pick("image_id", chosen=True).alias("chosen_image_id"),
        pick("image_uri", chosen=True).alias("chosen_image_uri"),
        pick("prompt", chosen=False).alias("rejected_prompt"),
        pick("image_id", chosen=False).alias("rejected_image_id"),
        pick("image_uri", chosen=False).alias("rejected_image_uri"),
        pick("score", chosen=True).alias("chosen_score"),
        pick("score", chosen=False).alias("rejected_score"),
    ).cast(PAIRS_SCHEMA)
    paired_ids = pl.concat([pairs["chosen_image_id"], pairs["rejected_image_id"]]).unique()
    unpaired = scored.filter(~pl.col("image_id").is_in(paired_ids.implode()))
    rejects = reject_rows(
        unpaired.with_columns(pl.len().over("prompt_id").alias("_images")),
        stage="pairs",
        field="score",
        reason=pl.when(pl.col("_images") == 1)
        .then(pl.lit("the only image of its prompt: nothing to compare with"))
        .otherwise(pl.lit("tied with every other image of its prompt")),
    )
    counts = {"combinations": combinations.height, "ties": int(tied.sum()), "pairs": pairs.height}
    return pairs, rejects, counts


def pairs(scored_path: str | Path, *, root: str | Path | None = None) -> StageResult:
    """Stage: all non-tied image pairs within each prompt."""

    def compute() -> StageOutput:
        scored = pl.read_parquet(scored_path)
        table, rejects, counts = preference_pairs(scored)
        return StageOutput(
            tables={MAIN: table, REJECTS: rejects},
            rows_in=scored.height,
            rows_kept=scored.height - rejects.height,
            stats=counts,
        )

    return run_stage(PAIRS, params={}, inputs={"scored": scored_path}, compute=compute, root=root)


pairs_task = stage_task(pairs, name="pairs")
