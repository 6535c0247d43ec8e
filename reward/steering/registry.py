"""Generators, rewards and judges by name, loaded once per process.

Generators: ``tiny-latent`` / ``tiny-pixel`` (random, for tests), a demo generator folder
(:mod:`reward.steering.demo_generator`), or a diffusers text-to-image pipeline, SD or SDXL (a local
folder or a hub id such as ``stabilityai/stable-diffusion-2-1-base`` or
``stabilityai/stable-diffusion-xl-base-1.0``; sampled with DDIM on its own noise schedule).
Rewards / judges: ``oracle`` (the demo scene reader), ``clipscore`` (the CLIPScore baseline with a
:class:`reward.clip.ClipSpec`) or the name of a reward model folder given in ``reward_models``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reward.steering.denoisers import LatentTextDenoiser
from reward.steering.rewards import ScorerReward, clipscore_reward

BUILT_IN_REWARDS = ("oracle", "clipscore")
_lock = threading.Lock()


class _OracleReward:
    name = "oracle"

    def __init__(self) -> None:
        from data.demo.oracle import OracleJudge

        self.judge = OracleJudge()

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        return self.judge(images, prompts)


class _Serialized:
    """A shared reward called by one thread at a time (prompts mapped over threads share one loaded
    model; a reward model's forward keeps per-call state, e.g. hooks, and is not thread-safe)."""

    def __init__(self, reward: Any) -> None:
        self.reward = reward
        self.name = getattr(reward, "name", "reward")
        self._lock = threading.Lock()

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> Any:
        with self._lock:
            return self.reward(images, prompts)


@lru_cache(maxsize=8)
def _load_reward(
    name: str, folder: str | None, clip_model: str, clip_pretrained: str | None, device: str
) -> Any:
    if name == "oracle":
        return _Serialized(_OracleReward())
    if name == "clipscore":
        from reward.clip import ClipSpec

        return _Serialized(
            clipscore_reward(ClipSpec(clip_model, clip_pretrained, device=device), name="clipscore")
        )
    from reward.scoring import RewardScorer

    scorer = RewardScorer.from_pretrained({name: folder}, device=device)
    return _Serialized(ScorerReward(scorer, name, name=name))


def load_reward(
    name: str,
    reward_models: Mapping[str, str] | None = None,
    *,
    clip_model: str = "demo-tiny-clip",
    clip_pretrained: str | None = None,
    device: str = "cpu",
) -> Any:
    """The reward / judge called ``name`` (a callable on (images tensor, prompts))."""
    models = dict(reward_models or {})
    if name not in BUILT_IN_REWARDS and name not in models:
        raise ValueError(
            f"unknown reward {name!r}: use {', '.join(BUILT_IN_REWARDS)} or a name given in reward_models "
            f"(has {sorted(models)})"
        )
    with _lock:
        return _load_reward(name, models.get(name), clip_model, clip_pretrained, device)


@lru_cache(maxsize=4)
def _load_generator(spec: str, device: str) -> Any:
    from reward.steering import tiny
    from reward.steering.demo_generator import load_demo_generator

    if spec == "tiny-latent":
        return tiny.tiny_latent_denoiser()
    if spec == "tiny-pixel":
        return tiny.tiny_pixel_denoiser()
    if (Path(spec) / "generator_config.json").is_file():
        return load_demo_generator(spec, device)
    return _pipeline_denoiser(spec, device)


def _pipeline_denoiser(spec: str, device: str) -> Any:
    """A diffusers text-to-image pipeline (SD 1.x / 2.x or SDXL, folder or hub id) as a denoiser that
    samples with DDIM on the pipeline's own noise schedule."""
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    from reward.steering.sdxl import LatentSDXLDenoiser

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipeline = DiffusionPipeline.from_pretrained(spec, dtype=dtype).to(device)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    if isinstance(pipeline, StableDiffusionXLPipeline):
        return LatentSDXLDenoiser.from_pipeline(pipeline)
    if isinstance(pipeline, StableDiffusionPipeline):
        return LatentTextDenoiser.from_pipeline(pipeline)
    raise ValueError(
        f"{spec}: a {type(pipeline).__name__} cannot be steered; use a StableDiffusionPipeline or "
        "StableDiffusionXLPipeline (or a demo generator folder)"
    )


def load_generator(spec: str, device: str = "cpu") -> Any:
    """The denoiser named by ``spec`` (see the module docstring), loaded once per process."""
    with _lock:
        return _load_generator(str(spec), device)
