"""Pieces shared by the build-data flows: the demo default, the rating-pairs recipe, run artifacts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import StageRunner, TaskRunnerName, run_sharded, stage_runner
from tasks.assemble import assemble_pairs_task
from tasks.cache import StageResult, artifacts_root, require_rows
from tasks.dedup import dedup_task
from tasks.dedup_shards import dedup_shard_task, finished_dedup, merge_dedup_task
from tasks.embed import ClipSpec, embed_task
from tasks.embed_shards import embed_shard_task, finished_embed, merge_embed_task
from tasks.ingest import ingest_benchmark_task, ingest_ratings_task
from tasks.pairs import pairs_task
from tasks.ratings import Perspective, ratings_task
from tasks.shards import SHARD, SHARDS, check_shard_count

if TYPE_CHECKING:
    from data.demo import DemoCorpus

DEMO_DIR = "demo-corpus"


@task(name="demo-corpus", cache_policy=NO_CACHE, persist_result=False)
def demo_corpus_task(artifacts_dir: str | None, prompts: int | None, seed: int) -> DemoCorpus:
    """Generate the demo corpus under the artifact root, or reuse it when it is already there."""
    from data.demo import DemoCorpusConfig, generate_demo_corpus  # the generator only when asked

    config = DemoCorpusConfig(seed=seed) if prompts is None else DemoCorpusConfig.with_prompts(prompts, seed)
    suffix = f"seed{seed}" + ("" if prompts is None else f"-{prompts}p")
    root = artifacts_root(artifacts_dir) / DEMO_DIR / suffix
    corpus = generate_demo_corpus(root, config)
    get_run_logger().info("demo corpus ready at %s", root)
    return corpus


def dedup_stages(
    runner: StageRunner,
    ratings_path: str | Path,
    benchmark_path: str | Path,
    *,
    threshold: float,
    shards: int,
    root: str | None,
) -> dict[str, StageResult]:
    """The dedup stage, over ``shards`` shards of the prompts when ``shards > 1`` (same output)."""
    if check_shard_count(shards) == 1:
        return {"dedup": runner.run(dedup_task, ratings_path, benchmark_path, threshold=threshold, root=root)}
    return run_sharded(
        runner,
        "dedup",
        shards=shards,
        finished=lambda: finished_dedup(ratings_path, benchmark_path, threshold=threshold, root=root),
        shard_task=dedup_shard_task,
        merge_task=merge_dedup_task,
        ratings_path=ratings_path,
        benchmark_path=benchmark_path,
        threshold=threshold,
        root=root,
    )


def embed_stages(
    runner: StageRunner, ratings_path: str | Path, *, clip: ClipSpec, shards: int, root: str | None
) -> dict[str, StageResult]:
    """The embed stage, over ``shards`` shards of the images and prompts when ``shards > 1``."""
    if check_shard_count(shards) == 1:
        return {"embed": runner.run(embed_task, ratings_path, clip=clip, root=root)}
    return run_sharded(
        runner,
        "embed",
        shards=shards,
        finished=lambda: finished_embed(ratings_path, clip=clip, root=root),
        shard_task=embed_shard_task,
        merge_task=merge_embed_task,
        ratings_path=ratings_path,
        clip=clip,
        root=root,
    )


def rating_pairs_stages(
    *,
    runner: StageRunner,
    perspective: Perspective,
    imagereward_path: str | Path,
    imagereward_split: str | None,
    image_root: str | None,
    benchmark_path: str | Path,
    benchmark_subsets: list[str] | None,
    dedup_threshold: float,
    image_check: str,
    shards: int,
    artifacts_dir: str | None,
) -> dict[str, StageResult]:
    """ingest → (benchmark ingest) → dedup → ratings → pairs: the spine every rating perspective shares.
    The two ingests run concurrently; dedup runs over ``shards`` shards when ``shards > 1``."""
    check_shard_count(shards)
    ingested = runner.submit(
        ingest_ratings_task,
        imagereward_path,
        split=imagereward_split,
        image_root=image_root,
        image_check=image_check,
        root=artifacts_dir,
    )
    benchmark = runner.submit(
        ingest_benchmark_task, benchmark_path, subsets=benchmark_subsets, root=artifacts_dir
    )
    ingested_result, benchmark_result = require_rows(ingested.result()), benchmark.result()
    stages = {"ingest_ratings": ingested_result, "ingest_benchmark": benchmark_result}
    stages |= dedup_stages(
        runner,
        ingested_result.path,
        benchmark_result.path,
        threshold=dedup_threshold,
        shards=shards,
        root=artifacts_dir,
    )
    require_rows(stages["dedup"])
    stages["ratings"] = require_rows(
        runner.run(ratings_task, stages["dedup"].path, perspective=perspective, root=artifacts_dir)
    )
    stages["pairs"] = require_rows(runner.run(pairs_task, stages["ratings"].path, root=artifacts_dir))
    return stages


def stage_label(result: StageResult) -> str:
    """A stage's name in the run's stage table: a shard's says which (``embed_shard 2/4``)."""
    if SHARD in result.stats and SHARDS in result.stats and isinstance(result.stats[SHARDS], int):
        return f"{result.stage} {result.stats[SHARD] + 1}/{result.stats[SHARDS]}"
    return result.stage


#: Stage statistics shown as columns of a run's stage table when some stage of the run has them.
STAGE_IDENTITY = ("benchmark", "scorer")


def publish_run_artifacts(
    flow_name: str, stages: Mapping[str, StageResult], outputs: Mapping[str, str]
) -> None:
    """A table artifact of the stages (rows in / out / rejected, cached or computed, seconds) and a
    markdown artifact with the output paths, both keyed by the flow's name."""
    # which benchmark and scorer a stage worked on, where any stage of the run says (evaluation runs)
    named = [key for key in STAGE_IDENTITY if any(key in result.stats for result in stages.values())]
    rows = [
        {
            **result.summary(),
            "stage": stage_label(result),
            **{key: result.stats.get(key) for key in named},
        }
        for result in stages.values()
    ]
    create_table_artifact(
        key=f"{flow_name}-stages",
        table=rows,
        description=f"{flow_name}: one row per stage (cached = not recomputed)",
    )
    lines = [f"# {flow_name} outputs", "", "| output | path |", "|---|---|"]
    lines += [f"| {name} | `{path}` |" for name, path in outputs.items()]
    lines += ["", "## Every stage's tables", "", "| stage | table | rows | path |", "|---|---|---|---|"]
    folders = []
    for result in stages.values():
        for table, path in result.paths.items():
            if path.endswith(".parquet"):
                lines.append(f"| {stage_label(result)} | {table} | {result.rows_out[table]} | `{path}` |")
            else:  # a folder (a trained model), not a Parquet table
                folders.append(f"| {stage_label(result)} | {table} | `{path}` |")
    if folders:
        lines += [
            "",
            "## Other outputs (folders)",
            "",
            "| stage | output | path |",
            "|---|---|---|",
            *folders,
        ]
    lines += [
        "",
        "Open the `.parquet` tables with `polars.read_parquet(path)`, `pyarrow.parquet.read_table(path)` or"
        " duckdb.",
    ]
    create_markdown_artifact(
        key=f"{flow_name}-outputs", markdown="\n".join(lines), description=f"{flow_name} outputs"
    )
    logger = get_run_logger()
    for name, path in outputs.items():
        logger.info("output %s: %s", name, path)
    cached = sum(result.cached for result in stages.values())
    logger.info("%d of %d stages cached", cached, len(stages))


def finish_build(flow_name: str, stages: Mapping[str, StageResult]) -> dict[str, str]:
    """Publish the run's artifacts and return the train / validation paths of its ``assemble`` stage."""
    assembled = stages["assemble"]
    outputs = {"train": assembled.paths["main"], "validation": assembled.paths["validation"]}
    publish_run_artifacts(flow_name, stages, outputs)
    return outputs


def resolve_demo_default(
    imagereward_path: str | None,
    benchmark_path: str | None,
    *,
    artifacts_dir: str | None,
    demo_prompts: int | None,
    seed: int,
) -> tuple[str, str]:
    """The ImageRewardDB and MJ-Bench paths to use: the given ones, else the demo corpus' copies."""
    if imagereward_path is not None and benchmark_path is not None:
        return imagereward_path, benchmark_path
    demo = demo_corpus_task(artifacts_dir, demo_prompts, seed)
    return imagereward_path or str(demo.imagerewarddb), benchmark_path or str(demo.mjbench)


class ParameterError(ValueError):
    """A flow parameter is invalid; raised before any stage runs. The message names the flow and it."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number_in(low: float, high: float, *, high_open: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return False
        return low <= value < high if high_open else low <= value <= high

    return check


#: Each checked build-flow parameter: (test, what a valid value is).
PARAMETER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "validation_fraction": (_number_in(0.0, 1.0, high_open=True), "a number in [0, 1)"),
    "dedup_threshold": (_number_in(0.0, 1.0, high_open=False), "a number in [0, 1]"),
    "image_check": (lambda value: value in ("none", "header", "decode"), "one of 'none', 'header', 'decode'"),
    "shards": (_positive_int, "a positive integer"),
    "negatives_search_k": (_positive_int, "a positive integer"),
    "negatives_index": (lambda value: value in ("auto", "flat", "ivf"), "one of 'auto', 'flat', 'ivf'"),
    "seed": (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
}


def check_parameters(flow_name: str, **values: Any) -> None:
    """Check a flow's parameters against :data:`PARAMETER_RULES` before any stage runs: the first
    invalid one raises :class:`ParameterError` naming the flow, the parameter and the value."""
    for name, value in values.items():
        test, wanted = PARAMETER_RULES[name]
        if not test(value):
            raise ParameterError(f"{flow_name}: parameter {name} must be {wanted}, got {value!r}")


#: Stages after pairs that decode images: assemble drops the pairs whose image they rejected.
IMAGE_READING_STAGES = ("embed",)

#: Adds stages to a perspective's build (into the stages dict it is given) and returns the extra pair
#: tables they produce, to be assembled with the rating pairs.
MorePairs = Callable[[StageRunner, dict[str, StageResult]], list[str]]


def build_rating_perspective(
    flow_name: str,
    perspective: Perspective,
    *,
    imagereward_path: str | None,
    imagereward_split: str | None,
    image_root: str | None,
    benchmark_path: str | None,
    benchmark_subsets: list[str] | None,
    dedup_threshold: float,
    seed: int,
    validation_fraction: float,
    image_check: str,
    artifacts_dir: str | None,
    demo_prompts: int | None,
    shards: int = 1,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
    more_pairs: MorePairs | None = None,
    more_parameters: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The whole recipe of a rating perspective: the rating-pairs spine, the stages ``more_pairs``
    adds (hard negatives, for alignment), then assemble; its stages run where ``task_runner`` says
    (see :mod:`flows.runners`). Every parameter (and ``more_parameters``, those of ``more_pairs``) is
    checked first, before any stage runs."""
    check_parameters(
        flow_name,
        validation_fraction=validation_fraction,
        dedup_threshold=dedup_threshold,
        image_check=image_check,
        shards=shards,
        seed=seed,
        **(more_parameters or {}),
    )
    with stage_runner(task_runner, dask_address) as runner:
        imagereward_path, benchmark_path = resolve_demo_default(
            imagereward_path,
            benchmark_path,
            artifacts_dir=artifacts_dir,
            demo_prompts=demo_prompts,
            seed=seed,
        )
        stages = rating_pairs_stages(
            runner=runner,
            perspective=perspective,
            imagereward_path=imagereward_path,
            imagereward_split=imagereward_split,
            image_root=image_root,
            benchmark_path=benchmark_path,
            benchmark_subsets=benchmark_subsets,
            dedup_threshold=dedup_threshold,
            image_check=image_check,
            shards=shards,
            artifacts_dir=artifacts_dir,
        )
        pair_tables = [stages["pairs"].path]
        if more_pairs is not None:
            pair_tables += more_pairs(runner, stages)
        # a pair whose image a later stage (embed) found unreadable is not assembled
        image_rejects = [stages[name].paths["rejects"] for name in IMAGE_READING_STAGES if name in stages]
        stages["assemble"] = runner.run(
            assemble_pairs_task,
            pair_tables,
            seed=seed,
            validation_fraction=validation_fraction,
            image_rejects=image_rejects,
            root=artifacts_dir,
        )
        require_rows(stages["assemble"])
    return finish_build(flow_name, stages)
