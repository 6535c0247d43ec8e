"""build-alignment-data: ImageRewardDB alignment ratings → preference pairs + FAISS hard negatives.

Recipe: ingest → dedup against MJ-Bench captions → ratings (image-text alignment) → pairs → open_clip
embeddings → hard negatives (a nearer prompt, a nearer image) → assemble (shuffle, train/validation).
With no dataset paths given, it runs on the embedded demo corpus (generated on first use). dedup and
embed can run as ``shards`` shard tasks each; every stage can run on a Dask cluster (``task_runner``).
"""

from __future__ import annotations

from prefect import flow

from data.validate import ImageCheck
from flows.common import embed_stages, finish_build, rating_pairs_stages, resolve_demo_default
from flows.runners import TaskRunnerName, stage_runner
from tasks.assemble import assemble_pairs_task
from tasks.dedup import DEFAULT_THRESHOLD
from tasks.embed import ClipSpec
from tasks.negatives import SearchIndex, negatives_task
from tasks.shards import check_shard_count

FLOW_NAME = "build-alignment-data"


@flow(name=FLOW_NAME, log_prints=True)
def build_alignment_data(
    imagereward_path: str | None = None,
    imagereward_split: str | None = "train",
    image_root: str | None = None,
    benchmark_path: str | None = None,
    benchmark_subsets: list[str] | None = None,
    dedup_threshold: float = DEFAULT_THRESHOLD,
    hard_negatives: bool = True,
    clip_model: str = "demo-tiny-clip",
    clip_pretrained: str | None = None,
    clip_seed: int = 0,
    negatives_search_k: int = 32,
    negatives_index: SearchIndex = "auto",
    seed: int = 0,
    validation_fraction: float = 0.1,
    image_check: ImageCheck = "header",
    artifacts_dir: str | None = None,
    demo_prompts: int | None = None,
    shards: int = 1,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict[str, str]:
    """Build alignment training pairs. Paths left empty use the demo corpus (``demo_prompts`` sets its
    size). Returns the paths of the train and validation Parquet files.

    ``shards > 1`` splits the heavy stages, dedup (prompts) and embed (images and prompts), into that
    many shard tasks and a merge each: the same tables and keys as one shard. ``task_runner="dask"``
    runs every stage on a Dask cluster: the scheduler at ``dask_address``, else a temporary local
    cluster (needs the ``dask`` extra; see flows/runners.py)."""
    check_shard_count(shards)
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
            perspective="alignment",
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
        if hard_negatives:
            clip = ClipSpec(model_name=clip_model, pretrained=clip_pretrained, seed=clip_seed)
            stages |= embed_stages(
                runner, stages["ratings"].path, clip=clip, shards=shards, root=artifacts_dir
            )
            stages["negatives"] = runner.run(
                negatives_task,
                stages["ratings"].path,
                stages["embed"].path,
                stages["embed"].paths["text"],
                search_k=negatives_search_k,
                index=negatives_index,
                root=artifacts_dir,
            )
            pair_tables.append(stages["negatives"].path)
        stages["assemble"] = runner.run(
            assemble_pairs_task,
            pair_tables,
            seed=seed,
            validation_fraction=validation_fraction,
            root=artifacts_dir,
        )
    return finish_build(FLOW_NAME, stages)


if __name__ == "__main__":
    build_alignment_data()
