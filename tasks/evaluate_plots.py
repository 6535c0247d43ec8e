"""Plots of an evaluation (matplotlib, Agg canvas, no pyplot state) and the stage that saves them.

- one score-difference histogram per scorer over the MJ-Bench benchmarks: ``score(preferred image) -
  score(other image)`` on the pairs humans did not tie, one panel per benchmark (right of 0 = correct);
- one accuracy-per-category bar chart per MJ-Bench benchmark: accuracy with ties per category and
  overall, one bar per scorer.

``eval_plots`` writes ``ARTIFACTS/eval_plots/<key>/*.png`` (a folder renamed into place) and a table of
the plots (``<key>.parquet``: name, title, benchmark, path), keyed by the score and metrics tables.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

import reward.benchmarks
from reward.benchmarks import get_benchmark
from reward.evaluation import PAIRS
from reward.metrics import OVERALL
from tasks.cache import MAIN, Produced, Stage, StageResult, atomic_write_parquet, run_keyed
from tasks.prefect_stage import stage_task

EVAL_PLOTS = Stage("eval_plots", 1, (sys.modules[__name__], reward.benchmarks))
DPI = 90
PLOTS_SCHEMA = {"name": pl.String, "title": pl.String, "benchmark": pl.String, "path": pl.String}


@dataclass(frozen=True)
class Plot:
    """One rendered plot: its file name, title, the benchmark it shows (None: several) and PNG bytes."""

    name: str
    title: str
    benchmark: str | None
    png: bytes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "plot"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def preference_margins(scores: pl.DataFrame) -> np.ndarray:
    """``score(preferred) - score(other)`` of every pair humans did not tie (label 0 or 1)."""
    decided = scores.filter(pl.col("label").is_not_null())
    preferred = np.where(decided["label"].to_numpy() == 1, decided["score1"], decided["score0"])
    other = np.where(decided["label"].to_numpy() == 1, decided["score0"], decided["score1"])
    return preferred - other


def score_difference_histogram(scorer: str, tables: Mapping[str, pl.DataFrame]) -> bytes:
    """One panel per benchmark title of ``tables`` (that scorer's score tables)."""
    figure = Figure(figsize=(4.0 * len(tables), 3.2), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    for axis, (title, scores) in zip(axes, tables.items(), strict=True):
        margins = preference_margins(scores)
        axis.hist(margins, bins=min(30, max(5, len(margins) // 3)), color="tab:blue", alpha=0.8)
        axis.axvline(0.0, color="black", linewidth=1)
        correct = float(np.mean(margins > 0)) if len(margins) else float("nan")
        axis.set_title(f"{title}\n{len(margins)} pairs, {correct:.0%} > 0", fontsize=9)
        axis.set_xlabel("score(preferred) - score(other)", fontsize=8)
    axes[0].set_ylabel("pairs")
    figure.suptitle(f"{scorer}: score differences on MJ-Bench", fontsize=10)
    return _png(figure)


def category_accuracy_chart(title: str, metrics: pl.DataFrame) -> bytes:
    """Accuracy with ties per category (and overall) of one benchmark, one bar per scorer."""
    rows = metrics.filter(pl.col("level").is_in(["category", OVERALL]))
    categories = rows["category"].unique(maintain_order=True).to_list()
    categories = [c for c in categories if c != OVERALL] + [OVERALL]
    scorers = rows["scorer"].unique(maintain_order=True).to_list()
    width = 0.8 / len(scorers)
    figure = Figure(figsize=(max(4.0, 0.9 * len(categories) * max(1, len(scorers)) ** 0.5 + 1.5), 3.4))
    axis = figure.subplots()
    positions = np.arange(len(categories))
    for offset, scorer in enumerate(scorers):
        values = dict(
            rows.filter(pl.col("scorer") == scorer).select("category", "accuracy_with_tie").iter_rows()
        )
        heights = [values.get(category, np.nan) for category in categories]
        axis.bar(positions + (offset - (len(scorers) - 1) / 2) * width, heights, width, label=scorer)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xticks(
        positions, [str(category) for category in categories], rotation=30, ha="right", fontsize=8
    )
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy (ties count as wrong)")
    axis.set_title(f"{title}: accuracy per category", fontsize=10)
    axis.legend(fontsize=8)
    figure.set_layout_engine("constrained")
    return _png(figure)


def render_plots(scores: Sequence[pl.DataFrame], metrics: Sequence[pl.DataFrame]) -> list[Plot]:
    """Every plot of the pairwise (MJ-Bench) benchmarks among the given score and metrics tables."""

    def pairwise(tables: Sequence[pl.DataFrame]) -> list[pl.DataFrame]:
        return [t for t in tables if t.height and get_benchmark(t["benchmark"][0]).kind == PAIRS]

    plots = []
    by_scorer: dict[str, dict[str, pl.DataFrame]] = {}
    for table in pairwise(scores):
        by_scorer.setdefault(table["scorer"][0], {})[get_benchmark(table["benchmark"][0]).title] = table
    for scorer, tables in by_scorer.items():
        png = score_difference_histogram(scorer, tables)
        plots.append(
            Plot(f"score-differences-{_slug(scorer)}.png", f"{scorer}: score differences", None, png)
        )
    merged = pl.concat(pairwise(metrics), how="diagonal") if pairwise(metrics) else None
    for benchmark in [] if merged is None else merged["benchmark"].unique(maintain_order=True).to_list():
        title = get_benchmark(benchmark).title
        png = category_accuracy_chart(title, merged.filter(pl.col("benchmark") == benchmark))
        plots.append(Plot(f"accuracy-{benchmark}.png", f"{title}: accuracy per category", benchmark, png))
    return plots


def evaluation_plots(
    scores_paths: Sequence[str | Path], metrics_paths: Sequence[str | Path], *, root: str | Path | None = None
) -> StageResult:
    """Stage: render and save the plots (main table: one row per PNG, ``png``: the folder)."""

    def produce(directory: Path, key: str, _fingerprints: dict[str, Any]) -> Produced:
        plots = render_plots(
            [pl.read_parquet(path) for path in scores_paths],
            [pl.read_parquet(path) for path in metrics_paths],
        )
        folder, staging = directory / key, directory / f"{key}.tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for plot in plots:
                (staging / plot.name).write_bytes(plot.png)
            if folder.exists():  # an earlier run renamed its folder but died before its manifest
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        table = pl.DataFrame(
            [(p.name, p.title, p.benchmark, str(folder / p.name)) for p in plots],
            schema=PLOTS_SCHEMA,
            orient="row",
        )
        atomic_write_parquet(table, directory / f"{key}.parquet")
        count = len(scores_paths) + len(metrics_paths)
        outputs = {
            MAIN: {"path": str(directory / f"{key}.parquet"), "rows": table.height},
            "png": {"path": str(folder), "rows": table.height},
        }
        return Produced(
            outputs, rows_in=count, rows_kept=count, rows_rejected=0, stats={"plots": table.height}
        )

    inputs = {"scores": [str(p) for p in scores_paths], "metrics": [str(p) for p in metrics_paths]}
    return run_keyed(EVAL_PLOTS, params={"dpi": DPI}, inputs=inputs, produce=produce, root=root)


evaluation_plots_task = stage_task(evaluation_plots, name="eval-plots")
