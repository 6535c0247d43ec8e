"""Ratings stage: pick the perspective's rating as one ``score`` column (higher is better).

| perspective | column                        | score        |
|-------------|-------------------------------|--------------|
| alignment   | image_text_alignment_rating   | the rating   |
| fidelity    | fidelity_rating               | the rating   |
| overall     | overall_rating                | the rating   |
| ranking     | rank (lower is better)        | minus rank   |

Rows without a value for the perspective are rejected with the column named.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import polars as pl

import data.schemas
import data.validate
from data.validate import reject_rows
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

Perspective = Literal["alignment", "fidelity", "overall", "ranking"]
PERSPECTIVE_COLUMNS: dict[str, tuple[str, int]] = {
    "alignment": ("image_text_alignment_rating", 1),
    "fidelity": ("fidelity_rating", 1),
    "overall": ("overall_rating", 1),
    "ranking": ("rank", -1),
}
RATINGS = Stage("ratings", 1, (sys.modules[__name__], data.validate, data.schemas))


def score_perspective(ratings: pl.DataFrame, perspective: Perspective) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with a ``score`` column for ``perspective``, rejected rows lacking that rating)."""
    if perspective not in PERSPECTIVE_COLUMNS:
        raise ValueError(f"unknown perspective {perspective!r}; choose one of {sorted(PERSPECTIVE_COLUMNS)}")
    column, sign = PERSPECTIVE_COLUMNS[perspective]
    value = pl.col(column).cast(pl.Float32)
    missing = value.is_null() | value.is_nan()
    scored = ratings.filter(~missing).with_columns((value * sign).alias("score"))
    rejects = reject_rows(
        ratings.filter(missing),
        stage="ratings",
        field=column,
        reason=f"no {column} for the {perspective} perspective",
    )
    return scored, rejects


def ratings(
    ratings_path: str | Path, *, perspective: Perspective, root: str | Path | None = None
) -> StageResult:
    """Stage: add the perspective's ``score`` to every rating row that has it."""

    def compute() -> StageOutput:
        table = pl.read_parquet(ratings_path)
        scored, rejects = score_perspective(table, perspective)
        return StageOutput(
            tables={MAIN: scored, REJECTS: rejects}, rows_in=table.height, rows_kept=scored.height
        )

    return run_stage(
        RATINGS,
        params={"perspective": perspective},
        inputs={"ratings": ratings_path},
        compute=compute,
        root=root,
    )


ratings_task = stage_task(ratings, name="ratings")
