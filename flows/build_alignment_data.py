"""build-alignment-data: ImageRewardDB alignment ratings → preference pairs + FAISS hard negatives.

Recipe: ingest → dedup against MJ-Bench captions → ratings (image-text alignment) → pairs → open_clip
embeddings → hard negatives (a nearer prompt, a nearer image) → assemble (shuffle, train/validation).
With no dataset paths given, it runs on the embedded demo corpus (generated on first use). dedup and
embed can run as ``shards`` shard tasks each; every stage can run on a Dask cluster (``task_runner``).
"""

from __future__ import annotations

from prefect import flow

from data.validate import ImageCheck
from flows.common import build_rating_perspective, embed_stages
from flows.runners import StageRunner, TaskRunnerName
from tasks.cache import StageResult, require_rows
from tasks.dedup import DEFAULT_THRESHOLD
from tasks.embed import ClipSpec
from tasks.negatives import SearchIndex, negatives_task

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
    image_check: ImageCheck = "decode",
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

    def hard_negative_pairs(runner: StageRunner, stages: dict[str, StageResult]) -> list[str]:
        """embed (optionally sharded) → negatives: one more pair table to assemble."""
        clip = ClipSpec(model_name=clip_model, pretrained=clip_pretrained, seed=clip_seed)
        stages |= embed_stages(runner, stages["ratings"].path, clip=clip, shards=shards, root=artifacts_dir)
        require_rows(stages["embed"])
        stages["negatives"] = runner.run(
            negatives_task,
            stages["ratings"].path,
            stages["embed"].path,
            stages["embed"].paths["text"],
            search_k=negatives_search_k,
            index=negatives_index,
            root=artifacts_dir,
        )
        return [stages["negatives"].path]

    return build_rating_perspective(
        FLOW_NAME,
        "alignment",
        imagereward_path=imagereward_path,
        imagereward_split=imagereward_split,
        image_root=image_root,
        benchmark_path=benchmark_path,
        benchmark_subsets=benchmark_subsets,
        dedup_threshold=dedup_threshold,
        seed=seed,
        validation_fraction=validation_fraction,
        image_check=image_check,
        artifacts_dir=artifacts_dir,
        demo_prompts=demo_prompts,
        shards=shards,
        task_runner=task_runner,
        dask_address=dask_address,
        more_pairs=hard_negative_pairs if hard_negatives else None,
        more_parameters={"negatives_search_k": negatives_search_k, "negatives_index": negatives_index},
    )


if __name__ == "__main__":
    build_alignment_data()
