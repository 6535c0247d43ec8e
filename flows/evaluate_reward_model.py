"""evaluate-reward-model: reward models and baselines → per-item scores, metrics, Table 1 and plots.

Recipe: (train a demo model per perspective, unless ``models`` is given) → read each benchmark
(``eval_benchmark``) → score it with every scorer (``eval_scores``: one stage per scorer × benchmark,
keyed by the model folder's content) → metrics (``eval_metrics``) → the Table-1 summary (``eval_table``)
and the plots (``eval_plots``: MJ-Bench score differences and accuracy per category, a TIFA160
scatter, safety score histograms). Artifacts: ``evaluate-reward-model-table`` (rows = scorers,
columns = benchmark metrics, like the paper's Table 1), ``evaluate-reward-model-report`` (markdown with
the plots), and the stage / output tables every flow publishes.

Benchmarks without a path use the demo corpus' copies (MJ-Bench alignment / quality / safety,
TIFA160, UnsafeBench test); SMID and Unsafe Diffusion need a path.

A scorer is not run on a benchmark whose metrics do not fit it (:func:`scoring_plan`: the binary
safety benchmarks need a score that is the logit of P(safe), which a preference reward model or
CLIPScore is not): the pair's Table-1 cells are n/a, noted "not scored: <reason>", and the report lists
it. ``score_not_applicable=True`` scores such pairs anyway (their metrics stay n/a; the scores are
plotted).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import demo_corpus_task, publish_run_artifacts
from flows.train_reward_model import train_reward_model
from reward.baselines import ClipSpec
from reward.benchmarks import BENCHMARKS, MetricOptions, get_benchmark, not_applicable
from reward.checkpoint import read_reward_config
from reward.evaluation import PAIRS, RATINGS, SAFETY
from reward.metrics import SafetyClass
from reward.registry import resolve_model_folder
from tasks.cache import REJECTS, StageResult, require_rows
from tasks.evaluate import (
    ScorerSpec,
    clipscore_spec,
    compute_metrics_task,
    load_benchmark_task,
    model_key,
    reward_model_specs,
    score_benchmark_task,
    summarize_task,
)
from tasks.evaluate_plots import evaluation_plots_task

FLOW_NAME = "evaluate-reward-model"
TABLE_ARTIFACT = f"{FLOW_NAME}-table"
REPORT_ARTIFACT = f"{FLOW_NAME}-report"
#: The benchmarks the demo corpus has copies of (the default selection).
DEMO_BENCHMARKS = [name for name, benchmark in BENCHMARKS.items() if benchmark.demo_dataset]
BASELINES = ("clipscore",)
#: PNGs up to this size are embedded in the markdown artifact (data URI); larger ones are only linked.
EMBED_LIMIT_BYTES = 400_000


def benchmark_selection(benchmarks: list[str] | None, paths: dict[str, str] | None) -> list[str]:
    """The benchmarks to run (default: those named in ``paths``, else the demo ones), checked before
    anything runs: known names, and a path for every benchmark without a demo copy."""
    names = benchmarks if benchmarks is not None else list(paths) if paths else DEMO_BENCHMARKS
    if not names:
        raise ValueError("no benchmark to evaluate on: benchmarks is empty")
    unknown = sorted(set(paths or {}) - set(names))
    if unknown:
        raise ValueError(f"benchmark_paths names benchmark(s) {unknown} that are not in benchmarks={names}")
    for name in names:
        if get_benchmark(name).demo_dataset is None and name not in (paths or {}):
            raise ValueError(
                f"benchmark {name!r} has no demo copy: pass its path, "
                f"benchmark_paths={{{name!r}: '/path/...'}}"
            )
    return names


def benchmark_locations(
    names: list[str],
    paths: dict[str, str] | None,
    *,
    artifacts_dir: str | None,
    demo_prompts: int | None,
    seed: int,
) -> dict[str, str]:
    """``{benchmark: path}``: the given paths, else the demo corpus' copies (generated if needed)."""
    located = dict(paths or {})
    missing = [name for name in names if name not in located]
    if missing:
        demo = demo_corpus_task(artifacts_dir, demo_prompts, seed)
        located |= {name: str(demo.root / get_benchmark(name).demo_dataset) for name in missing}
    return {name: located[name] for name in names}


def resolve_models(
    models: dict[str, str] | list[str] | None,
    *,
    demo_perspectives: list[str],
    demo_max_steps: int,
    demo_prompts: int | None,
    seed: int,
    artifacts_dir: str | None,
) -> dict[str, str]:
    """``{name: model folder}``: the given folders (a list is named by each folder's perspective; a
    registry perspective folder stands for its champion's folder), or
    demo models trained by the train-reward-model flow, one per demo perspective."""
    if models is None:
        return {
            perspective: train_reward_model(
                perspective=perspective,
                max_steps=demo_max_steps,
                demo_prompts=demo_prompts,
                seed=seed,
                artifacts_dir=artifacts_dir,
            )["model"]
            for perspective in demo_perspectives
        }
    if isinstance(models, dict):
        return {str(name): str(resolve_model_folder(folder)) for name, folder in models.items()}
    named: dict[str, str] = {}
    for folder in map(resolve_model_folder, models):
        base = read_reward_config(folder).perspective
        name, suffix = base, 2
        while name in named:
            name, suffix = f"{base}-{suffix}", suffix + 1
        named[name] = str(folder)
    return named


def baseline_specs(baselines: list[str], clip: ClipSpec, prompt_prefix: str) -> list[ScorerSpec]:
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; available: {list(BASELINES)}")
    return [clipscore_spec(clip, prompt_prefix=prompt_prefix) for name in baselines if name == "clipscore"]


def scoring_plan(
    specs: list[ScorerSpec], benchmarks: list[str], *, score_not_applicable: bool = False
) -> tuple[dict[str, list[ScorerSpec]], dict[tuple[str, str], str]]:
    """Which scorers score which benchmark: ``{benchmark: scorers}`` and the pairs not scored
    ``{(scorer, benchmark): reason}``. A scorer whose metrics on a benchmark would not be applicable
    (:func:`reward.benchmarks.not_applicable`: binary safety metrics of a score that is not the logit of
    P(safe), as a preference reward's or CLIPScore's) is not run on it unless ``score_not_applicable``."""
    plan: dict[str, list[ScorerSpec]] = {}
    not_scored: dict[tuple[str, str], str] = {}
    for benchmark in benchmarks:
        kind = get_benchmark(benchmark).kind
        plan[benchmark] = []
        for spec in specs:
            reason = not_applicable(kind, bool(spec.about.get("safety_logit")))
            if reason is not None and not score_not_applicable:
                not_scored[(spec.name, benchmark)] = reason
            else:
                plan[benchmark].append(spec)
    if not any(plan.values()):
        raise ValueError(
            f"nothing to score: no scorer's metrics apply to benchmarks {benchmarks} "
            f"({next(iter(not_scored.values()))}); pass score_not_applicable=True to score them anyway"
        )
    return plan, not_scored


def warn_random_weights(logger: Any, specs: list[ScorerSpec], benchmark: str, *, real: bool) -> list[str]:
    """Warn (and return the names) when a real benchmark is scored by random-weight scorers: their
    rows are labelled "(random weights)" and are no real result."""
    random = [spec.name for spec in specs if spec.random_weights] if real else []
    for name in random:
        logger.warning(
            "%s is scored on the real benchmark %s with random weights (%s): its row is marked "
            "random_weights / '(random weights)' and is not a real result",
            name,
            benchmark,
            next(spec for spec in specs if spec.name == name).about.get("weights"),
        )
    return random


def _json_number(value: Any) -> Any:
    if isinstance(value, float):
        return None if value != value else round(value, 4)  # NaN (a constant score) -> empty cell
    return value


def _markdown_table(table: pl.DataFrame) -> list[str]:
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    for row in table.iter_rows():
        cells = ["–" if _json_number(v) is None else str(_json_number(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rule_notes(kinds: set[str], options: MetricOptions) -> list[str]:
    """The decision rules of the kinds of benchmark that were evaluated (and only those)."""
    notes = {
        PAIRS: f"- MJ-Bench: the higher score wins; |s0 - s1| <= {options.tie_threshold} is a model tie "
        "(wrong *with* ties, dropped *without*); human ties are dropped. 95% interval: Wilson.",
        RATINGS: "- TIFA160: Pearson, Kendall tau-b and tie-calibrated pairwise accuracy against the human "
        f"mean. 95% interval: bootstrap over items ({options.bootstrap_resamples} resamples, "
        f"seed {options.bootstrap_seed}).",
        SAFETY: f"- Safety: 'safe' when sigmoid(score) >= {options.safety_threshold}; F1 / precision / "
        f"recall take **{options.positive_class}** as the positive class. The rule assumes the score is "
        "the logit of P(safe) (a safety perspective trained with cross-entropy); other scorers are "
        "not scored on it by default and shown as n/a. 95% interval: Wilson (accuracy), bootstrap (F1).",
    }
    return [note for kind, note in notes.items() if kind in kinds]


def report_markdown(
    display: pl.DataFrame,
    long: pl.DataFrame,
    plots: pl.DataFrame,
    skipped: dict[str, str],
    options: MetricOptions,
) -> str:
    """The report artifact: Table 1 (value [95% interval] n=items), the decision rules of the kinds
    evaluated, rows not applicable or with random weights, skipped models and the plots (embedded PNGs)."""
    lines = ["# Reward model evaluation", "", *_markdown_table(display), ""]
    kinds = {get_benchmark(name).kind for name in long["benchmark"].unique().to_list()}
    lines += rule_notes(kinds, options)
    random = long.filter(pl.col("random_weights").fill_null(False))["label"].unique(maintain_order=True)
    lines += [f"- {label}: random weights, not a real result." for label in random.to_list()]
    not_shown = long.filter(~pl.col("applicable")).unique(["scorer", "benchmark"], maintain_order=True)
    lines += [
        f"- {row['scorer']} on {get_benchmark(row['benchmark']).title}: {row['note']}"
        for row in not_shown.iter_rows(named=True)
    ]
    lines += [f"- skipped {name}: {reason}" for name, reason in skipped.items()]
    for name, title, path in plots.select("name", "title", "path").iter_rows():
        png = Path(path).read_bytes()
        lines += ["", f"## {title}", "", f"`{path}`", ""]
        if len(png) <= EMBED_LIMIT_BYTES:
            lines.append(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n".join(lines)


@flow(name=FLOW_NAME, log_prints=True)
def evaluate_reward_model(
    models: dict[str, str] | list[str] | None = None,
    baselines: list[str] | None = None,
    benchmarks: list[str] | None = None,
    benchmark_paths: dict[str, str] | None = None,
    image_roots: dict[str, str] | None = None,
    clip_model: str = "demo-tiny-clip",
    clip_pretrained: str | None = None,
    clip_seed: int = 0,
    clipscore_prompt_prefix: str = "",
    batch_size: int = 16,
    device: str | None = None,
    trust_remote_code: bool = False,
    tie_threshold: float = 0.0,
    safety_positive_class: SafetyClass = "unsafe",
    safety_threshold: float = 0.5,
    score_not_applicable: bool = False,
    demo_perspectives: list[str] | None = None,
    demo_max_steps: int = 300,
    demo_prompts: int | None = None,
    seed: int = 0,
    progress: bool = True,
    artifacts_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluate reward models (``{name: folder}`` or a list of folders; default: a demo model per
    ``demo_perspectives``, ``["alignment"]``) and ``baselines`` (default ``["clipscore"]``) on
    ``benchmarks`` (default: the demo corpus' copies; ``benchmark_paths`` / ``image_roots`` by name).
    ``trust_remote_code`` allows modelling code shipped with a model's base model (a model folder's
    saved config never does). A scorer is not run on a benchmark whose metrics would not apply to it
    (:func:`scoring_plan`) unless ``score_not_applicable``. Returns the paths of the summary, plots, and
    every score and metrics table, and the pairs not scored with the reason."""
    logger = get_run_logger()
    options = MetricOptions(tie_threshold, safety_positive_class, safety_threshold)
    clip = ClipSpec(clip_model, clip_pretrained, clip_seed, batch_size, device or _default_device())
    baseline = baseline_specs(
        ["clipscore"] if baselines is None else baselines, clip, clipscore_prompt_prefix
    )
    names = benchmark_selection(benchmarks, benchmark_paths)
    folders = resolve_models(
        models,
        demo_perspectives=demo_perspectives or ["alignment"],
        demo_max_steps=demo_max_steps,
        demo_prompts=demo_prompts,
        seed=seed,
        artifacts_dir=artifacts_dir,
    )
    specs, skipped = reward_model_specs(
        folders, device=device, batch_size=batch_size, trust_remote_code=trust_remote_code
    )
    for name, reason in skipped.items():
        logger.warning("skipping model %s: %s", name, reason)
    specs += baseline
    if not specs:
        raise ValueError("nothing to evaluate: no scalar reward model and no baseline")
    plan, not_scored = scoring_plan(specs, names, score_not_applicable=score_not_applicable)
    for (name, benchmark), reason in not_scored.items():
        logger.info("not scoring %s on %s: %s", name, benchmark, reason)
    paths = benchmark_locations(
        names, benchmark_paths, artifacts_dir=artifacts_dir, demo_prompts=demo_prompts, seed=seed
    )

    model_keys = {
        spec.name: model_key(spec.about["model_folder"], artifacts_dir)
        for spec in specs
        if spec.about.get("model_folder")
    }
    scores: dict[tuple[str, str], StageResult] = {}
    metrics: dict[tuple[str, str], StageResult] = {}
    stages: dict[str, StageResult] = {}
    unscored: list[dict[str, Any]] = []
    for benchmark, path in paths.items():
        root_dir = (image_roots or {}).get(benchmark)
        table = load_benchmark_task(benchmark, path, image_root=root_dir, root=artifacts_dir)
        stages[f"benchmark {benchmark}"] = table
        if table.stats.get("missing_images"):
            logger.warning(
                "%s: %d rows rejected before scoring, their image is not there (first: %s); see %s",
                benchmark,
                table.stats["missing_images"],
                "; ".join(table.stats.get("first_missing", [])),
                table.paths[REJECTS],
            )
        require_rows(table)
        warn_random_weights(logger, plan[benchmark], benchmark, real=benchmark in (benchmark_paths or {}))
        for spec in specs:
            key = (spec.name, benchmark)
            about = {
                **spec.about,
                "model_key": model_keys.get(spec.name),
                "benchmark_path": str(path),
                "benchmark_items": table.rows_kept,
                "demo_benchmark": benchmark not in (benchmark_paths or {}),
            }
            if key in not_scored:
                identity = {"scorer": spec.name, "scorer_kind": spec.kind, "benchmark": benchmark}
                reason = {"reason": not_scored[key], "positive_class": options.positive_class}
                unscored.append({**about, **identity, **reason})
                continue
            scores[key] = score_benchmark_task(
                table.path,
                benchmark=benchmark,
                scorer=spec,
                batch_size=batch_size,
                progress=progress,
                root=artifacts_dir,
            )
            if not scores[key].cached:
                logger.info("%s on %s: %.1f items/s", *key, scores[key].stats["items_per_second"])
            metrics[key] = compute_metrics_task(
                scores[key].path,
                options=options,
                about={**about, "scores_key": scores[key].key},
                root=artifacts_dir,
            )
    summary = summarize_task(
        [result.path for result in metrics.values()], not_scored=unscored, root=artifacts_dir
    )
    plots = evaluation_plots_task(
        [result.path for result in scores.values()],
        [result.path for result in metrics.values()],
        root=artifacts_dir,
    )
    stages |= {f"scores {name} on {benchmark}": result for (name, benchmark), result in scores.items()}
    stages |= {f"metrics {name} on {benchmark}": result for (name, benchmark), result in metrics.items()}
    stages |= {"table": summary, "plots": plots}

    display = summary.read("display")
    create_table_artifact(
        key=TABLE_ARTIFACT,
        table=[dict(row) for row in display.iter_rows(named=True)],
        description="Reward models and baselines (rows) on benchmark metrics (columns), as in Table 1: "
        "value [95% interval] n=items; n/a where the metric does not fit the scorer",
    )
    create_markdown_artifact(
        key=REPORT_ARTIFACT,
        markdown=report_markdown(display, summary.read(), plots.read(), skipped, options),
        description="Evaluation: Table 1, decision rules and plots",
    )
    outputs = {"table": str(summary.path), "table_wide": summary.paths["wide"], "plots": plots.paths["png"]}
    flat = {
        stage: str(result.path) for stage, result in stages.items() if stage.startswith(("scores", "metrics"))
    }
    publish_run_artifacts(FLOW_NAME, stages, {**outputs, **flat})
    return {
        **outputs,
        "scores": _nested(scores),
        "metrics": _nested(metrics),
        "skipped": skipped,
        "not_scored": {f"{name} on {benchmark}": reason for (name, benchmark), reason in not_scored.items()},
        "models": folders,
        "benchmarks": paths,
    }


def _nested(results: dict[tuple[str, str], StageResult]) -> dict[str, dict[str, str]]:
    """``{scorer: {benchmark: path}}``."""
    nested: dict[str, dict[str, str]] = {}
    for (name, benchmark), result in results.items():
        nested.setdefault(name, {})[benchmark] = str(result.path)
    return nested


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    evaluate_reward_model()
