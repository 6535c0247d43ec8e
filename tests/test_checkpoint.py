"""Perspective folders: exact save / load round trips, no pickles, several perspectives on one base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

import reward.checkpoint
from reward.backbones import load_backbone
from reward.checkpoint import (
    CheckpointError,
    RewardModelConfig,
    load_reward_model,
    read_reward_config,
)
from reward.config import BackboneConfig, ConfigError, HeadConfig, LoraSettings, LossConfig
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone
from tests.reward_support import (
    PROMPTS,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    pictures,
    same_scores,
    save,
    scores,
    trained_model,
)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llava", "llava")


@pytest.fixture(scope="module")
def two_perspectives(backbone_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    alignment = trained_model(
        backbone_dir, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=1
    )
    fidelity = trained_model(
        backbone_dir,
        perspective="fidelity",
        head=HeadConfig(kind="linear", gpm_dim=2, pooling="mean"),
        lora=LoraSettings(rank=4),
        seed=2,
    )
    return {
        "alignment": save(alignment, root / "alignment", backbone_dir),
        "fidelity": save(fidelity, root / "fidelity", backbone_dir, LossConfig("gpm", temperature=0.5)),
    }


class TestRoundTrip:
    def test_lora_model_round_trips_exactly(self, backbone_dir: Path, tmp_path: Path) -> None:
        model = trained_model(
            backbone_dir, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=0
        )
        folder = save(model, tmp_path / "alignment", backbone_dir)
        loaded, config = load_reward_model(folder)
        assert config == read_reward_config(folder) and config.training_data["key"].startswith("stage:")
        saved = get_peft_model_state_dict(model.peft_model, adapter_name="alignment")
        restored = get_peft_model_state_dict(loaded.peft_model, adapter_name="alignment")
        assert saved.keys() == restored.keys() and any("multi_modal_projector" in key for key in saved)
        assert all(torch.equal(saved[key], restored[key]) for key in saved)
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.head.state_dict().values(), loaded.head.state_dict().values(), strict=True)
        )
        images = pictures(4, seed=3)
        assert same_scores(scores(model, images), scores(loaded, images))
        assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training

    def test_folder_holds_only_json_and_safetensors_and_loading_never_unpickles(
        self, backbone_dir: Path, tmp_path: Path, monkeypatch
    ) -> None:
        model = trained_model(
            backbone_dir, perspective="safety", head=HeadConfig(), lora=LoraSettings(rank=2), seed=0
        )
        folder = save(model, tmp_path / "safety", backbone_dir, LossConfig("ce"))
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert files == [
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
            "head.safetensors",
            "reward_config.json",
        ]

        def refuse(*args, **kwargs):
            raise AssertionError("torch.load was called")

        monkeypatch.setattr(torch, "load", refuse)
        loaded, _ = load_reward_model(folder)
        assert same_scores(scores(model, pictures(2, 4)), scores(loaded, pictures(2, 4)))

    def test_adapter_folder_is_a_standard_peft_adapter(self, backbone_dir: Path, tmp_path: Path) -> None:
        model = trained_model(
            backbone_dir, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=0
        )
        folder = save(model, tmp_path / "alignment", backbone_dir)
        plain = PeftModel.from_pretrained(load_backbone(str(backbone_dir)).model, str(folder / "adapter"))
        expected = get_peft_model_state_dict(model.peft_model, adapter_name="alignment")
        loaded = get_peft_model_state_dict(plain)
        assert expected.keys() == loaded.keys()
        assert all(torch.equal(expected[key], loaded[key]) for key in expected)

    def test_model_without_lora_saves_its_projector(self, backbone_dir: Path, tmp_path: Path) -> None:
        model = trained_model(
            backbone_dir, perspective="fidelity", head=HeadConfig(kind="linear"), lora=None, seed=5
        )
        folder = save(model, tmp_path / "fidelity", backbone_dir)
        assert (folder / "projector.safetensors").is_file() and not (folder / "adapter").exists()
        loaded, config = load_reward_model(folder)
        assert config.lora is None and loaded.peft_model is None
        images = pictures(3, seed=6)
        assert same_scores(scores(model, images), scores(loaded, images))

    def test_config_json_round_trip_and_errors(self, backbone_dir: Path, tmp_path: Path) -> None:
        config = RewardModelConfig(
            "alignment",
            BackboneConfig(str(backbone_dir), hidden_layer=-2),
            head=HeadConfig(kind="linear"),
            loss=LossConfig(temperature=0.1),
            lora=None,
        )
        assert RewardModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
            RewardModelConfig.from_dict({**config.to_dict(), "colour": "red"})
        with pytest.raises(ConfigError, match="format_version 9 is not supported"):
            RewardModelConfig.from_dict({**config.to_dict(), "format_version": 9})
        with pytest.raises(
            CheckpointError, match=r"nowhere: not a reward model folder \(no reward_config.json\)"
        ):
            read_reward_config(tmp_path / "nowhere")


class TestBrokenFolders:
    def test_missing_or_corrupt_weights_name_the_file(self, backbone_dir: Path, tmp_path: Path) -> None:
        model = trained_model(
            backbone_dir, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=0
        )
        folder = save(model, tmp_path / "alignment", backbone_dir)
        (folder / "head.safetensors").write_bytes(b"not safetensors")
        with pytest.raises(CheckpointError, match=r"head.safetensors: not a readable safetensors file"):
            load_reward_model(folder)
        (folder / "adapter" / "adapter_model.safetensors").unlink()
        with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: missing weights file"):
            load_reward_model(folder)

    def test_head_that_does_not_fit_is_refused(self, backbone_dir: Path, tmp_path: Path) -> None:
        model = trained_model(
            backbone_dir, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=0
        )
        folder = save(model, tmp_path / "alignment", backbone_dir)
        data = json.loads((folder / "reward_config.json").read_text())
        data["head"]["kind"] = "linear"  # the saved weights are a SkipCA head's
        (folder / "reward_config.json").write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match=r"head.safetensors: does not fit the model"):
            load_reward_model(folder)


class TestSeveralPerspectives:
    def test_one_base_model_and_exact_switching(self, two_perspectives: dict[str, Path], monkeypatch) -> None:
        loads = []
        original = reward.checkpoint.load_backbone_from_config
        monkeypatch.setattr(
            reward.checkpoint,
            "load_backbone_from_config",
            lambda config: loads.append(config) or original(config),
        )
        scorer = RewardScorer.from_pretrained(
            [two_perspectives["alignment"], two_perspectives["fidelity"]], device="cpu"
        )
        assert len(loads) == 1 and scorer.perspectives == ["alignment", "fidelity"]
        assert set(scorer.model.peft_model.peft_config) == {"alignment", "fidelity"}
        images = pictures(4, seed=7)
        first = scorer.score(images, PROMPTS, perspective="alignment")
        other = scorer.score(images, PROMPTS, perspective="fidelity")
        again = scorer.score(images, PROMPTS, perspective="alignment")
        assert first.shape == (4,) and other.shape == (4, 4)
        assert np.array_equal(first, again)  # bit for bit after switching away and back
        # Each perspective scores as it does when loaded alone.
        for name, expected in (("alignment", first), ("fidelity", other)):
            alone, _ = load_reward_model(two_perspectives[name])
            np.testing.assert_allclose(scores(alone, images).numpy(), expected, rtol=0, atol=1e-6)

    def test_models_without_lora_switch_their_projectors(self, backbone_dir: Path, tmp_path: Path) -> None:
        folders = {
            name: save(
                trained_model(backbone_dir, perspective=name, head=HeadConfig(), lora=None, seed=seed),
                tmp_path / name,
                backbone_dir,
            )
            for name, seed in (("alignment", 1), ("fidelity", 2))
        }
        scorer = RewardScorer.from_pretrained(folders, device="cpu")
        images = pictures(3, seed=8)
        first = scorer.score(images, PROMPTS[:3], perspective="alignment")
        second = scorer.score(images, PROMPTS[:3], perspective="fidelity")
        assert not np.array_equal(first, second)
        assert np.array_equal(first, scorer.score(images, PROMPTS[:3], perspective="alignment"))

    def test_incompatible_folders_are_refused(
        self, backbone_dir: Path, two_perspectives, tmp_path: Path
    ) -> None:
        other = save(
            trained_model(backbone_dir, perspective="safety", head=HeadConfig(), lora=None, seed=3),
            tmp_path / "safety",
            backbone_dir,
        )
        with pytest.raises(CheckpointError, match="trained without LoRA, unlike"):
            RewardScorer.from_pretrained([two_perspectives["alignment"], other], device="cpu")
        data = json.loads((two_perspectives["fidelity"] / "reward_config.json").read_text())
        data["backbone"]["hidden_layer"] = 1
        shifted = tmp_path / "shifted"
        shifted.mkdir()
        for item in two_perspectives["fidelity"].iterdir():
            target = shifted / item.name
            target.symlink_to(item)
        (shifted / "reward_config.json").unlink()
        (shifted / "reward_config.json").write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match=r"base model settings differ .*hidden_layer: -1 vs 1"):
            RewardScorer.from_pretrained([two_perspectives["alignment"], shifted], device="cpu")
        with pytest.raises(ValueError, match="perspective 'alignment' is in both"):
            RewardScorer.from_pretrained([two_perspectives["alignment"]] * 2, device="cpu")
        # Under other names the same folder loads twice.
        scorer = RewardScorer.from_pretrained(
            {"a": two_perspectives["alignment"], "b": two_perspectives["alignment"]}, device="cpu"
        )
        images = pictures(2, seed=9)
        assert np.array_equal(
            scorer.score(images, PROMPTS[:2], perspective="a"),
            scorer.score(images, PROMPTS[:2], perspective="b"),
        )
