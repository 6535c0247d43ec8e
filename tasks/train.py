"""Train stage: assembled training Parquet → a trained perspective folder (safetensors + JSON).

Keyed like every stage (:mod:`tasks.cache`): the key hashes the stage version, the code of the
training library, the job's settings and the content fingerprints of its inputs (the training and
validation tables — for a stage output, its upstream key — and a local base-model folder). Output::

    ARTIFACTS/train/<key>/               the perspective folder (see reward.checkpoint)
    ARTIFACTS/train/<key>.json           manifest, written last: the stage is finished iff it exists
    ARTIFACTS/train/<key>.checkpoints/   resumable Trainer checkpoints while training (removed after)

Training writes into ``<key>.tmp-<id>/`` and renames it into place, so a killed run never leaves a
folder a later run takes for finished; the later run resumes from the newest checkpoint instead.
With ``num_processes > 1`` the job runs under ``accelerate launch`` (several GPUs), else in-process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import reward.backbones
import reward.checkpoint
import reward.config
import reward.data
import reward.heads
import reward.losses
import reward.model
import reward.training
from reward.checkpoint import read_reward_config
from reward.training import TrainingJob, train_reward_model
from tasks.cache import MAIN, Produced, Stage, StageResult, artifacts_root, run_keyed
from tasks.prefect_stage import forward_logs, log_stage

TRAIN = Stage(
    "train",
    1,
    (
        sys.modules[__name__],
        reward.backbones,
        reward.checkpoint,
        reward.config,
        reward.data,
        reward.heads,
        reward.losses,
        reward.model,
        reward.training,
    ),
)
TINY_BACKBONE_DIR = "tiny-backbone"


def _local_backbone(job: TrainingJob) -> Path | None:
    path = Path(job.backbone.name_or_path).expanduser()
    return path.resolve() if path.is_dir() else None


def _key_material(job: TrainingJob, num_processes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, inputs) that identify a training run; paths of inputs are fingerprinted, not hashed."""
    params = job.to_dict()
    for name in ("train_data", "eval_data", "data_key"):
        params.pop(name)
    backbone = _local_backbone(job)
    if backbone is not None:
        params["backbone"] = {**params["backbone"], "name_or_path": None}
    params["num_processes"] = num_processes
    inputs = {"train": job.train_data, "validation": job.eval_data, "backbone": backbone}
    return params, inputs


def accelerate_command(
    job_path: Path, output: Path, checkpoints: Path, *, num_processes: int, resume: bool
) -> list[str]:
    """The ``accelerate launch`` command line that runs a job file on ``num_processes`` devices."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "-m",
        "reward.cli",
        "train",
        "--job",
        str(job_path),
        "--output",
        str(output),
        "--checkpoint-dir",
        str(checkpoints),
    ]
    return [*command, "--resume"] if resume else command


def _run(job: TrainingJob, staging: Path, checkpoints: Path, *, num_processes: int, resume: bool) -> None:
    if num_processes <= 1:
        train_reward_model(
            job, staging, checkpoint_dir=checkpoints, resume_from_checkpoint=True if resume else None
        )
        return
    job_path = checkpoints.with_name(f"{checkpoints.name}.job.json")
    checkpoints.mkdir(parents=True, exist_ok=True)
    job.to_json(job_path)
    command = accelerate_command(job_path, staging, checkpoints, num_processes=num_processes, resume=resume)
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"training under accelerate failed with exit status {completed.returncode}: {command}"
        )


def train(
    job: TrainingJob,
    *,
    num_processes: int = 1,
    keep_checkpoints: bool = False,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: train ``job`` unless a finished run with the same key exists; returns its model folder.

    ``job.data_key`` defaults to the training table's fingerprint (for a stage output, its key).
    """
    params, inputs = _key_material(job, num_processes)

    def produce(directory: Path, key: str, fingerprints: dict[str, Any]) -> Produced:
        final, checkpoints = directory / key, directory / f"{key}.checkpoints"
        keyed_job = replace(job, data_key=job.data_key or fingerprints["train"])
        staging = directory / f"{key}.tmp-{uuid.uuid4().hex}"
        resume = any(checkpoints.glob("checkpoint-*"))
        try:
            _run(keyed_job, staging, checkpoints, num_processes=num_processes, resume=resume)
            if final.exists():  # a previous run renamed its folder but died before its manifest
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
            checkpoints.with_name(f"{checkpoints.name}.job.json").unlink(missing_ok=True)
        config = read_reward_config(final)
        rows = int(config.training_data.get("train_rows") or 0)
        stats = {
            "perspective": config.perspective,
            "resumed": resume,
            "trainable_fraction": config.trainable_fraction,
            "parameters": config.parameters,
            "global_step": config.training.get("global_step"),
            "metrics": config.training.get("metrics", {}),
            "stopped_by_time_budget": config.training.get("stopped_by_time_budget"),
        }
        return Produced({MAIN: {"path": str(final), "rows": rows}}, rows, rows, 0, stats)

    return run_keyed(TRAIN, params=params, inputs=inputs, produce=produce, root=root)


def tiny_backbone(*, arch: str = "llava", seed: int = 0, root: str | Path | None = None) -> Path:
    """A tiny random-weight backbone (:mod:`reward.tiny`) under the artifact root, built once, atomically."""
    from reward.tiny import build_tiny_backbone

    directory = artifacts_root(root) / TINY_BACKBONE_DIR
    final = directory / f"{arch}-seed{seed}"
    if (final / "config.json").is_file():  # folders are renamed into place whole: reading needs no lock
        return final
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / f"{final.name}.lock")):
        if (final / "config.json").is_file():
            return final
        staging = directory / f"{final.name}.tmp-{uuid.uuid4().hex}"
        try:
            build_tiny_backbone(staging, arch, seed=seed)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


@task(name="train-reward-model", cache_policy=NO_CACHE, persist_result=False)
def train_task(
    job: TrainingJob, *, num_processes: int = 1, keep_checkpoints: bool = False, root: str | None = None
) -> StageResult:
    """The train stage as a Prefect task: progress (steps, loss, accuracy) goes to the run log."""
    with forward_logs("reward", get_run_logger()):
        result = train(job, num_processes=num_processes, keep_checkpoints=keep_checkpoints, root=root)
    log_stage(result)
    return result


@task(name="tiny-backbone", cache_policy=NO_CACHE, persist_result=False)
def tiny_backbone_task(arch: str = "llava", seed: int = 0, root: str | None = None) -> str:
    """The demo's tiny random-weight backbone folder (built on first use)."""
    folder = tiny_backbone(arch=arch, seed=seed, root=root)
    get_run_logger().info("tiny %s backbone ready at %s", arch, folder)
    return str(folder)
