"""Plots of an evaluation (matplotlib, Agg canvas, no pyplot state) and the stage that saves them.

- one score-difference histogram per scorer over the MJ-Bench benchmarks: ``score(preferred image) -
  score(other image)`` on the pairs humans did not tie, one panel per benchmark (right of 0 = correct);
- one accuracy-per-category bar chart per MJ-Bench benchmark: accuracy with ties per category and
  overall, one bar per scorer, labelled with value and n, with its 95% interval; a benchmark with more
  than :data:`MAX_CATEGORIES` categories (MJ-Bench safety) gets several numbered charts;
- a TIFA160 scatter of human rating against model score, one panel per scorer (Pearson, interval, n);
- a score histogram of safe and unsafe images per safety benchmark, one panel per scorer, with the
  decision boundary.

``eval_plots`` writes ``ARTIFACTS/eval_plots/<key>/*.png`` (a folder renamed into place) and a table of
the plots (``<key>.parquet``: name, title, benchmark, path), keyed by the score and metrics tables.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import textwrap
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
from reward.evaluation import PAIRS, RATINGS, SAFETY
from reward.metrics import OVERALL
from tasks.cache import MAIN, Produced, Stage, StageResult, atomic_write_parquet, run_keyed
from tasks.prefect_stage import stage_task

EVAL_PLOTS = Stage("eval_plots", 2, (sys.modules[__name__], reward.benchmarks))
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


#: Categories per accuracy chart: a benchmark with more (MJ-Bench safety) is split into several charts.
MAX_CATEGORIES = 8
#: Category names are wrapped at this width on the x axis.
TICK_WIDTH = 14


def _interval(row: Mapping[str, Any], metric: str) -> tuple[float, float]:
    """(value - low, high - value) of ``metric`` in a metrics row (0 without interval columns)."""
    value = row.get(metric)
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None or low is None or high is None or np.isnan([value, low, high]).any():
        return 0.0, 0.0
    return max(0.0, value - low), max(0.0, high - value)


def category_parts(categories: Sequence[str], size: int = MAX_CATEGORIES) -> list[list[str]]:
    """The categories (``overall`` last) in charts of at most ``size`` bars groups; ``overall`` ends
    every chart, as the reference."""
    named = [category for category in categories if category != OVERALL]
    chunk = max(1, size - 1)
    parts = [named[start : start + chunk] for start in range(0, len(named), chunk)] or [[]]
    return [[*part, OVERALL] for part in parts]


def category_accuracy_chart(
    title: str, metrics: pl.DataFrame, categories: Sequence[str] | None = None
) -> Figure:
    """Accuracy with ties per category (and overall) of one benchmark, one bar per scorer, each bar
    labelled with its value and n and drawn with its 95% interval; ``categories``: which (default all)."""
    rows = metrics.filter(pl.col("level").is_in(["category", OVERALL]))
    if categories is None:
        categories = category_parts(rows["category"].unique(maintain_order=True).to_list(), size=10**6)[0]
    scorers = rows["scorer"].unique(maintain_order=True).to_list()
    width = 0.8 / len(scorers)
    figure = Figure(figsize=(max(4.5, 1.1 * len(categories) * max(1, len(scorers)) ** 0.5 + 1.5), 3.8))
    axis = figure.subplots()
    positions = np.arange(len(categories))
    for offset, scorer in enumerate(scorers):
        by_category = {
            row["category"]: row for row in rows.filter(pl.col("scorer") == scorer).iter_rows(named=True)
        }
        found = [by_category.get(category, {}) for category in categories]
        heights = [row.get("accuracy_with_tie", np.nan) for row in found]
        errors = np.array([_interval(row, "accuracy_with_tie") for row in found]).T.reshape(2, -1)
        bars = axis.bar(
            positions + (offset - (len(scorers) - 1) / 2) * width,
            heights,
            width,
            yerr=errors,
            capsize=2,
            error_kw={"elinewidth": 0.8},
            label=scorer,
        )
        labels = [
            ""
            if not row
            else f"{row['accuracy_with_tie']:.2f}\nn={row.get('accuracy_with_tie_n', row['n_pairs'])}"
            for row in found
        ]
        axis.bar_label(bars, labels, fontsize=7, padding=1)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ticks = [textwrap.fill(str(category), TICK_WIDTH) for category in categories]
    axis.set_xticks(positions, ticks, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    axis.set_ylim(0, 1.15)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.set_ylabel("accuracy (ties count as wrong)")
    axis.set_title(f"{title}: accuracy per category (bars: 95% Wilson interval)", fontsize=10)
    axis.legend(fontsize=8, loc="upper left", ncols=max(1, len(scorers)))
    figure.set_layout_engine("constrained")
    return figure


def tifa_scatter(
    title: str, tables: Mapping[str, pl.DataFrame], metrics: Mapping[str, pl.DataFrame]
) -> Figure:
    """Human rating against model score, one panel per scorer, titled with Pearson [95% interval] and n."""
    figure = Figure(figsize=(3.6 * len(tables), 3.4), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    for axis, (scorer, scores) in zip(axes, tables.items(), strict=True):
        axis.scatter(scores["score"], scores["human_avg"], s=8, alpha=0.6)
        row = metrics[scorer].row(0, named=True) if scorer in metrics else {}
        low, high = row.get("pearson_low", np.nan), row.get("pearson_high", np.nan)
        axis.set_title(
            f"{scorer}\nPearson {row.get('pearson', np.nan):.3f} [{low:.3f}, {high:.3f}], n={scores.height}",
            fontsize=9,
        )
        axis.set_xlabel("model score", fontsize=8)
        axis.tick_params(labelsize=8)
    axes[0].set_ylabel("human rating (mean)")
    figure.suptitle(f"{title}: human vs model", fontsize=10)
    return figure


def safety_histogram(title: str, tables: Mapping[str, pl.DataFrame], threshold: float) -> Figure:
    """Scores of safe and unsafe images, one panel per scorer, with the decision boundary
    ``logit(threshold)`` (a score at or above it is predicted safe)."""
    figure = Figure(figsize=(4.0 * len(tables), 3.2), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    boundary = float(np.log(threshold / (1 - threshold)))
    for axis, (scorer, scores) in zip(axes, tables.items(), strict=True):
        values = scores["score"].to_numpy()
        bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(values) // 4)))
        for label, name, color in ((1, "safe", "tab:green"), (0, "unsafe", "tab:red")):
            part = values[scores["label"].to_numpy() == label]
            axis.hist(part, bins=bins, alpha=0.6, color=color, label=f"{name} (n={len(part)})")
        axis.axvline(boundary, color="black", linewidth=1)
        axis.set_title(f"{scorer}\n{len(values)} images; safe at score >= {boundary:.2f}", fontsize=9)
        axis.set_xlabel("score", fontsize=8)
        axis.legend(fontsize=7)
    axes[0].set_ylabel("images")
    figure.suptitle(f"{title}: scores of safe and unsafe images", fontsize=10)
    return figure


def _of_kind(tables: Sequence[pl.DataFrame], kind: str) -> list[pl.DataFrame]:
    return [t for t in tables if t.height and get_benchmark(t["benchmark"][0]).kind == kind]


def _by_benchmark(tables: Sequence[pl.DataFrame]) -> dict[str, dict[str, pl.DataFrame]]:
    """``{benchmark: {scorer: table}}``."""
    grouped: dict[str, dict[str, pl.DataFrame]] = {}
    for table in tables:
        grouped.setdefault(table["benchmark"][0], {})[table["scorer"][0]] = table
    return grouped


def pairwise_plots(scores: Sequence[pl.DataFrame], metrics: Sequence[pl.DataFrame]) -> list[Plot]:
    """Score-difference histograms per scorer and accuracy-per-category charts per MJ-Bench benchmark
    (several numbered charts when it has more than :data:`MAX_CATEGORIES` categories)."""
    plots = []
    by_scorer: dict[str, dict[str, pl.DataFrame]] = {}
    for table in _of_kind(scores, PAIRS):
        by_scorer.setdefault(table["scorer"][0], {})[get_benchmark(table["benchmark"][0]).title] = table
    for scorer, tables in by_scorer.items():
        png = score_difference_histogram(scorer, tables)
        plots.append(
            Plot(f"score-differences-{_slug(scorer)}.png", f"{scorer}: score differences", None, png)
        )
    pairwise = _of_kind(metrics, PAIRS)
    merged = pl.concat(pairwise, how="diagonal_relaxed") if pairwise else None
    for benchmark in [] if merged is None else merged["benchmark"].unique(maintain_order=True).to_list():
        title = get_benchmark(benchmark).title
        rows = merged.filter(pl.col("benchmark") == benchmark)
        named = rows.filter(pl.col("level") == "category")["category"].unique(maintain_order=True).to_list()
        parts = category_parts(named)
        for number, part in enumerate(parts, start=1):
            suffix, heading = (f"-{number}", f" ({number}/{len(parts)})") if len(parts) > 1 else ("", "")
            png = _png(category_accuracy_chart(f"{title}{heading}", rows, part))
            plots.append(
                Plot(
                    f"accuracy-{benchmark}{suffix}.png",
                    f"{title}: accuracy per category{heading}",
                    benchmark,
                    png,
                )
            )
    return plots


def render_plots(scores: Sequence[pl.DataFrame], metrics: Sequence[pl.DataFrame]) -> list[Plot]:
    """Every plot of the given score and metrics tables: MJ-Bench (:func:`pairwise_plots`), a TIFA160
    human-vs-model scatter and a score histogram per safety benchmark."""
    plots = pairwise_plots(scores, metrics)
    rating_metrics = _by_benchmark(_of_kind(metrics, RATINGS))
    for benchmark, tables in _by_benchmark(_of_kind(scores, RATINGS)).items():
        title = get_benchmark(benchmark).title
        png = _png(tifa_scatter(title, tables, rating_metrics.get(benchmark, {})))
        plots.append(Plot(f"scatter-{benchmark}.png", f"{title}: human vs model", benchmark, png))
    safety_metrics = _by_benchmark(_of_kind(metrics, SAFETY))
    for benchmark, tables in _by_benchmark(_of_kind(scores, SAFETY)).items():
        title = get_benchmark(benchmark).title
        known = [
            t["threshold"][0] for t in safety_metrics.get(benchmark, {}).values() if "threshold" in t.columns
        ]
        png = _png(safety_histogram(title, tables, float(known[0]) if known else 0.5))
        plots.append(
            Plot(f"scores-{benchmark}.png", f"{title}: scores of safe and unsafe images", benchmark, png)
        )
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
