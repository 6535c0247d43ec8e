"""Training objectives and preference probabilities.

- Bradley-Terry: P(a > b) = sigma((r_a - r_b) / T), loss = -log P(chosen > rejected).
- General Preference Model (GPM): rewards are 2k-vectors and the preference score is the block
  skew-symmetric form s(a, b) = sum_i (a_{2i} b_{2i+1} - a_{2i+1} b_{2i}); P(a > b) = sigma(s / T).
  Because s(b, a) = -s(a, b), P(a > b) = 1 - P(b > a) and P(a > a) = 1/2; unlike BT it can represent
  intransitive (cyclic) preferences.
- Cross-entropy (binary, with logits) for unpaired (image, prompt, label) rows such as safety data.

All log-probabilities go through ``F.logsigmoid`` so that large margins neither overflow nor give
infinite gradients. Loss functions return the mean over the batch unless ``reduction="none"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from reward.config import LossConfig

REDUCTIONS = ("mean", "sum", "none")


def _scalar_rewards(name: str, rewards: Tensor) -> Tensor:
    """Accept shape (B,) or (B, 1); return (B,)."""
    if rewards.dim() == 2 and rewards.shape[-1] == 1:
        return rewards.squeeze(-1)
    if rewards.dim() != 1:
        raise ValueError(
            f"{name}: expected scalar rewards of shape (B,) or (B, 1), got {tuple(rewards.shape)}"
        )
    return rewards


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def bt_margin(a: Tensor, b: Tensor, temperature: float = 1.0) -> Tensor:
    """(r_a - r_b) / T, shape (B,)."""
    _check_temperature(temperature)
    a, b = _scalar_rewards("a", a), _scalar_rewards("b", b)
    if a.shape != b.shape:
        raise ValueError(f"BT: reward shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b) / temperature


def bt_probability(a: Tensor, b: Tensor, temperature: float = 1.0) -> Tensor:
    """Bradley-Terry P(a > b) = sigma((r_a - r_b) / T)."""
    return torch.sigmoid(bt_margin(a, b, temperature))


def bt_loss(chosen: Tensor, rejected: Tensor, temperature: float = 1.0, reduction: str = "mean") -> Tensor:
    """-log sigma((r_chosen - r_rejected) / T)."""
    return _reduce(-F.logsigmoid(bt_margin(chosen, rejected, temperature)), reduction)


def gpm_score(a: Tensor, b: Tensor) -> Tensor:
    """Block skew-symmetric form sum_i (a_{2i} b_{2i+1} - a_{2i+1} b_{2i}) over the last dim."""
    if a.shape != b.shape:
        raise ValueError(f"GPM: embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() < 1 or a.shape[-1] % 2 != 0 or a.shape[-1] == 0:
        raise ValueError(f"GPM: the last dimension must be even (2k), got shape {tuple(a.shape)}")
    return (a[..., 0::2] * b[..., 1::2] - a[..., 1::2] * b[..., 0::2]).sum(dim=-1)


def gpm_probability(a: Tensor, b: Tensor, temperature: float = 1.0) -> Tensor:
    """GPM P(a > b) = sigma(s(a, b) / T)."""
    _check_temperature(temperature)
    return torch.sigmoid(gpm_score(a, b) / temperature)


def gpm_loss(chosen: Tensor, rejected: Tensor, temperature: float = 1.0, reduction: str = "mean") -> Tensor:
    """-log sigma(s(chosen, rejected) / T)."""
    _check_temperature(temperature)
    return _reduce(-F.logsigmoid(gpm_score(chosen, rejected) / temperature), reduction)


def ce_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy with logits for unpaired rows; labels are 0/1 (or probabilities)."""
    logits = _scalar_rewards("logits", logits)
    if labels.shape != logits.shape:
        raise ValueError(
            f"CE: labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}"
        )
    values = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return _reduce(values, reduction)


PairLoss = Callable[..., Tensor]


def pair_loss_fn(config: LossConfig) -> PairLoss:
    """The loss of ``config`` as ``fn(a, b) -> scalar loss``.

    BT and GPM take (chosen, rejected) rewards; CE takes (logits, labels).
    """
    if config.kind == "bt":
        return lambda chosen, rejected: bt_loss(chosen, rejected, config.temperature)
    if config.kind == "gpm":
        return lambda chosen, rejected: gpm_loss(chosen, rejected, config.temperature)
    return ce_loss


def preference_probability(config: LossConfig, a: Tensor, b: Tensor) -> Tensor:
    """P(a > b) under the model that ``config`` trains (BT or GPM); CE-trained scalars compare as BT."""
    if config.kind == "gpm":
        return gpm_probability(a, b, config.temperature)
    return bt_probability(a, b, config.temperature)
