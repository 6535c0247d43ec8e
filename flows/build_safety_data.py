"""build-safety-data: UnsafeBench rows → unpaired (prompt, image, label) training data.

Recipe: ingest (label 1 = safe, 0 = unsafe) → assemble (shuffle, train/validation). The rows are
unpaired: the safety perspective trains with cross-entropy, not Bradley-Terry.
With no dataset path given, it runs on the embedded demo corpus' UnsafeBench-layout set.
"""

from __future__ import annotations

from prefect import flow

from data.validate import ImageCheck
from flows.common import check_parameters, demo_corpus_task, finish_build
from flows.runners import TaskRunnerName, stage_runner
from tasks.assemble import assemble_unpaired_task
from tasks.cache import require_rows
from tasks.ingest import ingest_safety_task

FLOW_NAME = "build-safety-data"


@flow(name=FLOW_NAME, log_prints=True)
def build_safety_data(
    unsafebench_path: str | None = None,
    unsafebench_split: str | None = "train",
    image_root: str | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    image_check: ImageCheck = "decode",
    artifacts_dir: str | None = None,
    demo_prompts: int | None = None,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict[str, str]:
    """Build safety training rows; returns the train and validation Parquet paths.
    ``task_runner="dask"`` runs the stages on a Dask cluster (see flows/runners.py)."""
    check_parameters(FLOW_NAME, validation_fraction=validation_fraction, image_check=image_check, seed=seed)
    with stage_runner(task_runner, dask_address) as runner:
        if unsafebench_path is None:
            unsafebench_path = str(demo_corpus_task(artifacts_dir, demo_prompts, seed).unsafebench)
        stages = {
            "ingest_safety": runner.run(
                ingest_safety_task,
                unsafebench_path,
                split=unsafebench_split,
                image_root=image_root,
                image_check=image_check,
                root=artifacts_dir,
            )
        }
        require_rows(stages["ingest_safety"])
        stages["assemble"] = runner.run(
            assemble_unpaired_task,
            stages["ingest_safety"].path,
            seed=seed,
            validation_fraction=validation_fraction,
            root=artifacts_dir,
        )
        require_rows(stages["assemble"])
    return finish_build(FLOW_NAME, stages)


if __name__ == "__main__":
    build_safety_data()
