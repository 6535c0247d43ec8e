"""build-fidelity-data: ImageRewardDB fidelity (artifact) ratings → preference pairs.

Recipe: ingest → dedup against MJ-Bench captions → ratings (fidelity) → pairs → assemble.
With no dataset paths given, it runs on the embedded demo corpus.
"""

from __future__ import annotations

from prefect import flow

from data.validate import ImageCheck
from flows.common import build_rating_perspective
from flows.runners import TaskRunnerName
from tasks.dedup import DEFAULT_THRESHOLD

FLOW_NAME = "build-fidelity-data"


@flow(name=FLOW_NAME, log_prints=True)
def build_fidelity_data(
    imagereward_path: str | None = None,
    imagereward_split: str | None = "train",
    image_root: str | None = None,
    benchmark_path: str | None = None,
    benchmark_subsets: list[str] | None = None,
    dedup_threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    validation_fraction: float = 0.1,
    image_check: ImageCheck = "decode",
    artifacts_dir: str | None = None,
    demo_prompts: int | None = None,
    shards: int = 1,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict[str, str]:
    """Build fidelity training pairs; returns the train and validation Parquet paths.
    ``shards`` splits dedup's prompts into that many shard tasks; ``task_runner="dask"`` runs the
    stages on a Dask cluster (``dask_address``, else a temporary local one; see flows/runners.py)."""
    return build_rating_perspective(
        FLOW_NAME,
        "fidelity",
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
    )


if __name__ == "__main__":
    build_fidelity_data()
