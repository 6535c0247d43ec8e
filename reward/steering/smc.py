"""The arithmetic of FK steering as sequential Monte Carlo, on reward vectors only (no model here).

Each weighting step t gives every particle a potential G_t from its reward history (log form, λ >= 0):

- ``rt``:   log G_t = λ r_t
- ``diff``: log G_t = λ (r_t - r_{t-1})          (r before the first step: ``reward_min_value``)
- ``max``:  log G_t = λ max(r_t, m_{t-1}),  m_t = max(r_t, m_{t-1})
- ``add``:  log G_t = λ (r_t + s_{t-1}),    s_t = r_t + s_{t-1}

Particles carry log weights that add up the potentials since they were last resampled. A step resamples
(multinomial, from the given generator) when it is adaptive and the effective sample size
ESS = (Σw)² / Σw² is under k/2, or always when not adaptive; after resampling every weight is 1. At the
last step the potential of ``max``, ``add`` and ``rt`` is corrected so that the product of a particle's
potentials along its ancestry equals exp(λ r_T): log G_T = λ r_T - Σ_{s<T} log G_s (``diff`` telescopes
to that already). A particle whose reward is not finite gets weight 0 (and a warning); when every
reward is non-finite the weights are left uniform.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from reward.steering.config import POTENTIALS, SteeringError


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """ESS = (Σ w)² / Σ w² of unnormalized weights exp(log_weights); 0 when every weight is 0."""
    log_weights = log_weights.double()
    if not torch.isfinite(log_weights).any():
        return 0.0
    normalized = torch.softmax(log_weights, dim=0)
    return float(1.0 / normalized.pow(2).sum())


def resample_indices(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """k ancestor indices drawn with replacement with probability ∝ exp(log_weights)."""
    probabilities = torch.softmax(log_weights.double(), dim=0)
    return torch.multinomial(probabilities, len(log_weights), replacement=True, generator=generator)


@dataclass
class StepRecord:
    """What one weighting step did: rewards (as given), log potentials, ESS before resampling, and the
    ancestor indices (None when the step did not resample)."""

    step: int
    rewards: list[float]
    log_potentials: list[float]
    ess: float
    resampled: bool
    ancestors: list[int] | None = None
    final: bool = False


@dataclass
class FKState:
    """The population state of FK steering over k particles."""

    potential: str
    lmbda: float
    num_particles: int
    adaptive: bool = True
    reward_min_value: float = 0.0
    log_weights: torch.Tensor = field(init=False)
    history: torch.Tensor = field(init=False)  # r_{t-1}, the running max or the running sum
    log_product: torch.Tensor = field(init=False)  # Σ log G_s along each particle's ancestry
    records: list[StepRecord] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.potential not in POTENTIALS:
            raise SteeringError(f"unknown potential {self.potential!r} (known: {', '.join(POTENTIALS)})")
        if not self.lmbda >= 0:
            raise SteeringError(f"lmbda must be >= 0, got {self.lmbda}")
        if self.num_particles < 1:
            raise SteeringError(f"num_particles must be >= 1, got {self.num_particles}")
        k = self.num_particles
        self.log_weights = torch.zeros(k, dtype=torch.float64)
        self.history = torch.full((k,), float(self.reward_min_value), dtype=torch.float64)
        self.log_product = torch.zeros(k, dtype=torch.float64)

    def log_potentials(self, rewards: torch.Tensor, *, final: bool) -> torch.Tensor:
        """log G_t of each particle for ``rewards`` (finite ones; see :meth:`weigh` for NaN)."""
        r = rewards.double()
        if final and self.potential in ("max", "add", "rt"):
            return self.lmbda * r - self.log_product
        if self.potential == "rt":
            return self.lmbda * r
        if self.potential == "diff":
            return self.lmbda * (r - self.history)
        if self.potential == "max":
            return self.lmbda * torch.maximum(r, self.history)
        return self.lmbda * (r + self.history)  # add

    def _next_history(self, rewards: torch.Tensor) -> torch.Tensor:
        if self.potential == "max":
            return torch.maximum(rewards, self.history)
        if self.potential == "add":
            return rewards + self.history
        return rewards.clone()

    def weigh(
        self, step: int, rewards: torch.Tensor, generator: torch.Generator, *, final: bool = False
    ) -> torch.Tensor | None:
        """Weight the particles with ``rewards`` (k,) and resample if due.

        Returns the ancestor indices when it resampled (the caller reorders its particles with them),
        else None.
        """
        rewards = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)
        if len(rewards) != self.num_particles:
            raise SteeringError(f"step {step}: got {len(rewards)} rewards for {self.num_particles} particles")
        bad = ~torch.isfinite(rewards)
        if bool(bad.any()):
            which = bad.nonzero().flatten().tolist()
            warnings.warn(
                f"FK steering step {step}: non-finite reward for particle(s) {which}; they get weight 0",
                RuntimeWarning,
                stacklevel=2,
            )
        clean = torch.where(bad, torch.zeros_like(rewards), rewards)
        log_g = self.log_potentials(clean, final=final)
        if bool(bad.all()):
            log_g = torch.zeros_like(log_g)
        else:
            log_g = torch.where(bad, torch.full_like(log_g, -math.inf), log_g)
        self.log_weights = self.log_weights + log_g
        self.log_product = self.log_product + torch.where(bad, torch.zeros_like(log_g), log_g)
        self.history = torch.where(bad, self.history, self._next_history(clean))
        ess = effective_sample_size(self.log_weights)
        due = ess < self.num_particles / 2 if self.adaptive else True
        uniform = bool((self.log_weights == self.log_weights[0]).all())
        ancestors = None
        if due and not uniform and self.num_particles > 1:
            ancestors = resample_indices(self.log_weights, generator)
            self.history = self.history[ancestors]
            self.log_product = self.log_product[ancestors]
            self.log_weights = torch.zeros_like(self.log_weights)
        self.records.append(
            StepRecord(
                step=step,
                rewards=[float(value) for value in rewards],
                log_potentials=[float(value) for value in log_g],
                ess=ess,
                resampled=ancestors is not None,
                ancestors=None if ancestors is None else ancestors.tolist(),
                final=final,
            )
        )
        return ancestors
