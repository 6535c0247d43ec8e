"""Ingest stages: a published dataset on disk → a validated normalized table (+ its rejects)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

import data.images
import data.readers
import data.schemas
import data.validate
from data.readers import ReadResult
from data.validate import ImageCheck
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

_CODE = (sys.modules[__name__], data.readers, data.validate, data.schemas, data.images)
INGEST_RATINGS = Stage("ingest_ratings", 1, _CODE)
INGEST_BENCHMARK = Stage("ingest_benchmark", 1, _CODE)
INGEST_SAFETY = Stage("ingest_safety", 1, _CODE)

Validator = Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]


def _ingest(
    stage: Stage,
    *,
    read: Callable[[], ReadResult],
    validate: Validator,
    stats: Callable[[pl.DataFrame], dict[str, Any]],
    path: str | Path,
    image_root: str | Path | None,
    params: dict[str, Any],
    root: str | Path | None,
) -> StageResult:
    """Read, validate, and write the valid rows with every reader and validation reject.

    Rows in = the normalized rows read + the reader's rejects (one source record can give several
    rows: a ``test.json`` item gives one per image; ``source_records`` counts records)."""

    def compute() -> StageOutput:
        result = read()
        valid, rejects = validate(result.table)
        combined = pl.concat([result.rejects, rejects]).sort("source_file", "source_row", nulls_last=True)
        return StageOutput(
            tables={MAIN: valid, REJECTS: combined},
            rows_in=result.table.height + result.rejects.height,
            rows_kept=valid.height,
            stats={**stats(valid), "source_records": result.rows_in},
        )

    inputs = {"dataset": path, "image_root": image_root}
    return run_stage(stage, params=params, inputs=inputs, compute=compute, root=root)


def ingest_ratings(
    path: str | Path,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    image_check: ImageCheck = "decode",
    rating_range: tuple[float, float] = (1.0, 7.0),
    root: str | Path | None = None,
) -> StageResult:
    """Read ImageRewardDB-style ratings (published layout, HF Parquet shards or ``test.json``),
    validate every row and quarantine the bad ones."""
    return _ingest(
        INGEST_RATINGS,
        read=lambda: data.readers.read_imagereward(path, split=split, image_root=image_root),
        validate=lambda table: data.validate.validate_ratings(
            table, rating_range=rating_range, image_check=image_check
        ),
        stats=lambda valid: {"prompts": valid["prompt_id"].n_unique()},
        path=path,
        image_root=image_root,
        params={"split": split, "image_check": image_check, "rating_range": list(rating_range)},
        root=root,
    )


def ingest_benchmark(
    path: str | Path,
    *,
    subsets: list[str] | None = None,
    image_root: str | Path | None = None,
    image_check: ImageCheck = "none",
    root: str | Path | None = None,
) -> StageResult:
    """Read an MJ-Bench benchmark (HF Parquet or the pre-release JSON) into normalized pairs."""
    return _ingest(
        INGEST_BENCHMARK,
        read=lambda: data.readers.read_mjbench(path, subsets=subsets, image_root=image_root),
        validate=lambda table: data.validate.validate_benchmark_pairs(table, image_check=image_check),
        stats=lambda valid: {"captions": valid["caption"].n_unique()},
        path=path,
        image_root=image_root,
        params={"subsets": sorted(subsets) if subsets else None, "image_check": image_check},
        root=root,
    )


def ingest_safety(
    path: str | Path,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    image_check: ImageCheck = "decode",
    root: str | Path | None = None,
) -> StageResult:
    """Read UnsafeBench-style unpaired rows (HF Parquet or the LLaVA-Reward JSON) with binary labels."""
    return _ingest(
        INGEST_SAFETY,
        read=lambda: data.readers.read_unsafebench(path, split=split, image_root=image_root),
        validate=lambda table: data.validate.validate_safety(table, image_check=image_check),
        stats=lambda valid: {
            "safe": int((valid["label"] == 1).sum()),
            "unsafe": int((valid["label"] == 0).sum()),
        },
        path=path,
        image_root=image_root,
        params={"split": split, "image_check": image_check},
        root=root,
    )


ingest_ratings_task = stage_task(ingest_ratings, name="ingest-ratings")
ingest_benchmark_task = stage_task(ingest_benchmark, name="ingest-benchmark")
ingest_safety_task = stage_task(ingest_safety, name="ingest-safety")
