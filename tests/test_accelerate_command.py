"""Training on several processes: the ``accelerate launch`` command the train stage builds, read back
by accelerate's and the CLI's own parsers (no GPU needed), and one real launch from the flow on CPU."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import tasks.train
from flows.train_reward_model import train_reward_model
from reward.checkpoint import read_reward_config
from reward.cli import build_parser
from reward.training import TrainingJob
from tasks.train import accelerate_command, tiny_backbone
from tests.reward_support import assembled_tables, one_torch_thread  # noqa: F401


def launch_arguments(command: list[str]) -> argparse.Namespace:
    """``accelerate launch``'s reading of the command (its own parser)."""
    from accelerate.commands.launch import launch_command_parser

    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(command[3:])


def training_arguments(launch: argparse.Namespace) -> argparse.Namespace:
    """``llava-reward train``'s reading of the arguments accelerate passes on."""
    assert launch.module and launch.training_script == "reward.cli"
    return build_parser().parse_args(launch.training_script_args)


def test_the_command_runs_the_job_file_on_that_many_processes(tmp_path: Path) -> None:
    job, output, checkpoints = tmp_path / "job.json", tmp_path / "out", tmp_path / "ckpt"
    launch = launch_arguments(accelerate_command(job, output, checkpoints, num_processes=4, resume=False))
    assert launch.num_processes == 4
    train = training_arguments(launch)
    assert train.command == "train" and Path(train.job) == job and Path(train.output) == output
    assert Path(train.checkpoint_dir) == checkpoints and train.resume is None


def test_resume_continues_from_the_latest_checkpoint(tmp_path: Path) -> None:
    command = accelerate_command(tmp_path / "j", tmp_path / "o", tmp_path / "c", num_processes=2, resume=True)
    assert training_arguments(launch_arguments(command)).resume is True  # no path: the latest checkpoint


def test_the_number_of_processes_is_a_parameter_of_the_training_flow() -> None:
    assert inspect.signature(train_reward_model.fn).parameters["num_processes"].default == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_multi_process_run_trains_through_accelerate_launch(
    demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = assembled_tables(demo_corpus, tmp_path / "data")
    backbone = tiny_backbone(root=tmp_path / "data")
    launched: list[tuple[list[str], TrainingJob]] = []
    real_run = subprocess.run

    def launch(command: list[str], **options) -> subprocess.CompletedProcess:
        job_file = Path(command[command.index("--job") + 1])
        launched.append((list(command), TrainingJob.from_json(job_file)))
        return real_run(command, **options)

    monkeypatch.setattr(tasks.train.subprocess, "run", launch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the launched processes train on CPU, GPUs or not
    outputs = train_reward_model(
        perspective="fidelity",
        train_path=tables["pairs"],
        validation_path=tables["pairs_validation"],
        backbone=str(backbone),
        max_steps=2,
        batch_size=4,
        num_processes=2,
        artifacts_dir=str(tmp_path / "art"),
    )

    ((command, job),) = launched
    launch_args = launch_arguments(command)
    train_args = training_arguments(launch_args)
    model = Path(outputs["model"])
    assert launch_args.num_processes == 2 and train_args.resume is None
    assert Path(train_args.output).parent == model.parent and Path(train_args.output).name.startswith(
        f"{model.name}.tmp-"
    )
    assert Path(train_args.checkpoint_dir) == model.with_name(f"{model.name}.checkpoints")
    assert job.train_data == tables["pairs"] and job.training.max_steps == 2
    assert job.data_key.startswith("stage:assemble_pairs:"), "the job file carries the data's key"
    config = read_reward_config(model)
    assert config.perspective == "fidelity" and config.training["global_step"] == 2
    assert not Path(train_args.job).exists() and not Path(train_args.checkpoint_dir).exists()
    assert not list(model.parent.glob("*.tmp-*"))
