"""The evaluation benchmarks: how each is read, which kind of table it gives, and its metrics.

=====================  ========  ==================================================================
name                   kind      metrics (:mod:`reward.metrics`)
=====================  ========  ==================================================================
mjbench-alignment      pairs     accuracy with / without ties, overall, per subset and per category
mjbench-quality        pairs     (same)
mjbench-safety         pairs     (same)
tifa160                ratings   Pearson, Kendall tau-b, tie-calibrated pairwise accuracy
unsafebench-test       safety    F1, accuracy, precision, recall at sigmoid(score) >= threshold
smid                   safety    (same)
unsafe-diffusion       safety    (same; the authors' 40% test hold-out)
=====================  ========  ==================================================================

Safety labels are 1 = safe, 0 = unsafe; the binary decision is "safe" when ``sigmoid(score) >=
threshold``, which assumes the score is the logit of P(safe) — true for a safety perspective trained
with cross-entropy, not for a preference reward or CLIPScore (CLIPScore >= 0 always predicts "safe").
The positive class of F1 / precision / recall is stated in every metrics row (default ``unsafe``, as
Unsafe Diffusion's detectors output 1 for unsafe). Binary safety metrics do not fit a scorer whose
score is not that logit (:func:`not_applicable`): the Table-1 summary shows them as n/a.

Every reported metric ``m`` has ``m_n`` (the items it is computed over) and ``m_low`` / ``m_high``
(its 95% interval: Wilson for accuracies, precision and recall; a seeded percentile bootstrap over
items for correlations and F1, :class:`MetricOptions`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from data.images import SEPARATOR
from data.readers import (
    ReadResult,
    read_mjbench,
    read_smid,
    read_tifa,
    read_unsafe_diffusion,
    read_unsafebench,
)
from data.readers.common import FolderIndex
from data.schemas import REJECTS_SCHEMA
from data.validate import reject_rows, validate_benchmark_pairs, validate_safety
from reward.evaluation import PAIRS, RATINGS, SAFETY, BenchmarkKind, EvaluationError
from reward.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    OVERALL,
    Estimate,
    PairwiseAccuracy,
    SafetyClass,
    correlation_intervals,
    correlation_metrics,
    pairwise_accuracy_by_group,
    pairwise_accuracy_intervals,
    safety_binary_metrics,
    safety_intervals,
)

STAGE = "eval_benchmark"
TIFA_FILE = "human_annotations.json"


@dataclass(frozen=True)
class BenchmarkTable:
    """A benchmark read for evaluation: its rows, the rejected ones, and the rows read in total."""

    table: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def rows_in(self) -> int:
        return self.table.height + self.rejects.height


Reader = Callable[[Path, Path | None], BenchmarkTable]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: ``name`` (flow parameter), ``kind`` of table, ``title`` (table columns), the
    demo corpus folder holding a copy (None: no demo copy) and its reader."""

    name: str
    kind: BenchmarkKind
    title: str
    demo_dataset: str | None
    read: Reader


def _validated(result: ReadResult, validate: Callable) -> BenchmarkTable:
    valid, rejects = validate(result.table, image_check="none", stage=STAGE)
    return BenchmarkTable(valid, pl.concat([result.rejects, rejects]))


def _mjbench(subset: str) -> Reader:
    def read(path: Path, image_root: Path | None) -> BenchmarkTable:
        return _validated(
            read_mjbench(path, subsets=[subset], image_root=image_root), validate_benchmark_pairs
        )

    return read


def _tifa(path: Path, image_root: Path | None) -> BenchmarkTable:
    result = read_tifa(path / TIFA_FILE if path.is_dir() else path, image_root=image_root)
    unscored = result.table["human_avg"].is_null()
    rejects = reject_rows(
        result.table.filter(unscored),
        stage=STAGE,
        field="human_avg",
        reason="no human score (a prompt listing such as tifa160.json cannot be evaluated)",
        id_column="item_id",
    )
    return BenchmarkTable(result.table.filter(~unscored), pl.concat([result.rejects, rejects]))


def _unsafebench(path: Path, image_root: Path | None) -> BenchmarkTable:
    return _validated(read_unsafebench(path, split="test", image_root=image_root), validate_safety)


def _smid(path: Path, image_root: Path | None) -> BenchmarkTable:
    return _validated(read_smid(path, image_root=image_root), validate_safety)


def _unsafe_diffusion(path: Path, image_root: Path | None) -> BenchmarkTable:
    result = read_unsafe_diffusion(path, image_root=image_root)
    train = result.table["split"] != "test"
    held_out = reject_rows(
        result.table.filter(train),
        stage=STAGE,
        field="split",
        reason="in the train split: the evaluation uses the authors' 40% test hold-out",
        id_column="item_id",
    )
    checked = _validated(ReadResult(result.table.filter(~train), result.rejects), validate_safety)
    return BenchmarkTable(checked.table, pl.concat([checked.rejects, held_out]))


BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark("mjbench-alignment", PAIRS, "MJ-Bench alignment", "mjbench", _mjbench("alignment")),
        Benchmark("mjbench-quality", PAIRS, "MJ-Bench quality", "mjbench", _mjbench("quality")),
        Benchmark("mjbench-safety", PAIRS, "MJ-Bench safety", "mjbench", _mjbench("safety")),
        Benchmark("tifa160", RATINGS, "TIFA160", "tifa160", _tifa),
        Benchmark("unsafebench-test", SAFETY, "UnsafeBench test", "unsafebench", _unsafebench),
        Benchmark("smid", SAFETY, "SMID", None, _smid),
        Benchmark("unsafe-diffusion", SAFETY, "Unsafe Diffusion", None, _unsafe_diffusion),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; the error lists the known names."""
    if name not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def read_benchmark(name: str, path: str | Path, *, image_root: str | Path | None = None) -> BenchmarkTable:
    """Read benchmark ``name`` from ``path`` (its published layout), validated, with every dropped row
    in ``rejects`` (REJECTS_SCHEMA); a row whose image file is not there is one of them (reason
    ``image not found: <path>``), found here, before anything is scored."""
    benchmark = get_benchmark(name)
    root = Path(image_root).expanduser().resolve() if image_root is not None else None
    result = benchmark.read(Path(path).expanduser().resolve(), root)
    return reject_missing_images(BenchmarkTable(result.table, result.rejects.cast(REJECTS_SCHEMA)))


MISSING_IMAGE = "image not found"


def missing_image_paths(table: pl.DataFrame) -> dict[str, list[str]]:
    """``{uri column: [missing image files]}``: the files (a zip or Parquet container for a member)
    that the table's image references name and that do not exist; each folder is listed once."""
    index = FolderIndex()
    missing: dict[str, list[str]] = {}
    for column in [name for name in table.columns if name.endswith("_uri")]:
        files = {uri: uri.split(SEPARATOR, 1)[0] for uri in table[column].drop_nulls().unique().to_list()}
        absent = sorted(uri for uri, file in files.items() if not index.contains(Path(file)))
        if absent:
            missing[column] = absent
    return missing


def reject_missing_images(read: BenchmarkTable) -> BenchmarkTable:
    """``read`` with the rows whose image is missing moved to the rejects (one reject per row)."""
    missing = missing_image_paths(read.table)
    if not missing:
        return read
    table = read.table.with_row_index("__row")
    problems: dict[int, list[tuple[str, str]]] = {}
    for column, uris in missing.items():
        rows = table.filter(pl.col(column).is_in(pl.Series(uris, dtype=pl.String).implode()))
        for row, uri in rows.select("__row", column).iter_rows():
            problems.setdefault(row, []).append((column, uri))
    bad = table.filter(pl.col("__row").is_in(pl.Series(list(problems), dtype=pl.UInt32).implode()))
    rejects = pl.DataFrame(
        [
            {
                "stage": STAGE,
                "source_file": row["source_file"],
                "source_row": row["source_row"],
                "record_id": row["item_id"],
                "field": ",".join(column for column, _ in problems[row["__row"]]),
                "reason": "; ".join(
                    f"{column}: {MISSING_IMAGE}: {uri}" for column, uri in problems[row["__row"]]
                ),
            }
            for row in bad.iter_rows(named=True)
        ],
        schema=REJECTS_SCHEMA,
    )
    kept = table.filter(~pl.col("__row").is_in(bad["__row"].implode())).drop("__row")
    return BenchmarkTable(kept, pl.concat([read.rejects, rejects], how="vertical"))


# --------------------------------------------------------------------------------------------
# Metrics of scored benchmark tables


@dataclass(frozen=True)
class MetricOptions:
    """Decision rules: the MJ-Bench tie threshold on |s0 - s1|, and the safety positive class and
    probability threshold (``sigmoid(score) >= safety_threshold`` is "safe"); the resamples and seed
    of the bootstrap intervals (correlations, F1)."""

    tie_threshold: float = 0.0
    positive_class: SafetyClass = "unsafe"
    safety_threshold: float = 0.5
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    bootstrap_seed: int = BOOTSTRAP_SEED


#: Suffixes of the columns that go with every reported metric ``m``: ``m_n`` (items the metric is
#: computed over), ``m_low`` / ``m_high`` (its 95% interval).
N_SUFFIX, LOW_SUFFIX, HIGH_SUFFIX = "_n", "_low", "_high"


def estimate_columns(estimates: dict[str, Estimate]) -> dict[str, float | int]:
    """``{m_n, m_low, m_high}`` of every metric ``m`` of ``estimates``."""
    columns: dict[str, float | int] = {}
    for metric, estimate in estimates.items():
        columns |= {
            f"{metric}{N_SUFFIX}": estimate.n,
            f"{metric}{LOW_SUFFIX}": estimate.low,
            f"{metric}{HIGH_SUFFIX}": estimate.high,
        }
    return columns


def with_accuracy_intervals(table: pl.DataFrame) -> pl.DataFrame:
    """A pairwise accuracy table (:func:`pairwise_accuracy_by_group` columns) with the Wilson
    interval columns of both accuracies, row by row."""
    fields = ("accuracy_with_tie", "accuracy_without_tie", "n_pairs", "n_human_ties", "n_model_ties")
    rows = [
        estimate_columns(
            pairwise_accuracy_intervals(PairwiseAccuracy(**{f: row[f] for f in fields}, n_correct=correct))
        )
        for row, correct in zip(table.select(fields).iter_rows(named=True), table["n_correct"], strict=True)
    ]
    schema = {
        f"{m}{suffix}": pl.Int64 if suffix == N_SUFFIX else pl.Float64
        for m in ("accuracy_with_tie", "accuracy_without_tie")
        for suffix in (N_SUFFIX, LOW_SUFFIX, HIGH_SUFFIX)
    }
    return pl.concat([table, pl.DataFrame(rows, schema=schema)], how="horizontal")


#: Level of a pairwise-accuracy row: all pairs, one subset, or one (subset, category).
LEVELS = (OVERALL, "subset", "category")


def pairs_metrics(scores: pl.DataFrame, *, tie_threshold: float = 0.0) -> pl.DataFrame:
    """MJ-Bench accuracy per (subset, category), per subset, and over all pairs (``level``), each
    with its n and Wilson interval (:func:`with_accuracy_intervals`)."""
    by_category = pairwise_accuracy_by_group(scores, by=("subset", "category"), threshold=tie_threshold)
    by_subset = pairwise_accuracy_by_group(scores, by="subset", threshold=tie_threshold)
    level = pl.when(pl.col("subset") == OVERALL).then(pl.lit(OVERALL))
    table = pl.concat(
        [
            by_category.with_columns(level.otherwise(pl.lit("category")).alias("level")),
            by_subset.filter(pl.col("subset") != OVERALL).with_columns(
                pl.lit("subset").alias("level"), pl.lit(None, dtype=pl.String).alias("category")
            ),
        ],
        how="diagonal",
    ).select("level", "subset", "category", pl.exclude("level", "subset", "category"))
    return with_accuracy_intervals(table)


def benchmark_metrics(
    kind: BenchmarkKind, scores: pl.DataFrame, options: MetricOptions = MetricOptions()
) -> pl.DataFrame:
    """The metrics table of a scored benchmark table (columns as :func:`score_table` writes them);
    every reported metric ``m`` comes with ``m_n``, ``m_low`` and ``m_high`` (its 95% interval)."""
    if scores.is_empty():
        raise EvaluationError("no scored rows to compute metrics on")
    if kind == PAIRS:
        return pairs_metrics(scores, tie_threshold=options.tie_threshold)
    boot = {"n_resamples": options.bootstrap_resamples, "seed": options.bootstrap_seed}
    if kind == RATINGS:
        point = correlation_metrics(scores["human_avg"], scores["score"])
        intervals = correlation_intervals(scores["human_avg"], scores["score"], **boot)
        return pl.DataFrame([asdict(point) | estimate_columns(intervals)])
    if kind == SAFETY:
        rule = {"positive_class": options.positive_class, "threshold": options.safety_threshold}
        metrics = safety_binary_metrics(scores["score"], scores["label"], **rule)
        intervals = safety_intervals(scores["score"], scores["label"], **rule, **boot)
        return pl.DataFrame([asdict(metrics) | estimate_columns(intervals)])
    raise EvaluationError(f"unknown benchmark kind {kind!r}")


@dataclass(frozen=True)
class Headline:
    """One number of the Table-1 summary: the metrics column it comes from and its label."""

    column: str
    label: str


HEADLINES: dict[str, tuple[Headline, ...]] = {
    PAIRS: (Headline("accuracy_with_tie", "acc w/ tie"), Headline("accuracy_without_tie", "acc w/o tie")),
    RATINGS: (
        Headline("pearson", "Pearson"),
        Headline("kendall_tau_b", "Kendall tau-b"),
        Headline("pairwise_accuracy", "pairwise acc (tie-calibrated)"),
    ),
    SAFETY: (Headline("f1", "F1"), Headline("accuracy", "accuracy")),
}


def headline_values(kind: BenchmarkKind, metrics: pl.DataFrame) -> list[tuple[Headline, float]]:
    """The Table-1 numbers of a metrics table: the overall row for MJ-Bench, the only row otherwise.
    Safety labels name the positive class (``F1 (unsafe = positive)``)."""
    row = metrics.filter(pl.col("level") == OVERALL) if kind == PAIRS else metrics
    if row.height != 1:
        raise EvaluationError(f"expected one summary row in the {kind} metrics, got {row.height}")
    values = row.row(0, named=True)
    headlines = kind_headlines(kind, values.get("positive_class"))
    return [(headline, float(values[headline.column])) for headline in headlines]


def kind_headlines(kind: BenchmarkKind, positive_class: str | None = None) -> tuple[Headline, ...]:
    """The Table-1 numbers of a kind of benchmark; a safety F1 names its positive class."""
    if kind != SAFETY:
        return HEADLINES[kind]
    return tuple(
        Headline(h.column, f"{h.label} ({positive_class} = positive)") if h.column == "f1" else h
        for h in HEADLINES[kind]
    )


def headline_estimates(kind: BenchmarkKind, metrics: pl.DataFrame) -> list[tuple[Headline, Estimate]]:
    """:func:`headline_values` with each number's n and 95% interval (NaN / -1 n when the metrics
    table predates the interval columns)."""
    row = (metrics.filter(pl.col("level") == OVERALL) if kind == PAIRS else metrics).row(0, named=True)
    nan = float("nan")
    return [
        (
            headline,
            Estimate(
                value,
                int(row.get(f"{headline.column}{N_SUFFIX}", -1)),
                float(row.get(f"{headline.column}{LOW_SUFFIX}", nan)),
                float(row.get(f"{headline.column}{HIGH_SUFFIX}", nan)),
            ),
        )
        for headline, value in headline_values(kind, metrics)
    ]


#: Why binary safety metrics do not fit a scorer whose score is not the logit of P(safe).
NOT_A_SAFETY_LOGIT = (
    "not applicable: the safety metrics read the score as the logit of P(safe), which only a model "
    "trained with cross-entropy on safety labels gives"
)


def not_applicable(kind: BenchmarkKind, safety_logit: bool) -> str | None:
    """Why a benchmark of ``kind`` does not fit a scorer (None: it fits). ``safety_logit``: the
    scorer's score is the logit of P(safe) (a reward model with the ``ce`` loss)."""
    return NOT_A_SAFETY_LOGIT if kind == SAFETY and not safety_logit else None


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkTable",
    "HEADLINES",
    "Headline",
    "LEVELS",
    "MetricOptions",
    "benchmark_metrics",
    "get_benchmark",
    "headline_estimates",
    "headline_values",
    "kind_headlines",
    "not_applicable",
    "pairs_metrics",
    "read_benchmark",
]
