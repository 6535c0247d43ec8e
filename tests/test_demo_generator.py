"""The demo generator's training: the saved weights are the exponential moving average it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from reward.steering.demo_generator import DemoGeneratorConfig, ema_with_warmup, train_demo_generator
from tests.reward_support import one_torch_thread  # noqa: F401 (autouse fixture)

SMALL = {
    "block_out_channels": (8, 8),
    "context_dim": 8,
    "image_size": 16,
    "batch_size": 2,
    "max_minutes": None,
}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    encoder = load_file(folder / "encoder.safetensors")
    return {**{f"unet.{k}": v for k, v in unet.items()}, **{f"encoder.{k}": v for k, v in encoder.items()}}


def test_saved_weights_are_the_moving_average_of_the_steps(tmp_path: Path) -> None:
    """After two steps the average is r * w1 + (1 - r) * w2 (the first update copies w1) with the warmed-up
    rate r = min(decay, 2 / 11)."""
    raw_one = tmp_path / "raw-1"
    raw_two = tmp_path / "raw-2"
    averaged = tmp_path / "ema-2"
    train_demo_generator(DemoGeneratorConfig(steps=1, ema_decay=None, **SMALL), raw_one)
    train_demo_generator(DemoGeneratorConfig(steps=2, ema_decay=None, **SMALL), raw_two)
    stats = train_demo_generator(DemoGeneratorConfig(steps=2, ema_decay=0.9, **SMALL), averaged)
    assert stats["saved_weights"] == "ema 0.9"
    recorded = json.loads((averaged / "generator_config.json").read_text())
    assert recorded["config"]["ema_decay"] == 0.9 and recorded["training"]["steps"] == 2
    first, second, got = weights(raw_one), weights(raw_two), weights(averaged)
    moved = [key for key in got if not torch.equal(first[key], second[key])]
    assert len(moved) > len(got) // 2  # the second step changed most tensors
    for key, value in got.items():
        rate = 2 / 11
        torch.testing.assert_close(value, rate * first[key] + (1 - rate) * second[key], rtol=1e-5, atol=1e-6)


def test_the_warmed_up_rate_reaches_the_decay() -> None:
    update = ema_with_warmup(0.995)
    averaged, current = torch.tensor([1.0]), torch.tensor([0.0])
    assert float(update(averaged, current, 1)) == pytest.approx(2 / 11)
    assert float(update(averaged, current, 90)) == pytest.approx(91 / 100)
    assert float(update(averaged, current, 5000)) == pytest.approx(0.995)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=f"ema_decay must lie in \\(0, 1\\) or be None, got {decay}"):
        DemoGeneratorConfig(ema_decay=decay)
