"""Reward heads on top of :class:`reward.backbones.BackboneOutput`.

- :class:`SkipCAHead` (``kind="skipca"``): the LLaVA-Reward paper's arithmetic exactly. One attention
  head of bias-free ``W_q``, ``W_k``, ``W_v`` (hidden x hidden), scores divided by sqrt(hidden), no output
  projection, RMSNorm over query + attention, and a bias-free linear value head:
  ``r = value_head(RMSNorm(h + softmax(W_q h (W_k e_v)^T / sqrt(H)) W_v e_v))``. Unlike the paper's code
  it masks zero-padded visual tokens, so a reward never depends on the other images of its batch.
- :class:`MultiHeadSkipCAHead` (``kind="skipca_mha"``): the project's first SkipCA (torch multi-head
  attention with an output projection, LayerNorm, a linear head with bias). Kept so that models trained
  with it still load (format-1 folders call it "skipca") and for multi-head ablations.
- :class:`LinearHead`: a linear map of the pooled hidden state (the "w/o SkipCA" ablation).

Pooling: ``"eos"`` uses ``e_h`` (the last non-padding token); ``"mean"`` averages the chosen layer's
hidden states over non-padding tokens, so the backbone must be run with ``return_sequence=True``
(see :attr:`RewardHead.needs_sequence`). With mean pooling SkipCA attends from every token and the
results are averaged, which for a single query reduces exactly to the eos case.

Heads return shape (B,) for a scalar reward and (B, 2k) for GPM.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reward.backbones.features import BackboneOutput, masked_mean
from reward.config import HeadConfig


class RewardHead(nn.Module):
    """Common interface: ``forward(features) -> rewards``."""

    #: Whether the output layer has a bias (the paper's value head has none).
    output_bias = True

    def __init__(self, hidden_size: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        self.output = nn.Linear(hidden_size, config.output_dim, bias=self.output_bias)
        # Small initial rewards, as in the paper's value head (std 1 / (H + 1)).
        nn.init.normal_(self.output.weight, std=1.0 / (hidden_size + 1))
        if self.output.bias is not None:
            nn.init.zeros_(self.output.bias)

    @property
    def needs_sequence(self) -> bool:
        """Whether the backbone must return the full hidden-state sequence."""
        return self.config.pooling == "mean"

    def _query(self, features: BackboneOutput) -> Tensor:
        """(B, Lq, H) query states in the head's dtype: e_h (Lq = 1) or the whole sequence (mean pooling)."""
        if self.config.pooling == "eos":
            states = features.e_h.unsqueeze(1)
        elif features.sequence is None:
            raise ValueError(
                "mean pooling needs the hidden-state sequence: run the backbone with return_sequence=True"
            )
        else:
            states = features.sequence
        if states.shape[-1] != self.hidden_size:
            raise ValueError(f"head expects hidden size {self.hidden_size}, features have {states.shape[-1]}")
        return states.to(self.output.weight.dtype)

    def _pool(self, states: Tensor, features: BackboneOutput) -> Tensor:
        if self.config.pooling == "eos":
            return states[:, 0]
        return masked_mean(states, features.attention_mask.to(states.device))

    def _finish(self, pooled: Tensor) -> Tensor:
        rewards = self.output(pooled)
        return rewards.squeeze(-1) if self.config.gpm_dim is None else rewards


class LinearHead(RewardHead):
    """Linear map of the pooled text hidden state; ignores the visual tokens."""

    def forward(self, features: BackboneOutput) -> Tensor:
        return self._finish(self._pool(self._query(features), features))


def _visual_presence(visual_mask: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(mask with the first slot of empty rows unmasked so a softmax is defined, rows with any token)."""
    visual_mask = visual_mask.to(device).bool()
    has_visual = visual_mask.any(dim=1)
    usable = visual_mask.clone()
    usable[:, 0] |= ~has_visual
    return usable, has_visual


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in float32 (as Phi-3 and the paper do)."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, states: Tensor) -> Tensor:
        dtype = states.dtype
        states = states.float()
        states = states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * states.to(dtype)


class SkipCAHead(RewardHead):
    """The paper's SkipCA: RMSNorm(q + softmax(W_q q (W_k v)^T / sqrt(H)) W_v v) -> bias-free value head."""

    output_bias = False

    def __init__(self, hidden_size: int, config: HeadConfig) -> None:
        super().__init__(hidden_size, config)
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm = RMSNorm(hidden_size, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def cross_attend(self, query: Tensor, visual: Tensor, visual_mask: Tensor) -> Tensor:
        """(B, Lq, H) -> (B, Lq, H): RMSNorm(query + attention over the valid visual tokens).
        Rows without any visual token get a zero attention term."""
        usable, has_visual = _visual_presence(visual_mask, query.device)
        visual = visual.to(query.dtype)
        scores = self.query(query) @ self.key(visual).transpose(1, 2) / math.sqrt(self.hidden_size)
        scores = scores.masked_fill(~usable.unsqueeze(1), float("-inf"))
        attended = self.dropout(torch.softmax(scores, dim=-1)) @ self.value(visual)
        attended = attended * has_visual.to(attended.dtype).view(-1, 1, 1)
        return self.norm(query + attended)

    def forward(self, features: BackboneOutput) -> Tensor:
        mixed = self.cross_attend(self._query(features), features.e_v, features.e_v_mask)
        return self._finish(self._pool(mixed, features))


class MultiHeadSkipCAHead(RewardHead):
    """Multi-head skip cross-attention: LayerNorm(q + MHA(q, e_v, e_v)) -> linear (with bias)."""

    def __init__(self, hidden_size: int, config: HeadConfig) -> None:
        super().__init__(hidden_size, config)
        if hidden_size % config.num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={config.num_heads}")
        self.attention = nn.MultiheadAttention(
            hidden_size, config.num_heads, dropout=config.dropout, bias=False, batch_first=True
        )
        self.norm = nn.LayerNorm(hidden_size)

    def cross_attend(self, query: Tensor, visual: Tensor, visual_mask: Tensor) -> Tensor:
        """(B, Lq, H) -> (B, Lq, H): norm(query + attention over the valid visual tokens).

        Rows without any visual token get a zero attention term (no NaN from an all-masked softmax).
        """
        usable, has_visual = _visual_presence(visual_mask, query.device)
        visual = visual.to(query.dtype)
        attended, _ = self.attention(query, visual, visual, key_padding_mask=~usable, need_weights=False)
        attended = attended * has_visual.to(attended.dtype).view(-1, 1, 1)
        return self.norm(query + attended)

    def forward(self, features: BackboneOutput) -> Tensor:
        mixed = self.cross_attend(self._query(features), features.e_v, features.e_v_mask)
        return self._finish(self._pool(mixed, features))


HEADS: dict[str, type[RewardHead]] = {
    "skipca": SkipCAHead,
    "skipca_mha": MultiHeadSkipCAHead,
    "linear": LinearHead,
}


def build_head(hidden_size: int, config: HeadConfig) -> RewardHead:
    """The head that ``config.kind`` names."""
    return HEADS[config.kind](hidden_size, config)


__all__ = ["HEADS", "LinearHead", "MultiHeadSkipCAHead", "RMSNorm", "RewardHead", "SkipCAHead", "build_head"]
