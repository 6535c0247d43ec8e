"""Evaluation stages: read a benchmark, score it with a scorer, compute its metrics, summarize.

- ``eval_benchmark``: a benchmark in its published layout → its normalized table (+ rejects).
- ``eval_scores``: a benchmark table + a scorer → per-item scores (+ the items that could not be
  scored). The key covers the scorer's identity: for a reward model the content of its folder and of a
  local base-model folder; for CLIPScore the open_clip model, weights and settings.
- ``eval_metrics``: per-item scores → the benchmark's metrics (:mod:`reward.benchmarks`).
- ``eval_table``: every metrics table → the Table-1 summary (long, and ``wide``: one row per scorer).

Plots are in :mod:`tasks.evaluate_plots`. Scorers are loaded only when a score stage is not cached.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

import data.images
import data.readers
import data.schemas
import data.validate
import reward.backbones
import reward.baselines
import reward.benchmarks
import reward.checkpoint
import reward.evaluation
import reward.heads
import reward.metrics
import reward.model
import reward.scoring
from data.validate import reject_rows
from reward.baselines import CLIPSCORE_WEIGHT, ClipScoreScorer, ClipSpec
from reward.benchmarks import (
    MISSING_IMAGE,
    MetricOptions,
    benchmark_metrics,
    get_benchmark,
    headline_estimates,
    kind_headlines,
    not_applicable,
    read_benchmark,
)
from reward.evaluation import EvaluationError, Scorer, reward_model_scorers, score_table
from reward.metrics import Estimate
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, artifacts_root, run_stage
from tasks.fingerprint import FingerprintMemo, default_memo_path, path_fingerprint
from tasks.prefect_stage import stage_task

_MODULE = sys.modules[__name__]
EVAL_BENCHMARK = Stage(
    "eval_benchmark", 1, (_MODULE, reward.benchmarks, data.readers, data.validate, data.schemas)
)
#: The code that turns a model folder and images into scores: part of every scoring stage's key.
SCORING_CODE = (
    reward.evaluation,
    reward.scoring,
    reward.checkpoint,
    reward.model,
    reward.heads,
    reward.backbones,
    data.images,
)
EVAL_SCORES = Stage("eval_scores", 1, (_MODULE, reward.baselines, *SCORING_CODE))
EVAL_METRICS = Stage("eval_metrics", 1, (_MODULE, reward.benchmarks, reward.metrics))
EVAL_TABLE = Stage("eval_table", 1, (_MODULE, reward.benchmarks, reward.metrics))

REWARD_MODEL, BASELINE = "reward model", "baseline"
DEFAULT_CLIP, DEFAULT_OPTIONS = ClipSpec(), MetricOptions()
#: Columns the score stage puts first in its table: who scored which benchmark.
ID_COLUMNS = ("scorer", "scorer_kind", "benchmark")
#: What produced a metrics row (its columns after ``ID_COLUMNS`` in a metrics table and every row of
#: the Table-1 summary): the model folder, its content fingerprint (``model_key``) and the score
#: stage's content key, the reward model's
#: perspective, backbone, head and loss, the CLIP model and weights of a baseline, a description of the
#: weights and whether they are random (the tiny demo backbone, CLIP without pretrained weights),
#: whether the score is a safety logit, and the benchmark read (path, items, a demo copy or not).
PROVENANCE_SCHEMA: dict[str, pl.DataType] = {
    "model_folder": pl.String(),
    "model_key": pl.String(),
    "scores_key": pl.String(),
    "perspective": pl.String(),
    "backbone": pl.String(),
    "head": pl.String(),
    "loss": pl.String(),
    "clip_model": pl.String(),
    "clip_pretrained": pl.String(),
    "weights": pl.String(),
    "random_weights": pl.Boolean(),
    "safety_logit": pl.Boolean(),
    "benchmark_path": pl.String(),
    "benchmark_items": pl.Int64(),
    "demo_benchmark": pl.Boolean(),
}
RANDOM_LABEL = " (random weights)"


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer as a score stage needs it: ``name`` (in every output), ``kind`` (reward model or
    baseline), what identifies it in the stage key (``params``, and ``inputs``: paths whose content is
    fingerprinted) and how to ``load`` it (called only when the stage is not cached)."""

    name: str
    kind: str
    params: Mapping[str, Any]
    load: Callable[[], Scorer] = field(compare=False, repr=False)
    inputs: Mapping[str, str | None] = field(default_factory=dict)
    about: Mapping[str, Any] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        """True when the scorer's weights are random (tiny demo backbone, CLIP without weights)."""
        return bool(self.about.get("random_weights"))


def clipscore_spec(
    clip: ClipSpec = DEFAULT_CLIP, *, prompt_prefix: str = "", name: str = "CLIPScore"
) -> ScorerSpec:
    """The CLIPScore baseline; a local checkpoint file or ``local-dir:`` model is keyed by content."""
    checkpoint = clip.pretrained if clip.pretrained and Path(clip.pretrained).expanduser().is_file() else None
    model_dir = (
        clip.model_name.removeprefix("local-dir:") if clip.model_name.startswith("local-dir:") else None
    )
    params = {
        "baseline": "clipscore",
        "model_name": None if model_dir else clip.model_name,
        "pretrained": None if checkpoint else clip.pretrained,
        "seed": clip.seed,
        "weight": CLIPSCORE_WEIGHT,
        "prompt_prefix": prompt_prefix,
    }
    random = clip.pretrained is None
    about = {
        "clip_model": clip.model_name,
        "clip_pretrained": clip.pretrained,
        "weights": f"random (seed {clip.seed}, no pretrained weights)" if random else clip.pretrained,
        "random_weights": random,
        "safety_logit": False,
    }
    return ScorerSpec(
        name,
        BASELINE,
        params,
        lambda: ClipScoreScorer(clip, prompt_prefix=prompt_prefix, name=name),
        {"checkpoint": checkpoint, "model_dir": model_dir},
        about,
    )


def random_backbone(path: Path) -> bool:
    """True when ``path`` is a tiny random-weight demo backbone (:mod:`reward.tiny`'s marker, or a
    folder of the demo's tiny-backbone directory)."""
    from reward.tiny import TINY_MARKER
    from tasks.train import TINY_BACKBONE_DIR

    return (path / TINY_MARKER).is_file() or path.parent.name == TINY_BACKBONE_DIR


def reward_model_about(folder: Path) -> dict[str, Any]:
    """The provenance of a reward-model folder (:data:`PROVENANCE_SCHEMA`'s model columns)."""
    config = reward.checkpoint.read_reward_config(folder)
    local = Path(config.backbone.name_or_path).expanduser()
    random = local.is_dir() and random_backbone(local)
    return {
        "model_folder": str(folder),
        "perspective": config.perspective,
        "backbone": config.backbone.name_or_path,
        "head": f"{config.head.kind} ({config.head.pooling})",
        "loss": config.loss.kind,
        "weights": "tiny demo backbone (random weights), trained head" if random else "trained",
        "random_weights": random,
        "safety_logit": config.loss.kind == "ce",
    }


def reward_model_specs(
    models: Mapping[str, str | Path],
    *,
    device: str | None = None,
    batch_size: int = 16,
    trust_remote_code: bool = False,
) -> tuple[list[ScorerSpec], dict[str, str]]:
    """One spec per ``{name: model folder}`` (folders on one base model share one lazy load) and the
    skipped GPM folders ``{name: reason}``; ``trust_remote_code``: see :func:`reward_model_scorers`."""
    scorers, skipped = reward_model_scorers(
        models, device=device, batch_size=batch_size, trust_remote_code=trust_remote_code
    )
    specs = []
    for scorer in scorers:
        folder = scorer.source.folders[scorer.perspective]
        backbone = reward.checkpoint.read_reward_config(folder).backbone
        local = Path(backbone.name_or_path).expanduser()
        params = {"reward_model": True, "backbone": None if local.is_dir() else backbone.name_or_path}
        inputs = {"model": str(folder), "backbone": str(local) if local.is_dir() else None}
        about = reward_model_about(Path(folder))
        specs.append(
            ScorerSpec(scorer.name, REWARD_MODEL, params, lambda scorer=scorer: scorer, inputs, about)
        )
    return specs, skipped


# --------------------------------------------------------------------------------------------
# Stages


def load_benchmark(
    name: str, path: str | Path, *, image_root: str | Path | None = None, root: str | Path | None = None
) -> StageResult:
    """Stage: read benchmark ``name`` from ``path`` into its normalized table. Rows whose image file
    is missing are rejects already here; ``stats`` counts them (``missing_images``) and names the
    first few (``first_missing``)."""

    def compute() -> StageOutput:
        read = read_benchmark(name, path, image_root=image_root)
        missing = read.rejects.filter(pl.col("reason").str.contains(MISSING_IMAGE, literal=True))
        return StageOutput(
            tables={MAIN: read.table, REJECTS: read.rejects},
            rows_in=read.rows_in,
            rows_kept=read.table.height,
            stats={
                "benchmark": name,
                "kind": get_benchmark(name).kind,
                "missing_images": missing.height,
                "first_missing": missing["reason"].head(5).to_list(),
            },
        )

    inputs = {"dataset": path, "image_root": image_root}
    return run_stage(EVAL_BENCHMARK, params={"benchmark": name}, inputs=inputs, compute=compute, root=root)


def score_benchmark(
    benchmark_path: str | Path,
    *,
    benchmark: str,
    scorer: ScorerSpec,
    batch_size: int = 16,
    progress: bool = True,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: score every row of a benchmark table with ``scorer`` (size-sorted batches)."""
    kind = get_benchmark(benchmark).kind

    def compute() -> StageOutput:
        table = pl.read_parquet(benchmark_path)
        loaded = scorer.load()
        result = score_table(loaded, table, kind, batch_size=batch_size, progress=progress)
        failed = table.with_row_index("_row").join(result.failures, left_on="_row", right_on="row")
        rejects = reject_rows(
            failed,
            stage=EVAL_SCORES.name,
            field=pl.col("field"),
            reason=pl.col("reason"),
            id_column="item_id",
        )
        identity = [
            pl.lit(value).alias(column)
            for column, value in zip(ID_COLUMNS, (scorer.name, scorer.kind, benchmark), strict=True)
        ]
        scored = result.scored.select(*identity, pl.all())
        return StageOutput(
            tables={MAIN: scored, REJECTS: rejects},
            rows_in=table.height,
            rows_kept=scored.height,
            stats={
                "benchmark": benchmark,
                "scorer": scorer.name,
                "distinct_items": result.distinct_items,
                "scoring_seconds": round(result.seconds, 3),
                "items_per_second": round(result.items_per_second, 2),
            },
        )

    params = {"benchmark": benchmark, "scorer": scorer.name, "scorer_kind": scorer.kind, **scorer.params}
    params["batch_size"] = batch_size
    inputs = {"benchmark": benchmark_path, **{f"scorer_{name}": path for name, path in scorer.inputs.items()}}
    return run_stage(EVAL_SCORES, params=params, inputs=inputs, compute=compute, root=root)


def model_key(folder: str | Path, root: str | Path | None = None) -> str:
    """The content fingerprint of a model folder (every file, by relative path and content), as the
    stage keys see it (memoized under the artifact root)."""
    memo = FingerprintMemo(default_memo_path(artifacts_root(root)))
    return path_fingerprint(Path(folder).expanduser().resolve(), memo)


def provenance_columns(about: Mapping[str, Any] | None) -> list[pl.Expr]:
    """One literal column per :data:`PROVENANCE_SCHEMA` entry (null where ``about`` does not say)."""
    about = about or {}
    return [pl.lit(about.get(name), dtype=dtype).alias(name) for name, dtype in PROVENANCE_SCHEMA.items()]


def compute_metrics(
    scores_path: str | Path,
    *,
    options: MetricOptions = DEFAULT_OPTIONS,
    about: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the metrics table of one scorer on one benchmark (first columns: scorer, kind, benchmark,
    then what produced it, ``about``: :data:`PROVENANCE_SCHEMA`)."""

    def compute() -> StageOutput:
        scores = pl.read_parquet(scores_path)
        if scores.is_empty():
            raise EvaluationError(
                f"{scores_path}: no scored rows (every item was rejected; see its rejects table)"
            )
        identity = scores.select(ID_COLUMNS).row(0, named=True)
        metrics = benchmark_metrics(get_benchmark(identity["benchmark"]).kind, scores, options)
        table = metrics.select(
            *[pl.lit(value).alias(column) for column, value in identity.items()],
            *provenance_columns(about),
            pl.all(),
        )
        return StageOutput(
            tables={MAIN: table}, rows_in=scores.height, rows_kept=scores.height, stats=identity
        )

    params = {**asdict(options), "about": dict(about or {})}
    return run_stage(EVAL_METRICS, params=params, inputs={"scores": scores_path}, compute=compute, root=root)


#: Columns of the Table-1 long summary after the identity and provenance columns.
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "metric": pl.String(),
    "column": pl.String(),
    "value": pl.Float64(),
    "n": pl.Int64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "applicable": pl.Boolean(),
    "note": pl.String(),
    "label": pl.String(),
}
#: Provenance that is the same on every benchmark of a scorer (repeated in the wide summary).
SCORER_COLUMNS = (
    "weights",
    "random_weights",
    "model_folder",
    "perspective",
    "backbone",
    "head",
    "loss",
    "clip_model",
    "clip_pretrained",
)


def scorer_label(scorer: str, random_weights: bool | None) -> str:
    """The scorer's name as a table shows it: ``"<name> (random weights)"`` when its weights are random."""
    return f"{scorer}{RANDOM_LABEL}" if random_weights else scorer


def table_row(
    identity: Mapping[str, Any],
    about: Mapping[str, Any],
    column: str,
    estimate: Estimate | None,
    note: str | None,
) -> dict[str, Any]:
    """One Table-1 row: a metric's value, n and 95% interval, or none of them and the reason (``note``)."""
    shown = note is None and estimate is not None
    return {
        **identity,
        **about,
        "value": estimate.value if shown else None,
        "n": estimate.n if shown and estimate.n >= 0 else None,
        "ci_low": estimate.low if shown else None,
        "ci_high": estimate.high if shown else None,
        "applicable": shown,
        "note": note,
        "label": scorer_label(identity["scorer"], about.get("random_weights")),
        "column": column,
    }


def summary_rows(table: pl.DataFrame) -> list[dict[str, Any]]:
    """The Table-1 rows of one metrics table: each headline metric with its n and 95% interval, what
    produced it, and, where the metric does not fit the scorer, no value and the reason (``note``)."""
    identity = table.select(ID_COLUMNS).row(0, named=True)
    about = {name: table[name][0] if name in table.columns else None for name in PROVENANCE_SCHEMA}
    benchmark = get_benchmark(identity["benchmark"])
    reason = None if about["safety_logit"] is None else not_applicable(benchmark.kind, about["safety_logit"])
    return [
        {
            "metric": headline.column,
            **table_row(identity, about, f"{benchmark.title}: {headline.label}", estimate, reason),
        }
        for headline, estimate in headline_estimates(benchmark.kind, table)
    ]


#: Fields of a :func:`summarize` ``not_scored`` entry besides :data:`PROVENANCE_SCHEMA`.
NOT_SCORED_FIELDS = ("scorer", "scorer_kind", "benchmark", "positive_class", "reason")


def not_scored_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Table-1 rows of a scorer × benchmark pair that was not scored (``entry``: the
    :data:`NOT_SCORED_FIELDS` and provenance): each headline metric n/a, noted "not scored: <reason>"."""
    identity = {name: entry[name] for name in ID_COLUMNS}
    about = {name: entry.get(name) for name in PROVENANCE_SCHEMA}
    benchmark = get_benchmark(entry["benchmark"])
    note = f"not scored: {entry['reason']}"
    return [
        {
            "metric": headline.column,
            **table_row(identity, about, f"{benchmark.title}: {headline.label}", None, note),
        }
        for headline in kind_headlines(benchmark.kind, entry.get("positive_class"))
    ]


def table_one(
    metrics: Sequence[pl.DataFrame], not_scored: Sequence[Mapping[str, Any]] = ()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(long, wide) summaries of metrics tables and of the pairs ``not_scored`` (:func:`not_scored_rows`):
    long has one row per (scorer, benchmark, metric) with n, 95% interval and provenance; wide one row
    per scorer, one column per ``"<benchmark title>: <metric>"`` (in input order; null where not
    applicable or not scored), then the scorer's label and provenance."""
    rows = [row for table in metrics for row in summary_rows(table)]
    rows += [row for entry in not_scored for row in not_scored_rows(entry)]
    schema = {**dict.fromkeys(ID_COLUMNS, pl.String()), **PROVENANCE_SCHEMA, **SUMMARY_SCHEMA}
    long = pl.DataFrame(rows, schema=schema)
    repeated = long.filter(pl.struct("scorer", "column").is_duplicated())
    if repeated.height:
        first = repeated.row(0, named=True)
        raise EvaluationError(f"two metrics tables of scorer {first['scorer']!r} on {first['benchmark']!r}")
    wide = long.pivot(on="column", index=["scorer", "scorer_kind"], values="value", sort_columns=False)
    scorers = long.group_by("scorer", maintain_order=True).agg(
        pl.col("label").first(), *[pl.col(name).drop_nulls().first() for name in SCORER_COLUMNS]
    )
    return long, wide.join(scorers, on="scorer", how="left", maintain_order="left")


def format_estimate(value: float | None, n: int | None, low: float | None, high: float | None) -> str:
    """``"0.625 [0.306, 0.863] n=8"``; ``"n/a"`` without a value, ``"–"`` for NaN (a constant score)."""
    if value is None:
        return "n/a"
    if value != value:
        return "–"
    interval = "" if low is None or low != low else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{interval}" + ("" if n is None else f" n={n}")


def display_table(long: pl.DataFrame) -> pl.DataFrame:
    """One row per scorer (its label), one text column per benchmark metric: value, 95% interval, n."""
    text = [
        format_estimate(value, n, low, high)
        for value, n, low, high in long.select("value", "n", "ci_low", "ci_high").iter_rows()
    ]
    cells = long.select("scorer", "label", "scorer_kind", "column").with_columns(
        pl.Series("cell", text, dtype=pl.String)
    )
    return cells.pivot(
        on="column", index=["scorer", "label", "scorer_kind"], values="cell", sort_columns=False
    )


def summarize(
    metrics_paths: Sequence[str | Path],
    *,
    not_scored: Sequence[Mapping[str, Any]] = (),
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the Table-1 summary (main: long; ``wide``: scorers × benchmark metrics; ``display``: the
    same as text cells with n and 95% interval) of the metrics tables, and of the scorer × benchmark
    pairs ``not_scored`` (their cells n/a with the reason)."""
    entries = [dict(entry) for entry in not_scored]

    def compute() -> StageOutput:
        long, wide = table_one([pl.read_parquet(path) for path in metrics_paths], entries)
        count = len(metrics_paths) + len(entries)
        tables = {MAIN: long, "wide": wide, "display": display_table(long)}
        return StageOutput(tables=tables, rows_in=count, rows_kept=count, stats={"not_scored": len(entries)})

    paths = [str(path) for path in metrics_paths]
    params = {"not_scored": entries} if entries else {}
    return run_stage(EVAL_TABLE, params=params, inputs={"metrics": paths}, compute=compute, root=root)


load_benchmark_task = stage_task(load_benchmark, name="eval-benchmark")
score_benchmark_task = stage_task(score_benchmark, name="eval-scores")
compute_metrics_task = stage_task(compute_metrics, name="eval-metrics")
summarize_task = stage_task(summarize, name="eval-table")
