"""Reward heads on top of :class:`reward.backbones.BackboneOutput`.

- :class:`SkipCAHead`: cross-attention with the text hidden state as query and the visual tokens
  ``e_v`` as keys/values (padding masked), a residual connection back to the query and LayerNorm,
  then a linear map to the reward (1 output) or a GPM embedding (2k outputs).
- :class:`LinearHead`: a linear map of the pooled hidden state (the "w/o SkipCA" ablation).

Pooling: ``"eos"`` uses ``e_h`` (the last non-padding token); ``"mean"`` averages the chosen layer's
hidden states over non-padding tokens, so the backbone must be run with ``return_sequence=True``
(see :attr:`RewardHead.needs_sequence`). With mean pooling SkipCA attends from every token and the
results are averaged, which for a single query reduces exactly to the eos case.

Heads return shape (B,) for a scalar reward and (B, 2k) for GPM.
"""

from __future__ import annotations

from torch import Tensor, nn

from reward.backbones.features import BackboneOutput, masked_mean
from reward.config import HeadConfig


class RewardHead(nn.Module):
    """Common interface: ``forward(features) -> rewards``."""

    def __init__(self, hidden_size: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        self.output = nn.Linear(hidden_size, config.output_dim)
        # Small initial rewards, as in the paper's value head (std 1 / (H + 1)).
        nn.init.normal_(self.output.weight, std=1.0 / (hidden_size + 1))
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


class SkipCAHead(RewardHead):
    """Skip cross-attention: LayerNorm(q + CrossAttn(q, e_v, e_v)) -> linear."""

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
        visual_mask = visual_mask.to(query.device).bool()
        has_visual = visual_mask.any(dim=1)
        # Unmask the first slot of empty rows so the softmax is defined; their output is zeroed below.
        key_padding_mask = ~visual_mask
        key_padding_mask[:, 0] &= has_visual
        visual = visual.to(query.dtype)
        attended, _ = self.attention(
            query, visual, visual, key_padding_mask=key_padding_mask, need_weights=False
        )
        attended = attended * has_visual.to(attended.dtype).view(-1, 1, 1)
        return self.norm(query + attended)

    def forward(self, features: BackboneOutput) -> Tensor:
        mixed = self.cross_attend(self._query(features), features.e_v, features.e_v_mask)
        return self._finish(self._pool(mixed, features))


def build_head(hidden_size: int, config: HeadConfig) -> RewardHead:
    """The head that ``config.kind`` names."""
    head_class = SkipCAHead if config.kind == "skipca" else LinearHead
    return head_class(hidden_size, config)


__all__ = ["LinearHead", "RewardHead", "SkipCAHead", "build_head"]
