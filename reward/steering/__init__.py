"""Inference-time scaling with reward models: FK steering (SMC over a diffusers sampler), best-of-N
and plain sampling, with any reward callable on (images, prompts). No Prefect here."""

from reward.steering.config import METHODS, POTENTIALS, SteeringConfig, SteeringError
from reward.steering.denoisers import LatentTextDenoiser, PixelDenoiser
from reward.steering.rewards import PilReward, RewardFn, ScorerReward, clipscore_reward, to_pil
from reward.steering.sampler import SteeringResult, particle_seed, sample
from reward.steering.sdxl import LatentSDXLDenoiser
from reward.steering.smc import FKState, StepRecord, effective_sample_size, resample_indices

__all__ = [
    "METHODS",
    "POTENTIALS",
    "FKState",
    "LatentSDXLDenoiser",
    "LatentTextDenoiser",
    "PilReward",
    "PixelDenoiser",
    "RewardFn",
    "ScorerReward",
    "SteeringConfig",
    "SteeringError",
    "SteeringResult",
    "StepRecord",
    "clipscore_reward",
    "effective_sample_size",
    "particle_seed",
    "resample_indices",
    "sample",
    "to_pil",
]
