"""Importing published LLaVA-Reward checkpoints: bad folders fail with every problem named, pickles never
run, and the native Phi-3.5-vision base trains with LoRA like the other backbones.

Built on copies of the paper-oracle fixture (skipped with the reason when it is absent); sizes and names
come from the fixture's files, so another fixture set of the same kind runs through the same tests."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from PIL import Image

from reward.checkpoint import CheckpointError, RewardModelConfig, load_reward_model
from reward.cli import main
from reward.config import BackboneConfig, HeadConfig, LoraSettings
from reward.import_checkpoint import CheckpointImportError, import_checkpoint


class Payload:
    """Unpickling this writes a marker file: what a hostile pytorch_model.bin would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def expected_of(oracle: Path) -> dict:
    return json.loads((oracle / "expected.json").read_text())


def bradley_terry_checkpoint(oracle: Path) -> Path:
    """The fixture's Bradley-Terry checkpoint folder."""
    checkpoints = expected_of(oracle)["checkpoints"]
    name = next(
        key for key, value in checkpoints.items() if not value["reward_config"]["is_general_preference"]
    )
    return oracle / checkpoints[name]["path"]


@pytest.fixture()
def checkpoint(paper_oracle: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture's Bradley-Terry checkpoint."""
    source = bradley_terry_checkpoint(paper_oracle)
    return Path(shutil.copytree(source, tmp_path / source.name))


@pytest.fixture()
def base(paper_oracle: Path) -> Path:
    return paper_oracle / "base"


@pytest.fixture()
def hidden(base: Path) -> int:
    """The base language model's width."""
    return int(json.loads((base / "config.json").read_text())["hidden_size"])


def head_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


class TestBadInput:
    def test_missing_files_are_all_listed(self, checkpoint, base, tmp_path) -> None:
        (checkpoint / "reward_config.yaml").unlink()
        (checkpoint / "lora" / "adapter_model.bin").unlink()
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        message = str(raised.value)
        assert "missing file reward_config.yaml" in message
        assert "missing file lora/adapter_model.bin (or adapter_model.safetensors)" in message
        assert not (tmp_path / "out").exists()

    def test_a_pickle_with_code_is_refused_and_never_runs(self, checkpoint, base, tmp_path) -> None:
        marker = tmp_path / "marker.txt"
        state = head_tensors(checkpoint)
        torch.save({**state, "extra": Payload(marker)}, checkpoint / "pytorch_model.bin")
        with pytest.raises(
            CheckpointError, match=r"holds something other than tensors; refused without running"
        ):
            import_checkpoint(checkpoint, base, tmp_path / "out")
        assert not marker.exists()
        # The file really is hostile: ordinary unpickling runs its code.
        with open(checkpoint / "pytorch_model.bin", "rb") as handle:
            torch.load(handle, weights_only=False)
        assert marker.read_text() == "ran"

    def test_a_pickle_of_plain_values_that_are_not_tensors_is_refused(
        self, checkpoint, base, tmp_path
    ) -> None:
        torch.save({"value_head.weight": [0.0, 1.0]}, checkpoint / "pytorch_model.bin")
        with pytest.raises(
            CheckpointError, match=r"expected a mapping of names to tensors, found \['list'\]"
        ):
            import_checkpoint(checkpoint, base, tmp_path / "out")

    def test_a_head_that_does_not_fit_the_base_is_named(self, checkpoint, base, hidden, tmp_path) -> None:
        state = head_tensors(checkpoint)
        wrong = hidden // 2
        state["W_q.weight"] = torch.zeros(wrong, wrong)
        state["value_head.weight"] = torch.zeros(1, wrong + 1)
        torch.save(state, checkpoint / "pytorch_model.bin")
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        message = str(raised.value)
        assert (
            f"W_q.weight has shape [{wrong}, {wrong}], the base model needs [{hidden}, {hidden}]" in message
        )
        assert f"value_head.weight has shape [1, {wrong + 1}], the base model needs [1, {hidden}]" in message

    def test_missing_and_unexpected_head_tensors_are_named(self, checkpoint, base, tmp_path) -> None:
        state = head_tensors(checkpoint)
        del state["W_k.weight"]
        state["score.weight"] = torch.zeros(1, 8)
        torch.save(state, checkpoint / "pytorch_model.bin")
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        assert "pytorch_model.bin: missing tensors ['W_k.weight']" in str(raised.value)
        assert "pytorch_model.bin: unexpected tensors ['score.weight']" in str(raised.value)

    def test_a_lora_adapter_for_other_modules_is_refused(self, checkpoint, base, tmp_path) -> None:
        config_path = checkpoint / "lora" / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["target_modules"] = [*config["target_modules"], "q_proj", "fc1"]
        config_path.write_text(json.dumps(config))
        weights = torch.load(checkpoint / "lora" / "adapter_model.bin", weights_only=True)
        tower = "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj"
        weights[f"{tower}.lora_A.weight"] = torch.zeros(config["r"], 16)
        torch.save(weights, checkpoint / "lora" / "adapter_model.bin")
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        message = str(raised.value)
        assert "LoRA adapter for other modules ['fc1', 'q_proj']" in message
        assert f"{tower}.lora_A.weight" in message

    def test_a_lora_adapter_for_a_deeper_model_is_refused(self, checkpoint, base, hidden, tmp_path) -> None:
        weights = torch.load(checkpoint / "lora" / "adapter_model.bin", weights_only=True)
        depth = int(json.loads((base / "config.json").read_text())["num_hidden_layers"])
        weights[f"model.layers.{depth}.self_attn.qkv_proj.lora_A.weight"] = torch.zeros(8, hidden)
        torch.save(weights, checkpoint / "lora" / "adapter_model.bin")
        with pytest.raises(
            CheckpointImportError, match=r"does not fit the base model's layers: 0 missing .*1 unexpected"
        ):
            import_checkpoint(checkpoint, base, tmp_path / "out")

    def test_reward_config_fields_are_checked(self, checkpoint, base, tmp_path) -> None:
        path = checkpoint / "reward_config.yaml"
        config = yaml.safe_load(path.read_text())
        config.update(value_head_dim=2, general_preference_tau=-1)
        del config["add_cross_attention"]
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        assert "reward_config.yaml: missing 'add_cross_attention'" in str(raised.value)
        path.write_text(yaml.safe_dump({**config, "add_cross_attention": True}))
        with pytest.raises(CheckpointImportError) as raised:
            import_checkpoint(checkpoint, base, tmp_path / "out")
        assert "general_preference_tau must be > 0, got -1" in str(raised.value)
        assert "a Bradley-Terry head needs value_head_dim 1, got 2" in str(raised.value)

    def test_a_base_of_another_shape_is_named(self, checkpoint, base, hidden, tmp_path) -> None:
        config = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**config, "hidden_size": 3072}))
        with pytest.raises(
            CheckpointImportError,
            match=rf"trained on a base with hidden_size=3072, the given base has {hidden}",
        ):
            import_checkpoint(checkpoint, base, tmp_path / "out")

    def test_an_existing_output_folder_is_kept_unless_overwrite(self, checkpoint, base, tmp_path) -> None:
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        with pytest.raises(CheckpointError, match="already exists and is not empty"):
            import_checkpoint(checkpoint, base, out)
        assert (out / "keep.txt").read_text() == "mine"
        import_checkpoint(checkpoint, base, out, overwrite=True)
        assert not (out / "keep.txt").exists() and (out / "reward_config.json").is_file()
        assert [
            path.name for path in tmp_path.iterdir() if path.name.startswith(".out.")
        ] == []  # no staging left

    def test_the_cli_reports_the_problems_and_exits_2(self, checkpoint, base, tmp_path, capsys) -> None:
        (checkpoint / "pytorch_model.bin").unlink()
        argv = ["import-checkpoint", str(checkpoint), "--base", str(base), "--out", str(tmp_path / "out")]
        assert main(argv, out=io.StringIO()) == 2
        assert "missing file pytorch_model.bin" in capsys.readouterr().err
        assert main([*argv, "--num-crops", "zero"], out=io.StringIO()) == 2
        assert "--num-crops must be a positive integer or 'base', got 'zero'" in capsys.readouterr().err


class TestFormatVersions:
    def test_format_1_skipca_folders_read_as_the_multi_head_variant(self) -> None:
        saved = RewardModelConfig("alignment", BackboneConfig("some/model")).to_dict()
        old = {**saved, "format_version": 1, "head": {**saved["head"], "kind": "skipca"}}
        old["head"].pop("norm_eps")
        assert RewardModelConfig.from_dict(old).head.kind == "skipca_mha"
        assert RewardModelConfig.from_dict(saved).head.kind == "skipca"  # format 2: the paper's head
        linear = {**old, "head": {**old["head"], "kind": "linear"}}
        assert RewardModelConfig.from_dict(linear).head.kind == "linear"


class TestTrainingOnTheNativeBase:
    def test_lora_training_completes_and_round_trips(self, paper_oracle: Path, tmp_path: Path) -> None:
        from reward.training import TrainingConfig, TrainingJob, train_reward_model

        cases = expected_of(paper_oracle)["cases"]
        images = [str(paper_oracle / case["image"]) for case in cases]
        pairs = pl.DataFrame(
            {
                "chosen_prompt": [cases[0]["caption"], cases[2]["caption"]],
                "chosen_image_uri": [images[0], images[2]],
                "rejected_prompt": [cases[0]["caption"], cases[2]["caption"]],
                "rejected_image_uri": [images[1], images[3]],
            }
        )
        pairs.write_parquet(tmp_path / "pairs.parquet")
        job = TrainingJob(
            perspective="alignment",
            backbone=BackboneConfig(str(paper_oracle / "base"), num_crops=1, dtype="float32"),
            train_data=str(tmp_path / "pairs.parquet"),
            head=HeadConfig(kind="skipca"),
            lora=LoraSettings(rank=2, dropout=0.0),
            training=TrainingConfig(
                max_steps=2, batch_size=2, learning_rate=0.05, logging_steps=1, use_cpu=True
            ),
        )
        result = train_reward_model(job, tmp_path / "model")
        assert result.to_dict()["global_step"] == 2
        model, config = load_reward_model(tmp_path / "model")
        assert config.backbone.num_crops == 1 and type(model.head).__name__ == "SkipCAHead"
        adapter = model.peft_model
        lora_b = [p for n, p in adapter.named_parameters() if "lora_B" in n]
        assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: it trained
        assert all("vision_embed_tokens" not in n for n, _ in adapter.named_parameters() if "lora_" in n)
        projector = model.backbone.projector
        trained = projector[0].modules_to_save["alignment"].weight
        assert not torch.equal(trained, projector[0].original_module.weight)  # the projector copy trained
        with Image.open(images[0]) as image, torch.no_grad():
            first = model.score([image.convert("RGB")], [cases[0]["caption"]])
            again, _ = load_reward_model(tmp_path / "model")
            assert torch.equal(again.score([image.convert("RGB")], [cases[0]["caption"]]), first)


class TestImportedModelsInThePipeline:
    """An imported folder goes through the evaluation harness and the registry like a trained one."""

    def test_evaluation_and_registry_read_an_imported_model(self, paper_oracle: Path, tmp_path: Path) -> None:
        from reward.evaluation import PAIRS, reward_model_scorers, score_table
        from reward.registry import ModelRegistry
        from reward.scoring import RewardScorer

        expected = json.loads((paper_oracle / "expected.json").read_text())
        cases = expected["cases"]
        kind = next(
            name
            for name, record in expected["checkpoints"].items()
            if not record["reward_config"]["is_general_preference"]  # the Bradley-Terry checkpoint
        )
        folder = import_checkpoint(
            paper_oracle / expected["checkpoints"][kind]["path"],
            paper_oracle / "base",
            tmp_path / "model",
            perspective="alignment",
            num_crops=None,
        )
        want = [value[0][0] for value in expected["checkpoints"][kind]["rewards"]["config_num_crops"]]
        table = pl.DataFrame(
            {
                "caption": [cases[0]["caption"], cases[2]["caption"]],
                "image0_uri": [str(paper_oracle / cases[0]["image"]), str(paper_oracle / cases[2]["image"])],
                "image1_uri": [str(paper_oracle / cases[1]["image"]), str(paper_oracle / cases[3]["image"])],
                "label": [0, 0],
            }
        )
        (scorer,), skipped = reward_model_scorers({"LLaVA-Reward": folder}, device="cpu", dtype="float32")
        assert skipped == {}
        scored = score_table(scorer, table, PAIRS).scored
        # The benchmark pairs caption 0 with images 0 and 1: image 1 is scored with caption 0 here, so only
        # the (image, own caption) scores are comparable with the oracle.
        assert scored["score0"].to_list() == pytest.approx([want[0], want[2]], rel=1e-4)

        registry = ModelRegistry(tmp_path / "registry")
        registry.register("alignment", "imported", folder)
        registry.promote(
            "alignment", "imported", run_id="manual", benchmark="-", metric="-", value=None, reason="import"
        )
        champion = RewardScorer.from_pretrained(
            registry.perspective_dir("alignment"), device="cpu", dtype="float32"
        )
        score = champion.score(str(paper_oracle / cases[0]["image"]), cases[0]["caption"])
        assert float(score[0]) == pytest.approx(want[0], rel=1e-4)


class TestCaptions:
    def test_a_caption_with_an_image_tag_is_refused_by_row(self, paper_oracle: Path) -> None:
        from reward.backbones import BackboneError, load_backbone

        backbone = load_backbone(str(paper_oracle / "base"), num_crops=1)
        image = Image.new("RGB", (40, 30), (10, 200, 30))
        with pytest.raises(BackboneError, match=r"prompts\[1\] contains the image token '<\|image_1\|>'"):
            backbone.prepare([image, image], ["a cat", "a <|image_1|> dog"])
        with pytest.raises(
            BackboneError, match=r"row 0: the text's image tags .*'<\|image_2\|>'.* do not name images 1..1"
        ):
            backbone.prepare([image], ["a <|image_2|> dog"])


class TestRemoteCodePermission:
    def test_permission_does_not_switch_a_native_model_to_remote_code(
        self, checkpoint, base, tmp_path
    ) -> None:
        """--trust-remote-code permits what a folder asks for; an imported (native) folder asks for nothing,
        so it loads natively even with the permission (the fixture base ships no code to run)."""
        from reward.checkpoint import load_reward_model

        folder = import_checkpoint(checkpoint, base, tmp_path / "model", num_crops=1)
        model, config = load_reward_model(folder, trust_remote_code=True)
        assert not config.backbone.trust_remote_code
        assert type(model.backbone.model).__module__ == "reward.backbones.phi3v.modeling"
