"""The train stage (cached, atomic, resumable) and the train-reward-model flow as real flow runs."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

import tasks.train
from flows.train_reward_model import train_reward_model
from reward.checkpoint import read_reward_config
from reward.scoring import RewardScorer
from tasks.train import accelerate_command, tiny_backbone, train
from tests.reward_support import assembled_tables, one_torch_thread, pictures, quick_job  # noqa: F401


@pytest.fixture(scope="module")
def stage_inputs(demo_corpus: Path, tmp_path_factory) -> dict[str, str]:
    art = tmp_path_factory.mktemp("stage-art")
    return {**assembled_tables(demo_corpus, art), "backbone": str(tiny_backbone(root=art)), "art": str(art)}


def test_tiny_backbone_is_built_once(tmp_path: Path) -> None:
    folder = tiny_backbone(root=tmp_path)
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert tiny_backbone(root=tmp_path) == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    assert folder == tmp_path.resolve() / "tiny-backbone" / "llava-seed0"
    assert not list(folder.parent.glob("*.tmp-*"))


def test_stage_trains_once_then_is_cached(stage_inputs: dict[str, str], tmp_path: Path) -> None:
    job = quick_job(
        stage_inputs["backbone"], stage_inputs["pairs"], eval_data=stage_inputs["pairs_validation"]
    )
    first = train(job, root=tmp_path)
    assert not first.cached and first.path == tmp_path.resolve() / "train" / first.key
    config = read_reward_config(first.path)
    assert config.training_data["key"].startswith("stage:assemble_pairs:")  # the assembled table's stage key
    assert config.training["global_step"] == 2 and first.stats["global_step"] == 2
    manifest = json.loads(Path(first.manifest_path).read_text())
    assert manifest["outputs"]["main"]["path"] == str(first.path)
    assert manifest["inputs"]["train"]["fingerprint"] == config.training_data["key"]
    assert (
        "eval_accuracy" in manifest["stats"]["metrics"]
        and first.rows_in == config.training_data["train_rows"]
    )
    assert not (tmp_path / "train" / f"{first.key}.checkpoints").exists()

    again = train(job, root=tmp_path)
    assert again.cached and again.path == first.path and again.key == first.key
    other = dataclasses.replace(job, training=dataclasses.replace(job.training, learning_rate=5e-3))
    assert train(other, root=tmp_path).key != first.key


def test_killed_run_leaves_no_model_and_the_next_run_resumes(
    stage_inputs: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    job = quick_job(stage_inputs["backbone"], stage_inputs["pairs"], max_steps=3, save_steps=1)

    def killed(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(tasks.train.os, "replace", killed)
    with pytest.raises(OSError, match="killed before the rename"):
        train(job, root=tmp_path)
    monkeypatch.undo()
    stage_dir = tmp_path / "train"
    assert not list(stage_dir.glob("*.json")) and not list(stage_dir.glob("*.tmp-*"))
    (checkpoints,) = stage_dir.glob("*.checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-3"]

    resumed = train(job, root=tmp_path)
    assert not resumed.cached and resumed.stats["resumed"] is True and resumed.stats["global_step"] == 3
    assert not checkpoints.exists()


def test_accelerate_command_line(tmp_path: Path) -> None:
    command = accelerate_command(
        tmp_path / "job.json", tmp_path / "out", tmp_path / "ckpt", num_processes=4, resume=True
    )
    assert command == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "-m",
        "reward.cli",
        "train",
        "--job",
        str(tmp_path / "job.json"),
        "--output",
        str(tmp_path / "out"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--resume",
    ]


@pytest.mark.usefixtures("prefect_harness")
class TestFlow:
    def test_demo_default_builds_data_and_backbone_then_trains(self, tmp_path: Path) -> None:
        art = str(tmp_path / "art")
        options = {"artifacts_dir": art, "demo_prompts": 24, "max_steps": 2, "batch_size": 4}
        outputs = train_reward_model(perspective="fidelity", **options)
        model = Path(outputs["model"])
        assert model.is_relative_to(tmp_path / "art" / "train") and outputs["perspective"] == "fidelity"
        assert Path(outputs["train"]).is_relative_to(tmp_path / "art" / "assemble_pairs")
        config = read_reward_config(model)
        assert (config.loss.kind, config.head.kind, config.training["global_step"]) == ("bt", "skipca", 2)
        assert (
            Path(config.backbone.name_or_path)
            == (tmp_path / "art" / "tiny-backbone" / "llava-seed0").resolve()
        )
        scorer = RewardScorer.from_pretrained(model, device="cpu")
        assert scorer.score(pictures(2, seed=1), "two red circles").shape == (2,)

        stages = Artifact.get("train-reward-model-fidelity-stages")
        rows = stages.data if isinstance(stages.data, list) else json.loads(stages.data)
        assert [(row["stage"], row["status"]) for row in rows] == [("train", "computed")]
        card = Artifact.get("train-reward-model-fidelity-model")
        assert card is not None and str(model) in card.data and "eval_accuracy" in card.data

        assert train_reward_model(perspective="fidelity", **options) == outputs
        rows = Artifact.get("train-reward-model-fidelity-stages").data
        rows = rows if isinstance(rows, list) else json.loads(rows)
        assert [(row["stage"], row["status"]) for row in rows] == [("train", "cached")]

    def test_safety_trains_with_cross_entropy(self, tmp_path: Path) -> None:
        outputs = train_reward_model(
            perspective="safety",
            artifacts_dir=str(tmp_path / "art"),
            demo_prompts=24,
            max_steps=2,
            batch_size=4,
            head_kind="linear",
            lora_rank=0,
        )
        config = read_reward_config(outputs["model"])
        assert (config.loss.kind, config.head.kind, config.lora) == ("ce", "linear", None)
        assert (Path(outputs["model"]) / "projector.safetensors").is_file()

    def test_unknown_perspective_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown perspective 'beauty'"):
            train_reward_model(perspective="beauty", artifacts_dir=str(tmp_path))
