"""Ingest stages: a published dataset on disk → a validated normalized table (+ its rejects)."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

import data.images
import data.readers
import data.schemas
import data.validate
from data.validate import ImageCheck
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

_CODE = (sys.modules[__name__], data.readers, data.validate, data.schemas, data.images)
INGEST_RATINGS = Stage("ingest_ratings", 1, _CODE)
INGEST_BENCHMARK = Stage("ingest_benchmark", 1, _CODE)
INGEST_SAFETY = Stage("ingest_safety", 1, _CODE)


def _combine(read_rejects: pl.DataFrame, rejects: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([read_rejects, rejects]).sort("source_file", "source_row", nulls_last=True)


def _rows_in(read: data.readers.ReadResult) -> int:
    """Rows entering validation: the normalized rows read plus the reader's rejects. (One source record
    can give several rows: a ``test.json`` item gives one per image; ``source_records`` counts records.)"""
    return read.table.height + read.rejects.height


def _inputs(path: str | Path, image_root: str | Path | None) -> dict[str, str | Path | None]:
    return {"dataset": path, "image_root": image_root}


def ingest_ratings(
    path: str | Path,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    image_check: ImageCheck = "header",
    rating_range: tuple[float, float] = (1.0, 7.0),
    root: str | Path | None = None,
) -> StageResult:
    """Read ImageRewardDB-style ratings (published layout, HF Parquet shards or ``test.json``),
    validate every row and quarantine the bad ones."""

    def compute() -> StageOutput:
        read = data.readers.read_imagereward(path, split=split, image_root=image_root)
        valid, rejects = data.validate.validate_ratings(
            read.table, rating_range=rating_range, image_check=image_check
        )
        return StageOutput(
            tables={MAIN: valid, REJECTS: _combine(read.rejects, rejects)},
            rows_in=_rows_in(read),
            rows_kept=valid.height,
            stats={"prompts": valid["prompt_id"].n_unique(), "source_records": read.rows_in},
        )

    params = {"split": split, "image_check": image_check, "rating_range": list(rating_range)}
    return run_stage(
        INGEST_RATINGS, params=params, inputs=_inputs(path, image_root), compute=compute, root=root
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

    def compute() -> StageOutput:
        read = data.readers.read_mjbench(path, subsets=subsets, image_root=image_root)
        valid, rejects = data.validate.validate_benchmark_pairs(read.table, image_check=image_check)
        return StageOutput(
            tables={MAIN: valid, REJECTS: _combine(read.rejects, rejects)},
            rows_in=_rows_in(read),
            rows_kept=valid.height,
            stats={"captions": valid["caption"].n_unique()},
        )

    params = {"subsets": sorted(subsets) if subsets else None, "image_check": image_check}
    return run_stage(
        INGEST_BENCHMARK, params=params, inputs=_inputs(path, image_root), compute=compute, root=root
    )


def ingest_safety(
    path: str | Path,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    image_check: ImageCheck = "header",
    root: str | Path | None = None,
) -> StageResult:
    """Read UnsafeBench-style unpaired rows (HF Parquet or the LLaVA-Reward JSON) with binary labels."""

    def compute() -> StageOutput:
        read = data.readers.read_unsafebench(path, split=split, image_root=image_root)
        valid, rejects = data.validate.validate_safety(read.table, image_check=image_check)
        return StageOutput(
            tables={MAIN: valid, REJECTS: _combine(read.rejects, rejects)},
            rows_in=_rows_in(read),
            rows_kept=valid.height,
            stats={"safe": int((valid["label"] == 1).sum()), "unsafe": int((valid["label"] == 0).sum())},
        )

    params = {"split": split, "image_check": image_check}
    return run_stage(
        INGEST_SAFETY, params=params, inputs=_inputs(path, image_root), compute=compute, root=root
    )


ingest_ratings_task = stage_task(ingest_ratings, name="ingest-ratings")
ingest_benchmark_task = stage_task(ingest_benchmark, name="ingest-benchmark")
ingest_safety_task = stage_task(ingest_safety, name="ingest-safety")
