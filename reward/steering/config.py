"""Configuration of one steered sampling run (a frozen dataclass, checked before anything samples)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: Potentials of FK steering (Singhal et al. 2025): how a particle's reward history becomes its weight.
POTENTIALS: tuple[str, ...] = ("max", "diff", "add", "rt")
#: Sampling methods: plain sampling (k = 1), best-of-N (k independent samples, the best kept) and FK.
METHODS: tuple[str, ...] = ("none", "best_of_n", "fk")


class SteeringError(ValueError):
    """A steering configuration or input that cannot work; raised before any sampling starts."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SteeringConfig:
    """How to sample one prompt: method, particles, potential, λ, schedule and the sampler's steps.

    Step indices count sampler steps from 0 (first, noisiest) to ``num_inference_steps - 1`` (last).
    The last step is always a weighting step, where the final correction is applied.
    """

    method: str = field(default="fk", metadata=_help("none | best_of_n | fk"))
    num_particles: int = field(default=4, metadata=_help("k: particles (1 for method none)."))
    potential: str = field(default="max", metadata=_help("FK potential: max | diff | add | rt."))
    lmbda: float = field(default=10.0, metadata=_help("λ >= 0: the reward's inverse temperature."))
    num_inference_steps: int = field(default=25, metadata=_help("Sampler steps (NFE per particle)."))
    resample_start: int = field(default=0, metadata=_help("First step index that may resample."))
    resample_end: int | None = field(
        default=None, metadata=_help("Last step index that may resample (None: the last step).")
    )
    resample_frequency: int = field(default=5, metadata=_help("Resample every this many steps."))
    adaptive: bool = field(
        default=True, metadata=_help("Resample only when the effective sample size falls under k/2.")
    )
    reward_min_value: float = field(
        default=0.0, metadata=_help("Reward history before the first weighting (max / diff / add).")
    )
    guidance_scale: float = field(default=1.0, metadata=_help("Classifier-free guidance (1: off)."))
    eta: float = field(
        default=0.0,
        metadata=_help(
            "Noise of a DDIM-style sampler step (0: deterministic; 1: as much as DDPM). FK steering needs"
            " it > 0 with DDIM: resampled copies of a particle only diverge through the sampler's noise."
        ),
    )

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise SteeringError("invalid SteeringConfig: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.method not in METHODS:
            problems.append(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        if self.potential not in POTENTIALS:
            problems.append(f"unknown potential {self.potential!r} (known: {', '.join(POTENTIALS)})")
        if not self.lmbda >= 0:  # also rejects NaN
            problems.append(f"lmbda must be >= 0, got {self.lmbda}")
        if self.num_particles < 1:
            problems.append(f"num_particles must be >= 1, got {self.num_particles}")
        if self.method == "none" and self.num_particles != 1:
            problems.append(f"method 'none' samples one particle, got num_particles={self.num_particles}")
        if self.num_inference_steps < 1:
            problems.append(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.resample_frequency < 1:
            problems.append(f"resample_frequency must be >= 1, got {self.resample_frequency}")
        if self.resample_start < 0:
            problems.append(f"resample_start must be >= 0, got {self.resample_start}")
        if self.resample_end is not None and self.resample_end < self.resample_start:
            problems.append(f"resample_end ({self.resample_end}) < resample_start ({self.resample_start})")
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            problems.append(f"eta must be a finite number >= 0, got {self.eta}")
        if self.guidance_scale < 1.0:
            problems.append(f"guidance_scale must be >= 1, got {self.guidance_scale}")
        return problems

    @property
    def steered(self) -> bool:
        """Does this run weight and resample particles during sampling?"""
        return self.method == "fk" and self.num_particles > 1 and self.lmbda > 0

    def weighting_steps(self) -> list[int]:
        """Step indices at which rewards are taken and particles weighted (always includes the last)."""
        last = self.num_inference_steps - 1
        end = last if self.resample_end is None else min(self.resample_end, last)
        steps = (
            set(range(self.resample_start, end + 1, self.resample_frequency))
            if self.resample_start <= last
            else set()
        )
        steps.add(last)
        return sorted(steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
