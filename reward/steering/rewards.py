"""Rewards for steering: any callable ``(images, prompts) -> (N,) scores``, and adapters for the
project's scorers. ``images`` is a float tensor (N, 3, H, W) in [0, 1], the decoded x0 predictions of
all particles at once (one call per weighting step); adapters turn it into what their model wants."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image


class RewardFn(Protocol):
    """A reward: scores of (image, prompt) pairs, higher is better."""

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor | np.ndarray: ...


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] → uint8 pixels (rounded, on the CPU), as an 8-bit image stores them."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) floats in [0, 1] → RGB PIL images (rounded to 8 bits)."""
    return [Image.fromarray(array) for array in to_uint8(images).permute(0, 2, 3, 1).numpy()]


def as_reward_vector(values: Any, count: int, *, name: str = "reward") -> torch.Tensor:
    """A reward's output as float64 (count,), or a clear error naming the shape it got."""
    tensor = (
        values.detach() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float64))
    )
    tensor = tensor.double().cpu()
    if tensor.numel() != count or tensor.dim() > 2 or (tensor.dim() == 2 and tensor.shape[1] != 1):
        raise ValueError(
            f"{name} returned shape {tuple(tensor.shape)} for {count} images; expected ({count},)"
        )
    tensor = tensor.reshape(-1)
    return tensor


class PilReward:
    """Wraps a scorer that takes PIL images, e.g. ``ClipScoreScorer().score`` or user code."""

    def __init__(self, score: Callable[[list[Image.Image], list[str]], Any], name: str = "pil") -> None:
        self.score = score
        self.name = name

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return as_reward_vector(self.score(to_pil(images), list(prompts)), len(prompts), name=self.name)


class ScorerReward:
    """A project reward model (:class:`reward.scoring.RewardScorer`): one perspective, or a weighted mix
    ``{perspective: weight}`` (Σ weight · reward). Scalar (non-GPM) perspectives only. The particles reach
    the scorer as uint8 tensors: no PIL round trip where the backbone's processor takes tensors."""

    def __init__(
        self, scorer: Any, perspectives: str | Mapping[str, float] | None = None, name: str = ""
    ) -> None:
        if perspectives is None:
            perspectives = {scorer.active: 1.0}
        elif isinstance(perspectives, str):
            perspectives = {perspectives: 1.0}
        if not perspectives:
            raise ValueError("ScorerReward: no perspective given")
        for perspective in perspectives:
            if scorer.config(perspective).head.gpm_dim is not None:
                raise ValueError(
                    f"perspective {perspective!r} is a GPM model: no scalar reward to steer with"
                )
        self.scorer = scorer
        self.weights = dict(perspectives)
        self.name = name or "+".join(self.weights)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        pixels = list(to_uint8(images).unbind(0))
        total = torch.zeros(len(pixels), dtype=torch.float64)
        for perspective, weight in self.weights.items():
            total += (
                weight
                * torch.as_tensor(self.scorer.score(pixels, list(prompts), perspective=perspective)).double()
            )
        return total


def clipscore_reward(spec: Any = None, name: str = "clipscore") -> PilReward:
    """The CLIPScore baseline (:class:`reward.baselines.ClipScoreScorer`) as a steering reward."""
    from reward.baselines import ClipScoreScorer, ClipSpec

    scorer = ClipScoreScorer(spec if spec is not None else ClipSpec())
    return PilReward(scorer.score, name=name)
