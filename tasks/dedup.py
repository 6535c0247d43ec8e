"""Dedup stage: drop training prompts that are near-duplicates of benchmark captions.

Distance is rapidfuzz's normalized Levenshtein distance (edits / length of the longer string, 0 =
identical) between prompts normalized by :func:`normalize_prompt`. A prompt is removed when its distance
to the nearest benchmark caption is at or under ``threshold``; every image row of a removed prompt goes
to the rejects table, and the removed prompts are reported with their nearest caption and distance.

``DEFAULT_THRESHOLD = 0.1`` allows about one edit in ten characters: it catches case, punctuation and
one-word variants of a caption (a 60-character caption with one word swapped is ~0.08 away) while
unrelated prompts sharing a template stay well above it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

import data.schemas
import data.validate
from data.validate import reject_rows
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

DEFAULT_THRESHOLD = 0.1
#: The table of removed prompts, each with its nearest benchmark caption and distance.
REMOVED = "removed"
DEDUP = Stage("dedup", 1, (sys.modules[__name__], data.validate, data.schemas))
_WHITESPACE = re.compile(r"\s+")

REMOVED_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "prompt": pl.String(),
    "nearest_caption": pl.String(),
    "distance": pl.Float32(),
    "images_removed": pl.UInt32(),
}


def normalize_prompt(text: str) -> str:
    """Case-fold, collapse runs of whitespace and trim: formatting alone never hides a duplicate."""
    return _WHITESPACE.sub(" ", text.casefold()).strip()


@dataclass(frozen=True)
class Nearest:
    """For each query: the index of its nearest choice (-1 when none is within the cutoff) and the
    distance (1.0 when none is within the cutoff)."""

    index: np.ndarray
    distance: np.ndarray


def admissible_lengths(length: int, cutoff: float) -> tuple[float, float]:
    """Lengths a string may have and still be within ``cutoff`` of a string of ``length``: the edit
    distance is at least the length difference, so ``|a - b| <= cutoff * max(a, b)`` is necessary.
    One character of slack on each side keeps float rounding on the safe side."""
    if cutoff >= 1.0:
        return -np.inf, np.inf
    return length * (1.0 - cutoff) - 1.0, length / (1.0 - cutoff) + 1.0


def nearest_within(
    queries: list[str], choices: list[str], *, cutoff: float, chunk_rows: int = 4096, workers: int = -1
) -> Nearest:
    """Nearest choice of every query by normalized Levenshtein distance (ties: the lowest choice index),
    computed in C++ by ``rapidfuzz.process.cdist``. Distances above ``cutoff`` are not computed exactly
    (they read as 1.0).

    Two exact shortcuts keep the all-pairs work down: identical queries are computed once, and each
    query is compared only with the choices whose length could be within ``cutoff`` of its own (see
    :func:`admissible_lengths`; with the default cutoff 0.1, about 40% of the pairs of the demo corpus'
    templated prompts, fewer for prompts of more varied length). Memory is bounded by
    ``chunk_rows x len(choices)`` floats."""
    index = np.full(len(queries), -1, dtype=np.int64)
    distance = np.ones(len(queries), dtype=np.float32)
    if not queries or not choices:
        return Nearest(index, distance)
    position: dict[str, int] = {}
    inverse = np.fromiter(
        (position.setdefault(query, len(position)) for query in queries), dtype=np.int64, count=len(queries)
    )
    unique = list(position)
    unique_index = np.full(len(unique), -1, dtype=np.int64)
    unique_distance = np.ones(len(unique), dtype=np.float32)
    query_lengths = np.fromiter((len(query) for query in unique), dtype=np.int64, count=len(unique))
    choice_lengths = np.fromiter((len(choice) for choice in choices), dtype=np.int64, count=len(choices))
    by_length = np.argsort(choice_lengths, kind="stable")
    sorted_lengths = choice_lengths[by_length]
    for length in np.unique(query_lengths):
        low, high = admissible_lengths(int(length), cutoff)
        first = np.searchsorted(sorted_lengths, low, side="left")
        last = np.searchsorted(sorted_lengths, high, side="right")
        if first >= last:
            continue
        columns = np.sort(by_length[first:last])  # ascending choice index: argmin keeps the lowest
        window = [choices[column] for column in columns]
        rows = np.flatnonzero(query_lengths == length)
        for start in range(0, len(rows), chunk_rows):
            chunk = rows[start : start + chunk_rows]
            block = process.cdist(
                [unique[row] for row in chunk],
                window,
                scorer=Levenshtein.normalized_distance,
                score_cutoff=cutoff,
                dtype=np.float32,
                workers=workers,
            )
            best = block.argmin(axis=1)
            best_distance = block[np.arange(block.shape[0]), best]
            within = best_distance <= cutoff
            unique_index[chunk] = np.where(within, columns[best], -1)
            unique_distance[chunk] = np.where(within, best_distance, 1.0)
    return Nearest(unique_index[inverse], unique_distance[inverse])


def dedup_against_benchmark(
    ratings: pl.DataFrame, captions: list[str], *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split ``ratings`` into (kept rows, removed-prompt report, rejected rows)."""
    prompts = ratings.select("prompt_id", "prompt").unique("prompt_id", keep="first", maintain_order=True)
    normalized_captions = sorted({normalize_prompt(caption) for caption in captions if caption})
    nearest = nearest_within(
        [normalize_prompt(prompt) for prompt in prompts["prompt"].to_list()],
        normalized_captions,
        cutoff=threshold,
    )
    hit = nearest.index >= 0
    image_counts = ratings.group_by("prompt_id").len("images_removed")
    removed = (
        prompts.filter(pl.Series(hit))
        .with_columns(
            pl.Series(
                "nearest_caption", [normalized_captions[i] for i in nearest.index[hit]], dtype=pl.String
            ),
            pl.Series("distance", nearest.distance[hit], dtype=pl.Float32),
        )
        .join(image_counts, on="prompt_id", how="left")
        .select(list(REMOVED_SCHEMA))
        .cast(REMOVED_SCHEMA)
    )
    is_removed = pl.col("prompt_id").is_in(removed["prompt_id"].implode())
    kept = ratings.filter(~is_removed)
    rejects = reject_rows(
        ratings.filter(is_removed).join(
            removed.select("prompt_id", "nearest_caption", "distance"), on="prompt_id", how="left"
        ),
        stage="dedup",
        field="prompt",
        reason=pl.format(
            "prompt near-duplicate of benchmark caption (normalized Levenshtein {} <= {}): {}",
            pl.col("distance").round(4),
            pl.lit(threshold),
            pl.col("nearest_caption").str.slice(0, 120),
        ),
    )
    return kept, removed, rejects


def check_threshold(threshold: float) -> None:
    """A ValueError unless ``threshold`` is a normalized distance in [0, 1)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"dedup threshold must be in [0, 1), got {threshold}")


def benchmark_captions(benchmark_path: str | Path) -> list[str]:
    """The distinct captions of a benchmark table (what the dedup stage compares prompts with)."""
    return pl.read_parquet(benchmark_path, columns=["caption"])["caption"].unique().to_list()


def dedup_key(ratings_path: str | Path, benchmark_path: str | Path, threshold: float) -> dict[str, Any]:
    """The dedup stage's parameters and inputs: what keys its output (sharded or not)."""
    return {
        "params": {"threshold": threshold},
        "inputs": {"ratings": ratings_path, "benchmark": benchmark_path},
    }


def dedup_output(
    ratings: pl.DataFrame, searched: Sequence[str], *, threshold: float, benchmark_size: int
) -> StageOutput:
    """The dedup stage's tables and stats: ``ratings`` against the captions ``searched`` (all of the
    benchmark's ``benchmark_size`` distinct captions, or the subset a sharded search found near)."""
    kept, removed, rejects = dedup_against_benchmark(ratings, searched, threshold=threshold)
    return StageOutput(
        tables={MAIN: kept, REMOVED: removed, REJECTS: rejects},
        rows_in=ratings.height,
        rows_kept=kept.height,
        stats={
            "prompts_removed": removed.height,
            "exact_duplicates": int((removed["distance"] == 0).sum()),
            "benchmark_captions": benchmark_size,
        },
    )


def dedup(
    ratings_path: str | Path,
    benchmark_path: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: remove training prompts near-duplicating a caption of the benchmark table."""
    check_threshold(threshold)

    def compute() -> StageOutput:
        captions = benchmark_captions(benchmark_path)
        ratings = pl.read_parquet(ratings_path)
        return dedup_output(ratings, captions, threshold=threshold, benchmark_size=len(captions))

    return run_stage(DEDUP, **dedup_key(ratings_path, benchmark_path, threshold), compute=compute, root=root)


dedup_task = stage_task(dedup, name="dedup")
