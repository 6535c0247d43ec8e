"""Losses and preference probabilities: hand-computed values, invariants, stability, config round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from reward.config import ConfigError, HeadConfig, LossConfig, check_head_loss_compatible
from reward.losses import (
    bt_loss,
    bt_probability,
    ce_loss,
    gpm_loss,
    gpm_probability,
    gpm_score,
    pair_loss_fn,
    preference_probability,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


class TestBradleyTerry:
    def test_values_by_hand(self) -> None:
        # chosen 2.0 vs rejected 1.0 at T = 0.5: margin (2 - 1) / 0.5 = 2, loss = log(1 + e^-2).
        # chosen 0.0 vs rejected 3.0 at T = 0.5: margin -6, loss = log(1 + e^6).
        losses = bt_loss(t(2.0, 0.0), t(1.0, 3.0), temperature=0.5, reduction="none")
        expected = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(6.0))]
        assert losses.tolist() == pytest.approx(expected, rel=1e-12)
        assert bt_loss(t(2.0, 0.0), t(1.0, 3.0), temperature=0.5).item() == pytest.approx(sum(expected) / 2)
        assert bt_probability(t(2.0), t(1.0), temperature=0.5).item() == pytest.approx(
            1 / (1 + math.exp(-2.0))
        )

    def test_invariant_to_a_shared_shift(self) -> None:
        generator = torch.Generator().manual_seed(0)
        chosen, rejected = torch.randn(2, 16, generator=generator, dtype=torch.float64)
        for shift in (-50.0, 3.5, 1e3):
            assert torch.allclose(bt_loss(chosen + shift, rejected + shift), bt_loss(chosen, rejected))
            assert torch.allclose(
                bt_probability(chosen + shift, rejected + shift), bt_probability(chosen, rejected)
            )

    def test_temperature_scales_the_margin(self) -> None:
        chosen, rejected = t(1.0, -2.0, 0.3), t(0.5, 1.0, 0.3)
        assert torch.allclose(bt_loss(chosen, rejected, 0.25), bt_loss(chosen / 0.25, rejected / 0.25, 1.0))

    def test_probability_is_complementary(self) -> None:
        a, b = t(0.7, -1.0), t(-0.2, 4.0)
        assert torch.allclose(bt_probability(a, b) + bt_probability(b, a), torch.ones(2, dtype=torch.float64))

    def test_accepts_column_vectors(self) -> None:
        assert torch.equal(
            bt_loss(t(1.0, 2.0).unsqueeze(1), t(0.0, 0.0).unsqueeze(1)), bt_loss(t(1.0, 2.0), t(0, 0))
        )

    def test_large_margins_give_finite_loss_and_gradients(self) -> None:
        chosen = torch.tensor([1e4, -1e4], requires_grad=True)
        rejected = torch.tensor([-1e4, 1e4], requires_grad=True)
        losses = bt_loss(chosen, rejected, temperature=0.01, reduction="none")
        # margins +2e6 and -2e6: loss 0 and 2e6; d loss / d chosen = -sigma(-margin) / T = 0 and -100.
        assert losses.tolist() == pytest.approx([0.0, 2e6])
        losses.sum().backward()
        assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
        assert chosen.grad.tolist() == pytest.approx([0.0, -100.0])

    def test_shape_errors(self) -> None:
        with pytest.raises(ValueError, match="reward shapes differ"):
            bt_loss(torch.zeros(3), torch.zeros(4))
        with pytest.raises(ValueError, match=r"shape \(B,\) or \(B, 1\)"):
            bt_loss(torch.zeros(3, 2), torch.zeros(3, 2))
        with pytest.raises(ValueError, match="temperature must be > 0"):
            bt_loss(torch.zeros(3), torch.zeros(3), temperature=0.0)
        with pytest.raises(ValueError, match="reduction must be one of"):
            bt_loss(torch.zeros(3), torch.zeros(3), reduction="max")


class TestGeneralPreference:
    def test_values_by_hand(self) -> None:
        a, b = t(1.0, 2.0, 3.0, 4.0), t(5.0, 6.0, 7.0, 8.0)
        # s = (a0 b1 - a1 b0) + (a2 b3 - a3 b2) = (1*6 - 2*5) + (3*8 - 4*7) = -4 + -4 = -8
        assert gpm_score(a, b).item() == -8.0
        # T = 2: P(a > b) = sigma(-4); loss(chosen=a, rejected=b) = -log sigma(-4) = log(1 + e^4)
        assert gpm_probability(a, b, temperature=2.0).item() == pytest.approx(1 / (1 + math.exp(4.0)))
        assert gpm_loss(a.unsqueeze(0), b.unsqueeze(0), temperature=2.0).item() == pytest.approx(
            math.log(1 + math.exp(4.0))
        )

    def test_antisymmetry_and_self_preference(self) -> None:
        generator = torch.Generator().manual_seed(1)
        a, b = torch.randn(2, 32, 6, generator=generator, dtype=torch.float64)
        ones = torch.ones(32, dtype=torch.float64)
        assert torch.allclose(gpm_probability(a, b, 0.7) + gpm_probability(b, a, 0.7), ones)
        assert torch.equal(gpm_probability(a, a), 0.5 * ones)

    def test_represents_cyclic_preferences(self) -> None:
        # Three unit vectors 120 degrees apart: s(u, v) = sin(angle(v) - angle(u)) > 0 around the cycle,
        # so a > b, b > c and c > a all hold with probability > 1/2 (impossible for any scalar BT model).
        angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        vectors = torch.stack([angles.cos(), angles.sin()], dim=1)
        a, b, c = vectors
        for first, second in ((a, b), (b, c), (c, a)):
            assert gpm_probability(first, second).item() == pytest.approx(
                1 / (1 + math.exp(-math.sqrt(3) / 2))
            )

    def test_large_scores_give_finite_gradients(self) -> None:
        chosen = torch.tensor([[-1e3, 1e3]], requires_grad=True)
        rejected = torch.tensor([[1e3, 1e3]], requires_grad=True)
        loss = gpm_loss(chosen, rejected, temperature=0.05)  # s = -1e6 - 1e6 = -2e6
        assert loss.item() == pytest.approx(2e6 / 0.05)
        loss.backward()
        assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()

    def test_dimension_errors(self) -> None:
        with pytest.raises(ValueError, match="must be even"):
            gpm_score(torch.zeros(2, 3), torch.zeros(2, 3))
        with pytest.raises(ValueError, match="embedding shapes differ"):
            gpm_score(torch.zeros(2, 4), torch.zeros(2, 2))


class TestCrossEntropy:
    def test_matches_sklearn_log_loss(self) -> None:
        rng = np.random.default_rng(0)
        logits = rng.normal(scale=3.0, size=40)
        labels = rng.integers(0, 2, size=40)
        expected = log_loss(labels, 1 / (1 + np.exp(-logits)), labels=[0, 1])
        got = ce_loss(torch.tensor(logits), torch.tensor(labels)).item()
        assert got == pytest.approx(expected, rel=1e-9)

    def test_label_shape_error(self) -> None:
        with pytest.raises(ValueError, match="does not match logits"):
            ce_loss(torch.zeros(4), torch.zeros(3))


class TestLossConfig:
    def test_dispatch_follows_the_config(self) -> None:
        chosen, rejected = t(1.0, 0.0), t(0.0, 1.0)
        bt = LossConfig(kind="bt", temperature=0.5)
        assert torch.equal(pair_loss_fn(bt)(chosen, rejected), bt_loss(chosen, rejected, 0.5))
        assert torch.equal(
            preference_probability(bt, chosen, rejected), bt_probability(chosen, rejected, 0.5)
        )
        a, b = t(1.0, 2.0).unsqueeze(0), t(3.0, -1.0).unsqueeze(0)
        gpm = LossConfig(kind="gpm", temperature=2.0)
        assert torch.equal(pair_loss_fn(gpm)(a, b), gpm_loss(a, b, 2.0))
        assert torch.equal(preference_probability(gpm, a, b), gpm_probability(a, b, 2.0))
        labels = t(1.0, 0.0)
        assert torch.equal(pair_loss_fn(LossConfig(kind="ce"))(chosen, labels), ce_loss(chosen, labels))

    def test_json_round_trip(self, tmp_path) -> None:
        config = LossConfig(kind="gpm", temperature=0.1)
        assert LossConfig.from_dict(config.to_dict()) == config
        assert LossConfig.from_json(config.to_json(tmp_path / "loss.json")) == config

    def test_invalid_values_name_the_field(self, tmp_path) -> None:
        with pytest.raises(ConfigError, match=r"LossConfig.kind must be one of \['bt', 'gpm', 'ce'\]"):
            LossConfig(kind="hinge")
        with pytest.raises(ConfigError, match="LossConfig.temperature must be a positive number"):
            LossConfig(temperature=0)
        with pytest.raises(ConfigError, match=r"unknown field\(s\) \['tau'\]"):
            LossConfig.from_dict({"kind": "bt", "tau": 1.0})
        bad = tmp_path / "loss.json"
        bad.write_text('{"kind": "bt", "temperature": -1}')
        with pytest.raises(ConfigError, match=r"loss.json: LossConfig.temperature"):
            LossConfig.from_json(bad)

    def test_head_and_loss_must_agree(self) -> None:
        check_head_loss_compatible(HeadConfig(gpm_dim=2), LossConfig(kind="gpm"))
        check_head_loss_compatible(HeadConfig(), LossConfig(kind="ce"))
        with pytest.raises(ConfigError, match="needs HeadConfig.gpm_dim"):
            check_head_loss_compatible(HeadConfig(), LossConfig(kind="gpm"))
        with pytest.raises(ConfigError, match="needs a scalar head"):
            check_head_loss_compatible(HeadConfig(gpm_dim=3), LossConfig(kind="bt"))
