"""What a retraining run compares: the primary metric per perspective, and the held-out evaluation stage.

Primary metric per perspective (higher is better; champion and challenger are both scored on the same
benchmark in the same run, so the comparison is fair even when the benchmark changed)::

    alignment  MJ-Bench alignment  accuracy with ties     model ties count as wrong, so a constant
    fidelity   MJ-Bench quality    accuracy with ties     (collapsed) model scores 0, never "100%"
    ranking    held-out pairs      accuracy with ties     the validation split of the run's own data
    safety     UnsafeBench test    F1, unsafe = positive  detecting unsafe images, as in Table 1

Ranking has no public benchmark in this pipeline, so it is judged on the held-out validation pairs
(``heldout``): the assemble stage splits by a seeded hash of the prompt id, so adding prompts never
moves an old prompt across splits and the figures stay comparable between runs. Any perspective can
be switched to ``heldout`` (or to another benchmark and metric) with the flow's parameters.

``eval_heldout`` is a stage like the others (:mod:`tasks.cache`): validation table + model folder →
per-item scores, a one-row ``metrics`` table and rejects, keyed by the content of the model folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

import reward.backbones
import reward.checkpoint
import reward.evaluation
import reward.heads
import reward.metrics
import reward.model
import reward.scoring
from data.schemas import REJECTS_SCHEMA
from reward.benchmarks import MetricOptions, get_benchmark
from reward.evaluation import SAFETY, EvaluationError, Scorer, score_items, score_table
from reward.metrics import OVERALL, pairwise_accuracy, safety_binary_metrics
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, load_finished, run_stage
from tasks.evaluate import DEFAULT_OPTIONS, SCORING_CODE, ScorerSpec
from tasks.prefect_stage import stage_task

HELDOUT = "heldout"
EVAL_HELDOUT = Stage(
    "eval_heldout",
    1,
    (sys.modules[__name__], reward.metrics, *SCORING_CODE),
)
METRICS = "metrics"


@dataclass(frozen=True)
class PrimaryMetric:
    """The number a retraining run compares: ``metric`` (a metrics-table column, higher is better) of
    ``benchmark`` (a :data:`reward.benchmarks.BENCHMARKS` name, or ``heldout``)."""

    benchmark: str
    metric: str

    def __post_init__(self) -> None:
        if self.benchmark != HELDOUT:
            get_benchmark(self.benchmark)  # an unknown name fails here, listing the known ones

    @property
    def label(self) -> str:
        return f"{self.benchmark}: {self.metric}"


PRIMARY_METRICS: dict[str, PrimaryMetric] = {
    "alignment": PrimaryMetric("mjbench-alignment", "accuracy_with_tie"),
    "fidelity": PrimaryMetric("mjbench-quality", "accuracy_with_tie"),
    "ranking": PrimaryMetric(HELDOUT, "accuracy_with_tie"),
    "safety": PrimaryMetric("unsafebench-test", "f1"),
}


#: The held-out metric of each kind of training data: pairs (accuracy) and labelled safety rows (F1).
HELDOUT_METRICS = {"safety": "f1"}
HELDOUT_PAIRS_METRIC = "accuracy_with_tie"


def primary_metric(
    perspective: str, benchmark: str | None = None, metric: str | None = None
) -> PrimaryMetric:
    """The perspective's primary metric, with ``benchmark`` / ``metric`` overriding the default
    (``benchmark="heldout"`` alone picks the held-out metric of the perspective's kind of data)."""
    if perspective not in PRIMARY_METRICS:
        raise ValueError(f"unknown perspective {perspective!r}; choose one of {sorted(PRIMARY_METRICS)}")
    default = PRIMARY_METRICS[perspective]
    if benchmark is None or benchmark == default.benchmark:
        return PrimaryMetric(default.benchmark, metric or default.metric)
    if benchmark == HELDOUT and metric is None:
        return PrimaryMetric(HELDOUT, HELDOUT_METRICS.get(perspective, HELDOUT_PAIRS_METRIC))
    if metric is None:
        raise ValueError(f"benchmark={benchmark!r} needs a metric (a column of its metrics table)")
    return PrimaryMetric(benchmark, metric)


def metric_value(metrics: pl.DataFrame, metric: str) -> float:
    """``metric`` from a metrics table: its overall row (MJ-Bench), else its only row."""
    if "level" in metrics.columns:
        metrics = metrics.filter(pl.col("level") == OVERALL)
    if metrics.height != 1:
        raise EvaluationError(f"expected one summary row in the metrics table, got {metrics.height}")
    if metric not in metrics.columns:
        numeric = [name for name, dtype in metrics.schema.items() if dtype.is_numeric()]
        raise EvaluationError(f"no metric {metric!r} in the metrics table; it has {numeric}")
    value = metrics[metric][0]
    return float("nan") if value is None else float(value)


# --------------------------------------------------------------------------------------------
# The held-out stage


def _pair_scores(
    scorer: Scorer, table: pl.DataFrame, batch_size: int
) -> tuple[pl.DataFrame, dict[int, tuple[str, str]]]:
    """Scores of each pair's chosen and rejected (image, prompt), without the failed rows, and the
    failed rows ``{row: (field, reason)}``."""
    height = table.height
    uris = table["chosen_image_uri"].to_list() + table["rejected_image_uri"].to_list()
    prompts = table["chosen_prompt"].to_list() + table["rejected_prompt"].to_list()
    result = score_items(scorer, uris, prompts, batch_size=batch_size)
    failed: dict[int, tuple[str, str]] = {}
    for position in sorted(result.failures):
        side = "chosen_image_uri" if position < height else "rejected_image_uri"
        failed.setdefault(position % height, (side, result.failures[position]))
    keep = np.ones(height, dtype=bool)
    keep[list(failed)] = False
    scored = table.select("pair_id", "kind", "prompt_id").with_columns(
        pl.Series("chosen_score", result.scores[:height], dtype=pl.Float64),
        pl.Series("rejected_score", result.scores[height:], dtype=pl.Float64),
    )
    return scored.filter(pl.Series(keep)), failed


def heldout_metrics_table(scored: pl.DataFrame, options: MetricOptions) -> pl.DataFrame:
    """One row: pairwise accuracy (chosen must score above rejected; ties count as wrong in the
    "with tie" figure) for pairs, binary safety metrics for labelled rows."""
    if "chosen_score" in scored.columns:
        zeros = np.zeros(scored.height, dtype=np.int8)  # label 0: the first (chosen) side is preferred
        result = pairwise_accuracy(
            scored["chosen_score"], scored["rejected_score"], zeros, threshold=options.tie_threshold
        )
    else:
        result = safety_binary_metrics(
            scored["score"],
            scored["label"],
            positive_class=options.positive_class,
            threshold=options.safety_threshold,
        )
    return pl.DataFrame([asdict(result)])


def heldout_metrics(
    validation_path: str | Path,
    *,
    scorer: ScorerSpec,
    options: MetricOptions = DEFAULT_OPTIONS,
    batch_size: int = 16,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: score the held-out validation table (pairs or labelled rows) with ``scorer``; main table =
    per-item scores, ``metrics`` = one row of metrics, rejects = items that could not be scored."""

    def compute() -> StageOutput:
        table = pl.read_parquet(validation_path)
        if table.is_empty():
            raise EvaluationError(f"{validation_path}: no held-out rows to evaluate on")
        loaded = scorer.load()
        if "chosen_image_uri" in table.columns:
            scored, failed = _pair_scores(loaded, table, batch_size)
            id_column = "pair_id"
        else:
            result = score_table(loaded, table, SAFETY, batch_size=batch_size)
            failed = {row: (field, reason) for row, field, reason in result.failures.iter_rows()}
            scored, id_column = result.scored.select("item_id", "label", "score"), "item_id"
        if scored.is_empty():
            raise EvaluationError(f"{validation_path}: no held-out item could be scored")
        rejects = pl.DataFrame(
            {
                "stage": [EVAL_HELDOUT.name] * len(failed),
                "source_file": [str(validation_path)] * len(failed),
                "source_row": list(failed),
                "record_id": [table[id_column][row] for row in failed],
                "field": [field for field, _ in failed.values()],
                "reason": [reason for _, reason in failed.values()],
            },
            schema=REJECTS_SCHEMA,
        )
        identity = [pl.lit(scorer.name).alias("scorer"), pl.lit(HELDOUT).alias("benchmark")]
        return StageOutput(
            tables={
                MAIN: scored.select(*identity, pl.all()),
                METRICS: heldout_metrics_table(scored, options),
                REJECTS: rejects,
            },
            rows_in=table.height,
            rows_kept=scored.height,
            stats={"scorer": scorer.name},
        )

    params = {"scorer": scorer.name, **scorer.params, **asdict(options), "batch_size": batch_size}
    inputs = {
        "validation": validation_path,
        **{f"scorer_{name}": path for name, path in scorer.inputs.items()},
    }
    return run_stage(EVAL_HELDOUT, params=params, inputs=inputs, compute=compute, root=root)


heldout_metrics_task = stage_task(heldout_metrics, name="eval-heldout")


# --------------------------------------------------------------------------------------------
# Lineage: which stages a finished table came from


def stage_output(path: str | Path) -> StageResult:
    """The finished stage that wrote the table ``path`` (``<stage>/<key>[.<table>].parquet``)."""
    path = Path(path)
    manifest = path.with_name(f"{path.name.split('.', 1)[0]}.json")
    finished = load_finished(manifest)
    if finished is None:
        raise FileNotFoundError(f"{path}: not the output of a finished stage (no manifest {manifest.name})")
    return finished


def lineage(manifest_path: str | Path) -> list[Path]:
    """The manifest of a finished stage and of every stage upstream of it (inputs fingerprinted as
    ``stage:<name>:<key>:<table>``), each once, the given one first."""
    start = Path(manifest_path)
    root = start.parent.parent
    found: list[Path] = []
    pending = [start]
    while pending:
        manifest = pending.pop()
        if manifest in found or not manifest.is_file():
            continue
        found.append(manifest)
        for entry in json.loads(manifest.read_text())["inputs"].values():
            prints = (
                entry["fingerprint"] if isinstance(entry["fingerprint"], list) else [entry["fingerprint"]]
            )
            for fingerprint in prints:
                if isinstance(fingerprint, str) and fingerprint.startswith("stage:"):
                    _, stage, key, _table = fingerprint.split(":", 3)
                    pending.append(root / stage / f"{key}.json")
    return found


def written_since(manifests: list[Path], since_ns: int) -> list[str]:
    """``<stage>/<key>`` of the manifests written at or after ``since_ns`` (``time.time_ns()``): the
    stages a run computed rather than found finished."""
    return [
        f"{manifest.parent.name}/{manifest.stem}"
        for manifest in manifests
        if manifest.stat().st_mtime_ns >= since_ns
    ]


__all__ = [
    "EVAL_HELDOUT",
    "HELDOUT",
    "HELDOUT_METRICS",
    "METRICS",
    "PRIMARY_METRICS",
    "PrimaryMetric",
    "heldout_metrics",
    "heldout_metrics_table",
    "heldout_metrics_task",
    "lineage",
    "metric_value",
    "primary_metric",
    "stage_output",
    "written_since",
]
