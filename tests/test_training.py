"""Training through the Trainer entry point: what trains, determinism, resume, accumulation, precision,
progress logging, data errors, and that an easy slice is learned."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from data.images import open_image
from reward.checkpoint import read_reward_config
from reward.config import ConfigError, HeadConfig, LossConfig
from reward.data import PairDataset, RewardDataError, UnpairedDataset
from reward.losses import bt_margin
from reward.tiny import build_tiny_backbone
from reward.training import TrainingConfig, TrainingJob, build_trainer, train_reward_model
from tests.reward_support import assembled_tables, one_torch_thread, quick_job, saved_tensors  # noqa: F401


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llava", "llava")


@pytest.fixture(scope="module")
def tables(demo_corpus: Path, tmp_path_factory) -> dict[str, str]:
    return assembled_tables(demo_corpus, tmp_path_factory.mktemp("art"))


class Snapshot(TrainerCallback):
    """Copies every parameter when training begins (after the Trainer set the model up)."""

    def __init__(self) -> None:
        self.before: dict[str, tuple[bool, torch.Tensor]] = {}
        self.steps = 0
        self.substeps = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: (p.requires_grad, p.detach().clone()) for name, p in model.named_parameters()}

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_substep_end(self, args, state, control, **kwargs):
        self.substeps += 1


class TestConfigs:
    def test_every_training_field_has_help(self) -> None:
        for item in dataclasses.fields(TrainingConfig):
            assert item.metadata.get("help"), f"TrainingConfig.{item.name} has no help"

    def test_job_round_trips_through_json(self, tmp_path: Path, backbone_dir: Path) -> None:
        job = quick_job(
            backbone_dir,
            "train.parquet",
            eval_data="valid.parquet",
            head=HeadConfig(kind="linear", gpm_dim=2),
            loss=LossConfig("gpm", temperature=0.1),
            precision="bf16",
            save_steps=5,
        )
        path = job.to_json(tmp_path / "job.json")
        assert TrainingJob.from_json(path) == job
        no_lora = quick_job(backbone_dir, "train.parquet", lora_rank=None)
        assert TrainingJob.from_dict(no_lora.to_dict()).lora is None

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"batch_size": 0}, "TrainingConfig.batch_size must be a positive int"),
            ({"precision": "fp16"}, "TrainingConfig.precision must be one of"),
            ({"learning_rate": 0.0}, "TrainingConfig.learning_rate must be > 0"),
            ({"warmup_ratio": 1.5}, "TrainingConfig.warmup_ratio must be in"),
            ({"max_minutes": -1.0}, "TrainingConfig.max_minutes must be > 0"),
            ({"lr_scheduler": "cyclic"}, "TrainingConfig.lr_scheduler must be one of"),
        ],
    )
    def test_bad_settings_name_the_field(self, changes: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            TrainingConfig(**changes)

    def test_job_checks_head_and_loss_and_names(self, tmp_path: Path, backbone_dir: Path) -> None:
        with pytest.raises(ConfigError, match="needs HeadConfig.gpm_dim"):
            quick_job(backbone_dir, "x.parquet", loss=LossConfig("gpm"))
        with pytest.raises(ConfigError, match="perspective name"):
            quick_job(backbone_dir, "x.parquet", perspective="bad.name")
        (tmp_path / "job.json").write_text(
            json.dumps(
                {"perspective": "a", "backbone": {"name_or_path": "m"}, "train_data": "t", "epochs": 3}
            )
        )
        with pytest.raises(ConfigError, match=r"job.json: TrainingJob: unknown field\(s\) \['epochs'\]"):
            TrainingJob.from_json(tmp_path / "job.json")


class TestWhatTrains:
    def test_one_run_changes_every_trainable_tensor_and_no_frozen_one(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str], caplog
    ) -> None:
        # Cross-entropy (BT gives the reward-shift parameters no gradient) and two steps (LoRA B starts
        # at zero, so LoRA A only gets a gradient from the second step on).
        snapshot = Snapshot()
        job = quick_job(backbone_dir, tables["rows"], perspective="safety", loss=LossConfig("ce"))
        with caplog.at_level(logging.INFO, logger="reward.training"):
            result = train_reward_model(job, tmp_path / "model", callbacks=[snapshot])
        model = result.trainer.model
        changed = {}
        for name, parameter in model.named_parameters():
            requires_grad, old = snapshot.before[name]
            changed[name] = not torch.equal(parameter.detach(), old)
            assert changed[name] == requires_grad, (
                f"{name}: trainable={requires_grad} changed={changed[name]}"
            )
        trainable = {name for name, (requires_grad, _) in snapshot.before.items() if requires_grad}
        assert any(name.startswith("head.") for name in trainable)
        assert any(".multi_modal_projector.modules_to_save." in name for name in trainable)
        assert any(".lora_A." in name for name in trainable) and any(".lora_B." in name for name in trainable)
        assert not any("vision_tower" in name for name in trainable)
        # The optimizer holds exactly the trainable tensors (the head included).
        optimized = {id(p) for group in result.trainer.optimizer.param_groups for p in group["params"]}
        assert optimized == {id(p) for p in model.parameters() if p.requires_grad}

        # The trainable fraction is logged and saved, and equals an independent count.
        counted = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(
            p.numel() for p in model.parameters()
        )
        logged = [r.getMessage() for r in caplog.records if "trainable fraction" in r.getMessage()]
        assert logged and f"{100 * counted:.4f}%" in logged[0]
        assert read_reward_config(tmp_path / "model").trainable_fraction == pytest.approx(counted)

    def test_same_seed_same_weights_other_seed_other_weights(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        def run(name: str, seed: int) -> dict[str, torch.Tensor]:
            job = quick_job(backbone_dir, tables["pairs"], max_steps=3, seed=seed)
            train_reward_model(job, tmp_path / name)
            return saved_tensors(tmp_path / name)

        first, again, other = run("a", 0), run("b", 0), run("c", 1)
        assert first.keys() == again.keys() == other.keys()
        assert all(torch.equal(first[name], again[name]) for name in first)
        assert not all(torch.equal(first[name], other[name]) for name in first)

    def test_resume_continues_at_the_checkpoint_step(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        job = quick_job(backbone_dir, tables["pairs"], max_steps=4, save_steps=2, save_total_limit=None)
        full = train_reward_model(job, tmp_path / "full", checkpoint_dir=tmp_path / "full-ckpt")
        checkpoint = tmp_path / "full-ckpt" / "checkpoint-2"
        assert sorted(p.name for p in checkpoint.iterdir()) == [
            "adapter",
            "head.safetensors",
            "optimizer.pt",
            "reward_config.json",
            "rng_state.pth",
            "scheduler.pt",
            "trainer_state.json",
        ]
        snapshot = Snapshot()
        resumed = train_reward_model(
            job,
            tmp_path / "resumed",
            checkpoint_dir=tmp_path / "resumed-ckpt",
            resume_from_checkpoint=checkpoint,
            callbacks=[snapshot],
        )
        assert resumed.global_step == full.global_step == 4
        assert snapshot.steps == 2  # only steps 3 and 4 ran
        logged = [entry["step"] for entry in resumed.trainer.state.log_history if "loss" in entry]
        assert logged[-2:] == [3, 4] and 2 in logged  # steps 1-2 come from the checkpoint's history
        # Same weights, optimizer state and data order as the uninterrupted run.
        first, second = saved_tensors(tmp_path / "full"), saved_tensors(tmp_path / "resumed")
        assert all(torch.allclose(first[name], second[name], atol=1e-6) for name in first)

    def test_accumulation_and_checkpointing_keep_the_arithmetic(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        plain = quick_job(
            backbone_dir, tables["pairs"], max_steps=2, batch_size=2, gradient_accumulation_steps=2
        )
        counter = Snapshot()
        train_reward_model(plain, tmp_path / "plain", callbacks=[counter])
        assert (counter.steps, counter.substeps) == (2, 2)  # 2 optimizer steps of 2 forwards each
        recomputed = dataclasses.replace(
            plain, training=dataclasses.replace(plain.training, gradient_checkpointing=True)
        )
        result = train_reward_model(recomputed, tmp_path / "recomputed")
        assert result.trainer.model.backbone.model.is_activation_checkpointing
        first, second = saved_tensors(tmp_path / "plain"), saved_tensors(tmp_path / "recomputed")
        assert all(torch.allclose(first[name], second[name], atol=1e-6) for name in first)

    def test_bf16_trains_with_fp32_master_weights(self, tmp_path: Path, backbone_dir: Path, tables) -> None:
        result = train_reward_model(
            quick_job(backbone_dir, tables["pairs"], precision="bf16"), tmp_path / "m"
        )
        assert result.trainer.args.bf16
        losses = [entry["loss"] for entry in result.trainer.state.log_history if "loss" in entry]
        assert losses and all(math.isfinite(loss) for loss in losses)
        assert all(tensor.dtype == torch.float32 for tensor in saved_tensors(tmp_path / "m").values())


class TestProgressAndMetrics:
    def test_logs_loss_and_pairwise_accuracy_and_evaluates(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str], caplog
    ) -> None:
        job = quick_job(backbone_dir, tables["pairs"], eval_data=tables["pairs_validation"], max_steps=3)
        with caplog.at_level(logging.INFO, logger="reward.training"):
            result = train_reward_model(job, tmp_path / "m")
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
        assert any("step 1/3" in line and "loss" in line and "accuracy" in line for line in lines)
        train_logs = [entry for entry in result.trainer.state.log_history if "loss" in entry]
        assert all(0.0 <= entry["accuracy"] <= 1.0 for entry in train_logs)

        # Evaluation margins equal an independent computation from the model's own rewards.
        model = result.trainer.model.eval()
        dataset = PairDataset(tables["pairs_validation"])
        margins = result.trainer.predict(dataset).predictions.reshape(-1)
        rows = [dataset[index] for index in range(6)]
        with torch.no_grad():
            chosen, rejected = model.pair_rewards(
                [row["chosen_image"] for row in rows],
                [row["chosen_prompt"] for row in rows],
                [row["rejected_image"] for row in rows],
                [row["rejected_prompt"] for row in rows],
            )
        np.testing.assert_allclose(margins[:6], bt_margin(chosen, rejected).numpy(), atol=1e-5)
        assert result.metrics["eval_accuracy"] == pytest.approx(float(np.mean(margins > 0)))
        assert len(margins) == len(dataset)

    def test_gpm_margins_use_the_skew_symmetric_form(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        validation = pl.read_parquet(tables["pairs_validation"]).head(4)
        validation.write_parquet(tmp_path / "validation.parquet")
        job = quick_job(
            backbone_dir,
            tables["pairs"],
            eval_data=str(tmp_path / "validation.parquet"),
            head=HeadConfig(kind="linear", gpm_dim=2),
            loss=LossConfig("gpm", temperature=0.5),
        )
        result = train_reward_model(job, tmp_path / "m")
        margins = result.trainer.predict(PairDataset(tmp_path / "validation.parquet")).predictions.reshape(-1)
        rows = [PairDataset(tmp_path / "validation.parquet")[index] for index in range(4)]
        model = result.trainer.model.eval()
        with torch.no_grad():
            chosen, rejected = model.pair_rewards(
                [row["chosen_image"] for row in rows],
                [row["chosen_prompt"] for row in rows],
                [row["rejected_image"] for row in rows],
                [row["rejected_prompt"] for row in rows],
            )
        c, r = chosen.numpy(), rejected.numpy()
        expected = (c[:, 0] * r[:, 1] - c[:, 1] * r[:, 0] + c[:, 2] * r[:, 3] - c[:, 3] * r[:, 2]) / 0.5
        np.testing.assert_allclose(margins, expected, atol=1e-5)
        assert chosen.shape == (4, 4) and math.isfinite(result.metrics["eval_loss"])

    def test_cross_entropy_reports_accuracy_and_f1(self, tmp_path: Path, backbone_dir: Path, tables) -> None:
        job = quick_job(
            backbone_dir,
            tables["rows"],
            perspective="safety",
            eval_data=tables["rows_validation"],
            loss=LossConfig("ce"),
        )
        result = train_reward_model(job, tmp_path / "m")
        logits = result.trainer.predict(UnpairedDataset(tables["rows_validation"])).predictions.reshape(-1)
        labels = np.array(UnpairedDataset(tables["rows_validation"]).labels)
        assert result.metrics["eval_accuracy"] == pytest.approx(float(np.mean((logits > 0) == (labels == 1))))
        assert 0.0 <= result.metrics["eval_f1"] <= 1.0

    def test_time_budget_stops_training(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        job = quick_job(backbone_dir, tables["pairs"], max_steps=1000, max_minutes=1e-4)
        result = train_reward_model(job, tmp_path / "m")
        assert result.stopped_by_time_budget and result.global_step < 1000
        assert read_reward_config(tmp_path / "m").training["stopped_by_time_budget"] is True


class TestDataErrors:
    def write(self, tmp_path: Path, frame: pl.DataFrame) -> str:
        path = tmp_path / "table.parquet"
        frame.write_parquet(path)
        return str(path)

    def test_missing_columns_nulls_and_labels_are_named(self, tmp_path: Path, tables: dict[str, str]) -> None:
        pairs = pl.read_parquet(tables["pairs"]).head(3)
        path = self.write(tmp_path, pairs.drop("rejected_prompt"))
        with pytest.raises(
            RewardDataError, match=r"table.parquet: not a pairs table: missing column\(s\) rejected_prompt"
        ):
            PairDataset(path)
        path = self.write(
            tmp_path,
            pairs.with_columns(
                pl.when(pl.int_range(3) == 2)
                .then(None)
                .otherwise(pl.col("chosen_prompt"))
                .alias("chosen_prompt")
            ),
        )
        with pytest.raises(RewardDataError, match=r"table.parquet: row 2, field 'chosen_prompt': null value"):
            PairDataset(path)
        rows = (
            pl.read_parquet(tables["rows"]).head(3).with_columns(pl.Series("label", [1, 0, 2], dtype=pl.Int8))
        )
        with pytest.raises(RewardDataError, match=r"row 2, field 'label': expected 0 or 1, got 2"):
            UnpairedDataset(self.write(tmp_path, rows))

    def test_unreadable_image_names_table_row_and_field(self, tmp_path: Path, tables: dict[str, str]) -> None:
        pairs = (
            pl.read_parquet(tables["pairs"])
            .head(2)
            .with_columns(pl.Series("rejected_image_uri", ["x", str(tmp_path / "missing.webp")]))
        )
        dataset = PairDataset(self.write(tmp_path, pairs))
        with pytest.raises(
            RewardDataError, match=r"row 1, field 'rejected_image_uri': .*missing.webp: file not found"
        ):
            dataset[1]

    def test_wrong_table_for_the_loss(
        self, tmp_path: Path, backbone_dir: Path, tables: dict[str, str]
    ) -> None:
        with pytest.raises(RewardDataError, match="training data for loss 'bt' must be preference pairs"):
            build_trainer(quick_job(backbone_dir, tables["rows"]), tmp_path)
        empty = self.write(tmp_path, pl.read_parquet(tables["pairs"]).head(0))
        with pytest.raises(RewardDataError, match="the training table has no rows"):
            build_trainer(quick_job(backbone_dir, empty), tmp_path)


def noisy_minimal_pairs(corpus: Path, splits: tuple[str, ...], folder: Path) -> pl.DataFrame:
    """Each clean demo image (chosen) against itself with strong Gaussian noise (rejected), same prompt."""
    truth = pl.read_parquet(corpus / "ground_truth.parquet").filter(
        (pl.col("dataset") == "imagerewarddb")
        & pl.col("split").is_in(list(splits))
        & (pl.col("severity") == 0)
    )
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for image_id, ref, prompt in truth.select("image_id", "image_ref", "prompt").iter_rows():
        pixels = np.asarray(open_image(f"{corpus}/{ref}"), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0.0, 40.0, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{image_id}.png")
        rows.append((prompt, f"{corpus}/{ref}", prompt, str(folder / f"{image_id}.png")))
    return pl.DataFrame(
        rows,
        schema=["chosen_prompt", "chosen_image_uri", "rejected_prompt", "rejected_image_uri"],
        orient="row",
    )


def test_learns_clean_versus_strong_artifacts(tmp_path: Path, backbone_dir: Path, demo_corpus: Path) -> None:
    """A few dozen steps put held-out accuracy clearly above chance on clean vs strongly noised images
    (held out by prompt and image)."""
    train = noisy_minimal_pairs(demo_corpus, ("train",), tmp_path / "train")
    test = noisy_minimal_pairs(demo_corpus, ("validation", "test"), tmp_path / "test")
    train.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    assert train.height >= 60 and test.height >= 15
    job = quick_job(
        backbone_dir,
        str(tmp_path / "train.parquet"),
        eval_data=str(tmp_path / "test.parquet"),
        head=HeadConfig(kind="skipca"),
        max_steps=30,
        batch_size=8,
        learning_rate=2e-3,
        logging_steps=20,
        lora_rank=4,
    )
    result = train_reward_model(job, tmp_path / "m")
    assert result.metrics["eval_accuracy"] >= 0.8, result.metrics


class TestLearnabilityBenchmark:
    COLOUR = '[{"kind":"wrong_colour","group":0,"value":"blue"}]'
    SWAP_AND_COLOUR = json.dumps(
        [{"kind": "wrong_colour", "group": 0, "value": "blue"}, {"kind": "swapped_relation", "group": -1}]
    )

    def test_pair_attribute_names_what_only_the_rejected_image_gets_wrong(self) -> None:
        from benchmarks.learnability import pair_attribute

        assert pair_attribute("rating", "[]", self.COLOUR) == "colour"
        assert pair_attribute("rating", self.COLOUR, self.SWAP_AND_COLOUR) == "spatial"
        assert pair_attribute("rating", "[]", self.SWAP_AND_COLOUR) == "multiple"
        assert pair_attribute("rating", self.COLOUR, self.COLOUR) == "other"
        assert pair_attribute("negative_image", None, None) == "negative_image"

    def test_attributes_join_by_image_id_and_accuracy_is_grouped(self) -> None:
        from benchmarks.learnability import evaluate_pairs, pair_attributes

        truth = pl.DataFrame(
            {"image_id": ["a", "b", "c"], "mistakes": ["[]", self.COLOUR, self.SWAP_AND_COLOUR]}
        )
        pairs = pl.DataFrame(
            {
                "kind": ["rating", "rating", "negative_text"],
                "chosen_image_id": ["a", "b", "a"],
                "rejected_image_id": ["b", "c", "c"],
            }
        )
        attributes = pair_attributes(pairs, truth)
        assert attributes == ["colour", "spatial", "negative_text"]
        result = evaluate_pairs(np.array([0.5, -0.1, 2.0]), attributes)
        assert result["accuracy"] == pytest.approx(2 / 3) and result["pairs"] == 3
        assert result["by_attribute"]["spatial"] == {"accuracy": 0.0, "pairs": 1}

    def test_fidelity_pairs_are_sliced_by_the_artifacts_they_compare(self) -> None:
        from benchmarks.learnability import pair_artifact_slices

        truth = pl.DataFrame({"image_id": ["a", "b", "c"], "artifact": ["none", "blur", "noise"]})
        pairs = pl.DataFrame(
            {
                "kind": ["rating", "rating", "rating"],
                "chosen_image_id": ["a", "b", "a"],
                "rejected_image_id": ["b", "c", "c"],
            }
        )
        assert pair_artifact_slices(pairs, truth) == [
            "clean vs blur",
            "artifact vs artifact",
            "clean vs noise",
        ]
