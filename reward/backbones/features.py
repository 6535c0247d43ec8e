"""What one backbone forward returns, and the token-selection helpers that build it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BackboneOutput:
    """Features of one batch of (image, prompt) inputs.

    Attributes:
        e_h: (B, H) hidden state of the chosen layer at the last non-padding token.
        e_v: (B, V, H) visual tokens as the language model receives them (the projector output,
            rearranged by the architecture where it does so), zero-padded to the longest row.
        e_v_mask: (B, V) bool, True for real visual tokens, False for padding.
        attention_mask: (B, L) the text attention mask (1 = token, 0 = padding).
        last_index: (B,) position of the token that gave ``e_h``.
        sequence: (B, L, H) the chosen layer's hidden states, only when requested (mean pooling).
    """

    e_h: Tensor
    e_v: Tensor
    e_v_mask: Tensor
    attention_mask: Tensor
    last_index: Tensor
    sequence: Tensor | None = None


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Position of the last non-padding token of each row; works with left and right padding."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, L), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"attention_mask has no tokens in row(s) {rows}")
    length = mask.shape[1]
    return length - 1 - mask.flip(1).int().argmax(dim=1)


def gather_last_token(hidden: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(hidden at the last non-padding token (B, H), its index (B,))."""
    index = last_token_index(attention_mask).to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index], index


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, L, H) over the positions where ``mask`` (B, L) is non-zero."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def gather_visual_tokens(embeddings: Tensor, image_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Collect the rows' image-token embeddings into a zero-padded (B, V, H) tensor and its mask.

    Order within a row is kept. V is at least 1 so that downstream attention always has a key;
    rows without image tokens get an all-False mask. Differentiable w.r.t. ``embeddings``.
    """
    if image_mask.shape != embeddings.shape[:2]:
        raise ValueError(
            f"image mask shape {tuple(image_mask.shape)} does not match embeddings {tuple(embeddings.shape)}"
        )
    image_mask = image_mask.to(embeddings.device).bool()
    counts = image_mask.sum(dim=1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    rows, cols = image_mask.nonzero(as_tuple=True)
    slots = (image_mask.long().cumsum(dim=1) - 1)[rows, cols]
    batch, _, hidden = embeddings.shape
    padded = embeddings.new_zeros(batch, width, hidden).index_put((rows, slots), embeddings[rows, cols])
    valid = torch.arange(width, device=embeddings.device).unsqueeze(0) < counts.unsqueeze(1)
    return padded, valid
