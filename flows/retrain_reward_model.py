"""retrain-reward-model: scheduled retraining of one perspective, with champion / challenger promotion.

Recipe, all of it under the perspective's retraining lock (``ARTIFACTS/registry/<perspective>/
retrain.lock``: two runs of one perspective never interleave; a second one waits):

    build-<perspective>-data (subflow) → train (the content-keyed train stage) → register the
    challenger (a verified copy in the model registry) → evaluate challenger and champion on the
    perspective's primary metric (:mod:`tasks.promote`) → decide (:func:`reward.registry.decide`) →
    switch the champion pointer (only on promotion) → append the ledger row

Every run leaves a ledger row (``ARTIFACTS/registry/ledger.parquet``) and a markdown artifact
``retrain-reward-model-<perspective>-decision`` with challenger vs champion, the tolerance, the decision
and its reason.

Unchanged data: every stage is content-keyed, so a scheduled run on unchanged inputs rebuilds nothing
and says so ("data unchanged: key …, every stage cached"). The train stage is keyed too (job settings,
code, data key, base model): the same job on the same data is reused, not retrained — training is
seeded, so a rerun would only reproduce the model. The challenger is then the champion already
(decision "kept": no change), or a model that was rejected before (it is re-evaluated against the
current champion and the decision recorded again). To retrain on unchanged data, change a training
setting (e.g. ``seed`` or ``max_steps``).

Failures: a failed build, training, registration or evaluation leaves the champion pointer untouched,
appends a ``failed`` ledger row with the reason, and ends the flow run Failed with that reason. A run
killed outright (``kill -9``) cannot write its row: it leaves ``<perspective>/running.json``, which the
next run of the perspective turns into a ``crashed`` row before it starts
(:meth:`reward.registry.ModelRegistry.reconcile`). Prefect's ``on_crashed`` hooks are not used for this:
they run in a runner process that watches the flow-run process, which a direct call or a killed worker
does not have. A model folder is promoted only after it verifies as complete
(``reward.registry.verify_model_folder``).
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.common import publish_run_artifacts
from flows.evaluate_reward_model import benchmark_locations
from flows.train_reward_model import BUILD_DATA, build_job
from reward.benchmarks import MetricOptions, get_benchmark
from reward.registry import (
    FAILED,
    PROMOTED,
    Champion,
    Decision,
    LedgerRow,
    ModelRegistry,
    decide,
    utc_now,
)
from tasks.cache import StageResult, artifacts_root
from tasks.evaluate import (
    compute_metrics_task,
    load_benchmark_task,
    reward_model_specs,
    score_benchmark_task,
)
from tasks.promote import (
    HELDOUT,
    METRICS,
    PrimaryMetric,
    heldout_metrics_task,
    lineage,
    metric_value,
    primary_metric,
    stage_output,
    written_since,
)
from tasks.train import tiny_backbone_task, train_task

FLOW_NAME = "retrain-reward-model"
#: The build-data parameter that names the dataset holding a benchmark (by its demo folder name).
DATASET_PARAMETERS = {"mjbench": "benchmark_path", "unsafebench": "unsafebench_path"}
#: Parameters the retraining flow sets on the build-data subflow itself.
SHARED_PARAMETERS = ("artifacts_dir",)


class RetrainFailed(RuntimeError):
    """A step of a retraining run failed; the champion was left as it was. The message says which."""


@dataclass
class ModelEvaluation:
    """A model's figures on the primary benchmark: the primary value, every numeric metric of the
    summary row, and the stages that produced them."""

    value: float
    metrics: dict[str, float | int]
    stages: dict[str, StageResult] = field(default_factory=dict)


def _check_data_parameters(perspective: str, parameters: dict[str, Any]) -> None:
    accepted = set(inspect.signature(BUILD_DATA[perspective].fn).parameters) - set(SHARED_PARAMETERS)
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        raise ValueError(
            f"data_parameters {unknown} are not parameters of {BUILD_DATA[perspective].name}; "
            f"it accepts {sorted(accepted)}"
        )


def _benchmark_path(
    primary: PrimaryMetric,
    explicit: str | None,
    data: dict[str, Any],
    *,
    artifacts_dir: str | None,
) -> str | None:
    """Where the primary benchmark is: ``explicit``, else the dataset given to the build flow for it
    (MJ-Bench, UnsafeBench), else the demo corpus' copy; None for the held-out split."""
    if primary.benchmark == HELDOUT:
        return None
    if explicit is not None:
        return explicit
    demo_dataset = get_benchmark(primary.benchmark).demo_dataset
    given = data.get(DATASET_PARAMETERS.get(demo_dataset or "", ""))
    if given:
        return str(given)
    if demo_dataset is None:
        raise ValueError(f"benchmark {primary.benchmark!r} has no demo copy: pass benchmark_path")
    located = benchmark_locations(
        [primary.benchmark],
        None,
        artifacts_dir=artifacts_dir,
        demo_prompts=data.get("demo_prompts"),
        seed=data.get("seed", 0),
    )
    return located[primary.benchmark]


def evaluate_model(
    name: str,
    folder: Path,
    primary: PrimaryMetric,
    *,
    benchmark_path: str | None,
    validation_path: str,
    options: MetricOptions,
    batch_size: int,
    device: str | None,
    artifacts_dir: str | None,
    trust_remote_code: bool = False,
) -> ModelEvaluation:
    """Score ``folder`` on the primary benchmark (stages keyed by the folder's content: re-evaluating an
    unchanged champion on an unchanged benchmark is a cache hit)."""
    specs, skipped = reward_model_specs(
        {name: folder}, device=device, batch_size=batch_size, trust_remote_code=trust_remote_code
    )
    if skipped:
        raise ValueError(skipped[name])
    (spec,) = specs
    if primary.benchmark == HELDOUT:
        heldout = heldout_metrics_task(
            validation_path, scorer=spec, options=options, batch_size=batch_size, root=artifacts_dir
        )
        stages, metrics = {f"heldout {name}": heldout}, heldout.read(METRICS)
    else:
        table = load_benchmark_task(primary.benchmark, benchmark_path, root=artifacts_dir)
        scores = score_benchmark_task(
            table.path,
            benchmark=primary.benchmark,
            scorer=spec,
            batch_size=batch_size,
            progress=False,
            root=artifacts_dir,
        )
        computed = compute_metrics_task(scores.path, options=options, root=artifacts_dir)
        stages = {
            f"benchmark {primary.benchmark}": table,
            f"scores {name}": scores,
            f"metrics {name}": computed,
        }
        metrics = computed.read()
    summary = metrics.filter(metrics["level"] == "overall") if "level" in metrics.columns else metrics
    numbers = {
        column: summary[column][0]
        for column, dtype in summary.schema.items()
        if dtype.is_numeric() and summary[column][0] is not None
    }
    return ModelEvaluation(metric_value(metrics, primary.metric), numbers, stages)


@flow(name=FLOW_NAME, log_prints=True)
def retrain_reward_model(
    perspective: str = "alignment",
    data_parameters: dict[str, Any] | None = None,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    head_kind: str = "skipca",
    lora_rank: int = 8,
    learning_rate: float | None = None,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    training: dict[str, Any] | None = None,
    benchmark: str | None = None,
    metric: str | None = None,
    benchmark_path: str | None = None,
    tolerance: float = 0.01,
    tie_threshold: float = 0.0,
    eval_batch_size: int = 16,
    device: str | None = None,
    lock_timeout_minutes: float = 120.0,
    seed: int = 0,
    artifacts_dir: str | None = None,
    demo_prompts: int | None = None,
) -> dict[str, Any]:
    """Retrain one perspective and promote the challenger when its primary metric is not worse than
    the champion's beyond ``tolerance`` (see :data:`tasks.promote.PRIMARY_METRICS`).

    ``data_parameters`` go to the perspective's build-data flow (dataset paths, ...; default: the demo
    corpus of ``demo_prompts`` prompts). Training settings are those of train-reward-model
    (``training`` sets any other TrainingConfig field; without ``backbone`` the tiny demo backbone;
    ``trust_remote_code`` allows a base model's shipped code, for training and evaluation).
    ``benchmark`` / ``metric`` override the primary metric (``benchmark="heldout"``: the validation
    split); ``benchmark_path`` locates the benchmark (default: the dataset given to the build flow,
    else the demo copy). Returns the decision, its reason and the champion after the run.
    """
    requested_at = utc_now()
    logger = get_run_logger()
    primary = primary_metric(perspective, benchmark, metric)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    data = {"seed": seed, "demo_prompts": demo_prompts, **(data_parameters or {})}
    _check_data_parameters(perspective, data)
    registry = ModelRegistry.under(artifacts_root(artifacts_dir))
    run_id = flow_run.id or uuid.uuid4().hex

    with registry.retrain_lock(perspective, timeout=lock_timeout_minutes * 60):
        for crashed in registry.reconcile(perspective, locked=True):
            logger.warning("an earlier run recorded as crashed: %s", crashed.reason)
        started_ns = time.time_ns()
        row = LedgerRow(
            run_id=run_id,
            perspective=perspective,
            requested_at=requested_at,
            started_at=utc_now(),
            benchmark=primary.benchmark,
            metric=primary.metric,
            tolerance=tolerance,
        )
        champion = registry.champion(perspective)
        row.champion_key = champion.model_key if champion else None
        row.champion_after = row.champion_key
        registry.begin_run(row)  # a run killed from here on is found by the next one (reconcile)
        step = "building the data"
        try:
            built = BUILD_DATA[perspective](**data, artifacts_dir=artifacts_dir)
            assembled = stage_output(built["train"])
            previous = registry.last_run(perspective, with_data=True)
            row.data_key = assembled.key
            row.data_unchanged = previous is not None and previous["data_key"] == assembled.key
            rebuilt = written_since(lineage(assembled.manifest_path), started_ns)

            step = "training"
            tiny = backbone is None
            base = tiny_backbone_task(seed=seed, root=artifacts_dir) if tiny else backbone
            job = build_job(
                perspective,
                built["train"],
                built["validation"],
                base,
                tiny=tiny,
                trust_remote_code=trust_remote_code,
                head_kind=head_kind,
                lora_rank=lora_rank,
                learning_rate=learning_rate,
                epochs=epochs,
                max_steps=max_steps,
                batch_size=batch_size,
                seed=seed,
                training=training,
            )
            trained = train_task(job, root=artifacts_dir)
            row.model_key, row.train_cached = trained.key, trained.cached

            step = "registering the challenger"
            folder = registry.register(perspective, trained.key, trained.path)
            row.model_folder = str(folder)

            step = "evaluating the challenger"
            options = MetricOptions(tie_threshold=tie_threshold)
            evaluate = {
                "primary": primary,
                "benchmark_path": _benchmark_path(primary, benchmark_path, data, artifacts_dir=artifacts_dir),
                "validation_path": built["validation"],
                "options": options,
                "batch_size": eval_batch_size,
                "device": device,
                "artifacts_dir": artifacts_dir,
                "trust_remote_code": trust_remote_code,
            }
            challenger = evaluate_model(f"{perspective}-{trained.key}", folder, **evaluate)
            row.challenger_value, row.metrics = challenger.value, json.dumps(challenger.metrics)
            stages = {"train": trained, **challenger.stages}

            step = "evaluating the champion"
            champion_value = None
            if champion is not None and champion.model_key == trained.key:
                champion_value = challenger.value
            elif champion is not None:
                registry.verify(perspective, champion.model_key)
                held = evaluate_model(
                    f"{perspective}-{champion.model_key}",
                    registry.model_folder(perspective, champion.model_key),
                    **evaluate,
                )
                champion_value, stages = held.value, {**stages, **held.stages}
            row.champion_value = champion_value

            step = "deciding"
            decision = decide(
                metric=primary.label,
                challenger_key=trained.key,
                challenger_value=challenger.value,
                champion_key=row.champion_key,
                champion_value=champion_value,
                tolerance=tolerance,
            )
            row.every_stage_cached = not rebuilt and all(result.cached for result in stages.values())
            if decision.action == PROMOTED:
                step = "promoting the challenger"
                promoted = registry.promote(
                    perspective,
                    trained.key,
                    run_id=run_id,
                    benchmark=primary.benchmark,
                    metric=primary.metric,
                    value=challenger.value,
                    reason=decision.reason,
                )
                row.champion_after = promoted.model_key
            row.decision, row.reason = decision.action, decision.reason
        except Exception as error:
            _record_failure(registry, row, f"{step} failed", error)
            _publish_decision(row, decision=None, champion=registry.champion(perspective))
            logger.error("%s", row.reason)
            raise RetrainFailed(row.reason) from error
        except BaseException as error:  # the run crashes (terminated, interrupted): record it, then go on
            _record_failure(registry, row, f"{step} crashed", error)
            logger.error("%s", row.reason)
            raise

        row.finished_at = utc_now()
        registry.append(row)
        registry.end_run(perspective, run_id)
    after = registry.champion(perspective)
    data_line = _data_line(row, previous, rebuilt)
    logger.info("%s", data_line)
    logger.info("decision: %s — %s", row.decision, row.reason)
    _publish_decision(row, decision=decision, champion=after, data_line=data_line)
    outputs = {"registry": str(registry.root), "ledger": str(registry.ledger_path), "challenger": str(folder)}
    publish_run_artifacts(f"{FLOW_NAME}-{perspective}", stages, outputs)
    return {
        "run_id": run_id,
        "perspective": perspective,
        "decision": row.decision,
        "reason": row.reason,
        "data_key": row.data_key,
        "data_unchanged": row.data_unchanged,
        "every_stage_cached": row.every_stage_cached,
        "train_cached": row.train_cached,
        "challenger": {"model_key": trained.key, "folder": str(folder), "value": challenger.value},
        "champion_before": {"model_key": row.champion_key, "value": row.champion_value},
        "champion": None if after is None else {"model_key": after.model_key, "folder": after.folder},
        "metric": primary.label,
        "ledger": str(registry.ledger_path),
    }


def _data_line(row: LedgerRow, previous: dict[str, Any] | None, rebuilt: list[str]) -> str:
    if row.data_unchanged:
        cached = "every stage cached" if row.every_stage_cached else "some stages recomputed"
        return f"data unchanged: key {row.data_key}, {cached}"
    before = f"previous {previous['data_key']}" if previous else "first run"
    return f"data changed: key {row.data_key} ({before}); stages computed: {', '.join(rebuilt) or 'none'}"


def _number(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.4f}"


def _record_failure(registry: ModelRegistry, row: LedgerRow, what: str, error: BaseException) -> None:
    """Append ``row`` to the ledger as failed: ``what`` (e.g. "train failed"), the error, champion kept."""
    row.decision = FAILED
    kept = row.champion_key or "none yet"
    row.reason = f"{what}: {type(error).__name__}: {error}; the champion is unchanged ({kept})"
    row.finished_at = utc_now()
    registry.append(row)
    registry.end_run(row.perspective, row.run_id)


def _publish_decision(
    row: LedgerRow,
    *,
    decision: Decision | None,
    champion: Champion | None,
    data_line: str | None = None,
) -> None:
    """The markdown artifact that explains the run's decision (or its failure)."""
    lines = [
        f"# {row.perspective}: {row.decision}",
        "",
        f"**Reason:** {row.reason}",
        "",
        "| | challenger | champion before the run |",
        "|---|---|---|",
        f"| model key | `{row.model_key or '–'}` | `{row.champion_key or '–'}` |",
        f"| {row.benchmark}: {row.metric} | {_number(row.challenger_value)} "
        f"| {_number(row.champion_value)} |",
        "",
        f"- tolerance: {row.tolerance:g} (promoted when challenger >= champion - tolerance"
        + (f" = {decision.threshold:.4f})" if decision and decision.threshold is not None else ")"),
        f"- decision: **{row.decision}**",
    ]
    if data_line:
        lines.append(f"- {data_line}")
    if row.train_cached is not None:
        lines.append(
            "- training: "
            + (
                "cached — the same job on the same data is reused, not retrained"
                if row.train_cached
                else "trained"
            )
        )
    lines += [
        f"- champion after the run: `{champion.model_key}` (`{champion.folder}`)"
        if champion
        else "- champion after the run: none",
        f"- challenger folder: `{row.model_folder or '–'}`",
        f"- run `{row.run_id}`, data key `{row.data_key or '–'}`",
    ]
    if row.metrics:
        metrics = json.loads(row.metrics)
        lines += ["", "| challenger metric | value |", "|---|---|"]
        lines += [
            f"| {name} | {value if isinstance(value, int) else _number(value)} |"
            for name, value in metrics.items()
        ]
    create_markdown_artifact(
        key=f"{FLOW_NAME}-{row.perspective}-decision",
        markdown="\n".join(lines),
        description=f"{row.perspective} retraining: challenger vs champion, decision and reason",
    )


if __name__ == "__main__":
    retrain_reward_model()
