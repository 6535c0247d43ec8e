"""The evaluation plots (issue #11 case 17): value and n labels with 95% intervals on the per-category
bars, readable ticks, a wide benchmark split into several charts, a TIFA160 scatter and a safety score
histogram; each checked on the matplotlib figure against numbers computed here."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image
from scipy import stats

from reward.benchmarks import MetricOptions, benchmark_metrics, pairs_metrics
from reward.metrics import wilson_interval
from tasks.evaluate_plots import (
    MAX_CATEGORIES,
    category_accuracy_chart,
    category_parts,
    render_plots,
    safety_histogram,
    tifa_scatter,
)

pytestmark = pytest.mark.hostile_case(17)

OPTIONS = MetricOptions(bootstrap_resamples=100)


def identified(table: pl.DataFrame, scorer: str, benchmark: str) -> pl.DataFrame:
    return table.select(pl.lit(scorer).alias("scorer"), pl.lit(benchmark).alias("benchmark"), pl.all())


def pair_scores(categories: int, per_category: int = 6, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = categories * per_category
    return pl.DataFrame(
        {
            "subset": ["safety"] * n,
            "category": [f"category number {i // per_category:02d}" for i in range(n)],
            "score0": rng.normal(size=n),
            "score1": rng.normal(size=n),
            "label": pl.Series(rng.integers(0, 2, n), dtype=pl.Int8),
        }
    )


def test_category_parts_end_with_overall_and_cover_every_category() -> None:
    names = [f"c{i}" for i in range(12)]
    parts = category_parts(names)
    assert [len(part) for part in parts] == [MAX_CATEGORIES, 12 - (MAX_CATEGORIES - 1) + 1]
    assert all(part[-1] == "overall" for part in parts)
    assert [c for part in parts for c in part if c != "overall"] == names
    assert category_parts(["a", "b"]) == [["a", "b", "overall"]]


def test_category_bars_are_labelled_with_value_and_n_and_carry_the_interval() -> None:
    scores = pair_scores(3, per_category=8)
    metrics = identified(pairs_metrics(scores), "model", "mjbench-safety")
    figure = category_accuracy_chart("MJ-Bench safety", metrics)
    axis = figure.axes[0]
    labels = [text.get_text() for text in axis.texts]
    expected = []
    for row in metrics.filter(pl.col("level").is_in(["category", "overall"])).iter_rows(named=True):
        expected.append(f"{row['n_correct'] / row['n_pairs']:.2f}\nn={row['n_pairs']}")
    assert labels == expected  # no human ties: n = pairs, accuracy = correct / pairs
    ticks = [tick.get_text() for tick in axis.get_xticklabels()]
    assert ticks == ["category\nnumber 00", "category\nnumber 01", "category\nnumber 02", "overall"]
    # error bars: the Wilson interval of the overall accuracy
    overall = metrics.filter(pl.col("level") == "overall").row(0, named=True)
    low, high = wilson_interval(overall["n_correct"], overall["n_pairs"])
    segments = [line.get_segments() for line in axis.collections if hasattr(line, "get_segments")]
    spans = [(seg[0][1], seg[1][1]) for group in segments for seg in group]
    assert any(a == pytest.approx(low) and b == pytest.approx(high) for a, b in spans)


def test_a_wide_benchmark_is_split_and_other_kinds_get_their_plots() -> None:
    pairs = pair_scores(12)
    pair_metrics = identified(pairs_metrics(pairs), "model", "mjbench-safety")
    rng = np.random.default_rng(1)
    human = rng.normal(size=20)
    ratings = pl.DataFrame({"human_avg": human, "score": human + rng.normal(size=20)})
    safety = pl.DataFrame(
        {"score": rng.normal(size=30), "label": pl.Series(rng.integers(0, 2, 30), dtype=pl.Int8)}
    )
    scores = [
        identified(pairs, "model", "mjbench-safety"),
        identified(ratings, "model", "tifa160"),
        identified(safety, "model", "unsafebench-test"),
    ]
    metrics = [
        pair_metrics,
        identified(benchmark_metrics("ratings", ratings, OPTIONS), "model", "tifa160"),
        identified(benchmark_metrics("safety", safety, OPTIONS), "model", "unsafebench-test"),
    ]
    plots = render_plots(scores, metrics)
    assert [plot.name for plot in plots] == [
        "score-differences-model.png",
        "accuracy-mjbench-safety-1.png",
        "accuracy-mjbench-safety-2.png",
        "scatter-tifa160.png",
        "scores-unsafebench-test.png",
    ]
    assert plots[1].title == "MJ-Bench safety: accuracy per category (1/2)"
    for plot in plots:
        with Image.open(io.BytesIO(plot.png)) as png:
            assert png.format == "PNG" and png.width > 200


def test_tifa_scatter_and_safety_histogram_show_their_numbers() -> None:
    rng = np.random.default_rng(2)
    human = rng.normal(size=25)
    ratings = pl.DataFrame({"human_avg": human, "score": human + rng.normal(size=25)})
    metrics = benchmark_metrics("ratings", ratings, OPTIONS)
    figure = tifa_scatter("TIFA160", {"model": ratings}, {"model": metrics})
    title = figure.axes[0].get_title()
    pearson = stats.pearsonr(ratings["human_avg"], ratings["score"]).statistic
    assert f"Pearson {pearson:.3f} [{metrics['pearson_low'][0]:.3f}, " in title and title.endswith("n=25")
    offsets = figure.axes[0].collections[0].get_offsets()
    assert np.allclose(offsets[:, 0], ratings["score"]) and np.allclose(offsets[:, 1], human)

    labels = pl.Series([1] * 7 + [0] * 5, dtype=pl.Int8)
    safety = pl.DataFrame({"score": np.linspace(-2, 2, 12), "label": labels})
    axis = safety_histogram("UnsafeBench test", {"model": safety}, 0.5).axes[0]
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["safe (n=7)", "unsafe (n=5)"]
    assert axis.lines[0].get_xdata()[0] == pytest.approx(0.0)  # logit(0.5): the decision boundary
    assert "12 images" in axis.get_title()
