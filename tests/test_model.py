"""RewardModel: exactly LoRA + projector + head train, everything else stays frozen, batched pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reward.backbones import load_backbone
from reward.config import HeadConfig, LoraSettings
from reward.losses import bt_loss, ce_loss, gpm_loss
from reward.model import RewardModel
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread  # noqa: F401 (autouse fixture)

PROMPTS = ["two red circles", "a blue square above a star", "three yellow crosses", "one green triangle"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: str(build_tiny_backbone(root / arch, arch)) for arch in ("llava", "qwen2_5_vl")}


@pytest.fixture(scope="module")
def tiny_dir(tiny_dirs) -> str:
    return tiny_dirs["llava"]


def pictures(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


def train_steps(model: RewardModel, steps: int, objective: str = "bt") -> list[float]:
    """AdamW steps on one fixed batch of 4 pairs; ``objective`` "ce" labels chosen 1 and rejected 0."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    chosen, rejected = pictures(4, seed=1), pictures(4, seed=2)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        good, bad = model.pair_rewards(chosen, PROMPTS, rejected, PROMPTS)
        if objective == "bt":
            loss = bt_loss(good, bad)
        else:
            loss = ce_loss(torch.cat([good, bad]), torch.cat([torch.ones(4), torch.zeros(4)]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def snapshot(model: RewardModel) -> dict[str, tuple[bool, torch.Tensor]]:
    return {name: (p.requires_grad, p.detach().clone()) for name, p in model.named_parameters()}


class TestTrainableParameters:
    @pytest.mark.parametrize(
        ("arch", "projector_name"), [("llava", "multi_modal_projector"), ("qwen2_5_vl", "merger")]
    )
    def test_lora_projector_and_head_change_and_nothing_else(
        self, tiny_dirs, arch: str, projector_name: str
    ) -> None:
        backbone = load_backbone(tiny_dirs[arch])
        model = RewardModel(backbone, HeadConfig(kind="skipca"), LoraSettings(rank=2, dropout=0.0))
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        projector = {name for name in trainable if f".{projector_name}.modules_to_save." in name}
        lora = {name for name in trainable if ".lora_" in name}
        head = {name for name in trainable if name.startswith("head.")}
        assert trainable == projector | lora | head and projector and head
        assert len(lora) == 2 * 4 * 2  # A and B of q/k/v/o in 2 language-model layers
        assert all(".language_model.layers." in name for name in lora)
        before = snapshot(model)
        # Two steps: LoRA B starts at zero, so A only gets a gradient from the second step on.
        # Cross-entropy, because under Bradley-Terry the terms that shift every reward alike (the
        # output bias, the LayerNorm bias) get exactly zero gradient: BT is shift-invariant.
        train_steps(model, steps=2, objective="ce")
        for name, parameter in model.named_parameters():
            requires_grad, old = before[name]
            changed = not torch.equal(parameter.detach(), old)
            assert changed == requires_grad, f"{name}: trainable={requires_grad} but changed={changed}"

    def test_without_lora_the_projector_and_head_train(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(kind="linear"))
        before = snapshot(model)
        train_steps(model, steps=1, objective="ce")
        changed = {
            name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name][1])
        }
        trainable = {name for name, (requires_grad, _) in before.items() if requires_grad}
        assert changed == trainable
        assert all(
            name.startswith(("head.", "backbone.model.model.multi_modal_projector.")) for name in trainable
        )

    def test_parameter_report_adds_up(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(), LoraSettings(rank=4))
        report = model.parameter_report()
        assert report["trainable"] == sum(p.numel() for p in model.trainable_parameters())
        assert report["total"] == sum(p.numel() for p in model.parameters())
        assert report["other_trainable"] == 0
        # LoRA rank 4 on q/k/v/o (64 -> 64; k/v 64 -> 32 with 2 kv heads) in 2 layers.
        assert report["lora"] == 2 * (4 * (64 + 64) * 2 + 4 * (64 + 32) * 2)
        assert report["head"] == sum(p.numel() for p in model.head.parameters())


class TestRewards:
    def test_pairs_in_one_batch_equal_separate_scoring(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(), LoraSettings(rank=2)).eval()
        chosen, rejected = pictures(4, seed=3), pictures(4, seed=4)
        with torch.no_grad():
            good, bad = model.pair_rewards(chosen, PROMPTS, rejected, PROMPTS)
            assert good.shape == bad.shape == (4,)
            assert torch.allclose(good, model.score(chosen, PROMPTS), atol=1e-5)
            assert torch.allclose(bad, model.score(rejected, PROMPTS), atol=1e-5)
        with pytest.raises(ValueError, match="got 4 chosen but 3 rejected images"):
            model.pair_rewards(chosen, PROMPTS, rejected[:3], PROMPTS[:3])

    def test_gpm_head_gives_2k_embeddings(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(gpm_dim=2, pooling="mean")).eval()
        with torch.no_grad():
            good, bad = model.pair_rewards(pictures(2, 5), PROMPTS[:2], pictures(2, 6), PROMPTS[:2])
        assert good.shape == (2, 4) and torch.isfinite(gpm_loss(good, bad))

    def test_bt_gives_shift_parameters_no_gradient(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(kind="skipca_mha"), LoraSettings(rank=2))
        good, bad = model.pair_rewards(pictures(4, 1), PROMPTS, pictures(4, 2), PROMPTS)
        bt_loss(good, bad).backward()
        assert model.head.norm.bias.grad.abs().max() < 1e-7 and model.head.output.bias.grad.abs().max() < 1e-7
        assert model.head.output.weight.grad.abs().max() > 1e-4

    def test_fits_a_fixed_batch(self, tiny_dir) -> None:
        model = RewardModel(load_backbone(tiny_dir), HeadConfig(), LoraSettings(rank=4, dropout=0.0))
        losses = train_steps(model, steps=25)
        assert losses[0] == pytest.approx(np.log(2), abs=0.05)  # small initial rewards: P = 1/2
        assert losses[-1] < 0.1
