"""One prompt, k particles: plain sampling, best-of-N or FK steering over a diffusers scheduler.

The loop is the scheduler's own (``set_timesteps``, ``scale_model_input``, ``step``); FK steering reads
``step(...).pred_original_sample`` (DDIM, DDPM, Euler, ... all give it), decodes it, scores all particles
in ONE reward call and lets :class:`reward.steering.smc.FKState` weight and resample them. At the last
step the reward is taken on the final sample itself.

Randomness: particle slot p starts from noise drawn by a generator seeded from (seed, p) and draws the
sampler's step noise (DDPM, or DDIM with ``eta`` > 0) from its own stream seeded from (seed, p), so
particle 0 of every method is the plain sample of that seed, stochastic sampler included; the
resampling draws come from one more generator seeded from ``seed``. FK with λ = 0 (uniform weights
never resample) gives exactly the images of best-of-N, and k = 1 exactly those of plain sampling.
After a resampling, copies of one particle sit in different slots and so diverge through their slots'
step noise; with a deterministic step (DDIM at ``eta`` = 0) they stay identical, which leaves FK no
room to explore (a warning says so).
"""

from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from reward.steering.config import SteeringConfig, SteeringError
from reward.steering.rewards import RewardFn, as_reward_vector
from reward.steering.smc import FKState, StepRecord

#: Offsets that separate the generators derived from one seed.
_RESAMPLE_STREAM = 7_919
_STEP_STREAM = 104_729


def particle_seed(seed: int, particle: int) -> int:
    """The seed of particle ``particle``'s initial noise (particle 0 uses ``seed`` itself)."""
    return seed + particle * 1_000_003


@dataclass
class SteeringResult:
    """Final particles (images in [0, 1]), their final rewards (None without a reward), the chosen
    particle, each weighting step's record, the model evaluations and where the time went."""

    images: torch.Tensor
    final_rewards: torch.Tensor | None
    selected: int
    records: list[StepRecord] = field(default_factory=list)
    nfe: int = 0
    seconds: float = 0.0
    reward_seconds: float = 0.0

    @property
    def best_image(self) -> torch.Tensor:
        return self.images[self.selected]


def _fresh_scheduler(scheduler: Any) -> Any:
    """A new scheduler of the same kind and config: a run never shares step state with another."""
    return type(scheduler).from_config(scheduler.config)


def _step_options(scheduler: Any, config: SteeringConfig) -> dict[str, float]:
    """Extra keyword arguments of ``scheduler.step``: ``eta`` when asked for (and the step takes it)."""
    takes_eta = "eta" in inspect.signature(scheduler.step).parameters
    if config.eta > 0 and not takes_eta:
        raise SteeringError(
            f"eta={config.eta:g} needs a scheduler whose step takes eta (DDIM); "
            f"{type(scheduler).__name__} does not (use eta=0: its steps are already what they are)"
        )
    if takes_eta and config.eta == 0 and config.steered:
        warnings.warn(
            f"FK steering over a deterministic {type(scheduler).__name__} step (eta=0): resampled copies "
            "of a particle stay identical, so FK can only keep or drop particles; set eta > 0 to explore",
            UserWarning,
            stacklevel=4,  # the caller of sample(), past torch.no_grad's wrapper
        )
    return {"eta": config.eta} if takes_eta else {}


def _step_generators(k: int, seed: int) -> list[torch.Generator]:
    """One generator of step noise per particle slot (slot p's stream depends on (seed, p) only)."""
    return [torch.Generator().manual_seed(particle_seed(seed, p) + _STEP_STREAM) for p in range(k)]


def _initial_noise(
    shape: tuple[int, ...], k: int, seed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    draws = [
        torch.randn(
            shape, generator=torch.Generator().manual_seed(particle_seed(seed, p)), dtype=torch.float32
        )
        for p in range(k)
    ]
    return torch.stack(draws).to(device=device, dtype=dtype)


def _timed_reward(reward: RewardFn, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    values = as_reward_vector(reward(images, prompts), len(prompts), name=getattr(reward, "name", "reward"))
    return values, time.perf_counter() - start


@torch.no_grad()
def sample(
    denoiser: Any, prompt: str, config: SteeringConfig, *, reward: RewardFn | None = None, seed: int = 0
) -> SteeringResult:
    """Sample ``prompt`` with ``config``; ``reward`` is required for best-of-N and FK."""
    if config.method != "none" and reward is None:
        raise SteeringError(f"method {config.method!r} needs a reward")
    started = time.perf_counter()
    k = config.num_particles
    prompts = [prompt] * k
    scheduler = _fresh_scheduler(denoiser.scheduler)
    scheduler.set_timesteps(config.num_inference_steps)
    timesteps = scheduler.timesteps
    if len(timesteps) != config.num_inference_steps:
        raise SteeringError(
            f"the scheduler made {len(timesteps)} steps, expected {config.num_inference_steps}"
        )
    step_options = _step_options(scheduler, config)
    step_generators = _step_generators(k, seed)
    resample_generator = torch.Generator().manual_seed(seed + _RESAMPLE_STREAM)
    dtype = getattr(denoiser.unet, "dtype", torch.float32)
    samples = (
        _initial_noise(denoiser.noise_shape(), k, seed, denoiser.device, dtype) * scheduler.init_noise_sigma
    )
    conditioning = denoiser.condition(prompts, config.guidance_scale)
    state = FKState(config.potential, config.lmbda, k, config.adaptive, config.reward_min_value)
    weighting = set(config.weighting_steps()) if config.method == "fk" else set()
    last = len(timesteps) - 1
    reward_seconds = 0.0
    final_images: torch.Tensor | None = None
    final_rewards: torch.Tensor | None = None
    for index, timestep in enumerate(timesteps):
        model_input = scheduler.scale_model_input(samples, timestep)
        output = denoiser.predict(model_input, timestep, conditioning, config.guidance_scale)
        stepped = scheduler.step(output, timestep, samples, generator=step_generators, **step_options)
        samples = stepped.prev_sample
        if index not in weighting:
            continue
        final = index == last
        predicted = samples if final else stepped.pred_original_sample
        images = denoiser.decode(predicted)
        rewards, seconds = _timed_reward(reward, images, prompts)
        reward_seconds += seconds
        ancestors = state.weigh(index, rewards, resample_generator, final=final)
        if ancestors is not None:
            samples = samples[ancestors.to(samples.device)]
            images, rewards = images[ancestors.to(images.device)], rewards[ancestors]
        if final:
            final_images, final_rewards = images, rewards
    if final_images is None:
        final_images = denoiser.decode(samples)
        if reward is not None and config.method != "none":
            final_rewards, seconds = _timed_reward(reward, final_images, prompts)
            reward_seconds += seconds
    selected = 0
    if final_rewards is not None and config.method != "none":
        finite = torch.where(
            torch.isfinite(final_rewards), final_rewards, torch.full_like(final_rewards, -torch.inf)
        )
        selected = int(torch.argmax(finite))
    guidance_factor = 2 if config.guidance_scale > 1 else 1
    return SteeringResult(
        images=final_images.float().cpu(),
        final_rewards=None if final_rewards is None else final_rewards.cpu(),
        selected=selected,
        records=state.records,
        nfe=k * len(timesteps) * guidance_factor,
        seconds=time.perf_counter() - started,
        reward_seconds=reward_seconds,
    )
