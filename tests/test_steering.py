"""FK steering: the SMC arithmetic against hand-computed cases, and the sampler on tiny random
diffusers models (latent and pixel space) built offline."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from reward.steering import (
    FKState,
    SteeringConfig,
    SteeringError,
    effective_sample_size,
    resample_indices,
    sample,
)
from reward.steering.tiny import tiny_latent_denoiser, tiny_pixel_denoiser

R1 = [0.0, 0.5, 1.0]
R2 = [0.2, 0.1, 0.4]
R3 = [0.3, 0.3, 0.9]
#: Cumulative log weights after steps 1 and 2 (λ = 1, history starts at 0, no resampling), by hand:
#: rt: r1, then r1 + r2; diff: r1, then r2 (telescopes); max: r1, then r1 + max(r2, r1); add: r1, then
#: r1 + (r2 + r1).
HAND_STEP2 = {
    "rt": [0.2, 0.6, 1.4],
    "diff": [0.2, 0.1, 0.4],
    "max": [0.2, 1.0, 2.0],
    "add": [0.2, 1.1, 2.4],
}
HAND_STEP2_POTENTIALS = {
    "rt": [0.2, 0.1, 0.4],
    "diff": [0.2, -0.4, -0.6],
    "max": [0.2, 0.5, 1.0],
    "add": [0.2, 0.6, 1.4],
}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TestArithmetic:
    @pytest.mark.parametrize("potential", ["rt", "diff", "max", "add"])
    def test_weights_per_potential_and_final_correction(self, potential: str) -> None:
        state = FKState(potential, 1.0, 3, adaptive=True)
        assert state.weigh(0, torch.tensor(R1), _gen()) is None
        assert state.log_weights.tolist() == pytest.approx(R1)
        assert state.weigh(1, torch.tensor(R2), _gen()) is None
        assert state.records[1].log_potentials == pytest.approx(HAND_STEP2_POTENTIALS[potential])
        assert state.log_weights.tolist() == pytest.approx(HAND_STEP2[potential])
        # Final step: the product of potentials along each particle becomes exp(λ r_T) for every
        # potential (corrected for max / add / rt; diff telescopes).
        state.weigh(2, torch.tensor(R3), _gen(), final=True)
        assert state.records[2].final
        assert state.log_weights.tolist() == pytest.approx(R3)

    def test_final_correction_values_for_max(self) -> None:
        state = FKState("max", 1.0, 3)
        state.weigh(0, torch.tensor(R1), _gen())
        state.weigh(1, torch.tensor(R2), _gen())
        state.weigh(2, torch.tensor(R3), _gen(), final=True)
        assert not any(record.resampled for record in state.records)
        # log G_T = λ r_T - Σ log G_s = [.3,.3,.9] - ([0,.5,1] + [.2,.5,1])
        assert state.records[2].log_potentials == pytest.approx([0.1, -0.7, -1.1])

    def test_ess_hand_values(self) -> None:
        assert effective_sample_size(torch.zeros(4)) == pytest.approx(4.0)
        assert effective_sample_size(torch.tensor([0.0, math.log(3.0)])) == pytest.approx(16 / 10)
        assert effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf])) == pytest.approx(1.0)
        w = [1.0, math.exp(0.5), math.exp(1.0)]
        state = FKState("rt", 1.0, 3)
        state.weigh(0, torch.tensor(R1), _gen())
        assert state.records[0].ess == pytest.approx(sum(w) ** 2 / sum(x * x for x in w))
        assert state.records[0].ess == pytest.approx(2.5934, abs=1e-4)

    def test_resampling_indices_under_a_fixed_generator(self) -> None:
        log_w = torch.tensor([0.0, math.log(3.0), -math.inf, 0.0])
        first = resample_indices(log_w, _gen(5))
        assert torch.equal(first, resample_indices(log_w, _gen(5)))
        expected = torch.multinomial(
            torch.tensor([1.0, 3.0, 0.0, 1.0]) / 5, 4, replacement=True, generator=_gen(5)
        )
        assert first.tolist() == expected.tolist()
        assert 2 not in first.tolist()
        draws = torch.cat([resample_indices(log_w, _gen(seed)) for seed in range(1000)])
        assert (draws == 1).float().mean().item() == pytest.approx(0.6, abs=0.03)
        assert torch.equal(
            resample_indices(torch.tensor([-math.inf, 0.0, -math.inf]), _gen()), torch.ones(3).long()
        )

    def test_adaptive_resampling_only_under_half_k(self) -> None:
        state = FKState("rt", 10.0, 4, adaptive=True)
        ancestors = state.weigh(0, torch.tensor([0.0, 0.0, 0.0, 1.0]), _gen(1))
        assert state.records[0].ess < 2 and state.records[0].resampled
        assert ancestors is not None and ancestors.tolist() == [3, 3, 3, 3]
        assert state.log_weights.tolist() == [0.0] * 4
        assert state.log_product.tolist() == pytest.approx([10.0] * 4)
        calm = FKState("rt", 0.1, 4, adaptive=True)
        assert calm.weigh(0, torch.tensor([0.0, 0.0, 0.0, 1.0]), _gen(1)) is None
        assert calm.records[0].ess > 2 and not calm.records[0].resampled
        eager = FKState("rt", 0.1, 4, adaptive=False)
        assert eager.weigh(0, torch.tensor([0.0, 0.0, 0.0, 1.0]), _gen(1)) is not None

    def test_zero_lambda_never_resamples(self) -> None:
        state = FKState("max", 0.0, 4, adaptive=False)
        for step in range(3):
            assert state.weigh(step, torch.rand(4, generator=_gen(step)), _gen()) is None

    def test_nan_reward_gets_weight_zero_with_a_warning(self) -> None:
        state = FKState("rt", 1.0, 3, adaptive=False)
        with pytest.warns(RuntimeWarning, match=r"non-finite reward for particle\(s\) \[0\]"):
            ancestors = state.weigh(0, torch.tensor([math.nan, 0.5, 0.2]), _gen())
        assert state.records[0].log_potentials[0] == -math.inf
        assert ancestors is not None and 0 not in ancestors.tolist()
        w = [math.exp(0.5), math.exp(0.2)]
        assert state.records[0].ess == pytest.approx(sum(w) ** 2 / sum(x * x for x in w))
        everyone = FKState("rt", 1.0, 2)
        with pytest.warns(RuntimeWarning):
            assert everyone.weigh(0, torch.tensor([math.nan, math.inf]), _gen()) is None
        assert everyone.log_weights.tolist() == [0.0, 0.0]


class TestBadInput:
    def test_unknown_potential(self) -> None:
        with pytest.raises(SteeringError, match="unknown potential 'maxx'.*max, diff, add, rt"):
            SteeringConfig(potential="maxx")
        with pytest.raises(SteeringError, match="unknown potential"):
            FKState("best", 1.0, 2)

    def test_negative_lambda(self) -> None:
        with pytest.raises(SteeringError, match="lmbda must be >= 0, got -1"):
            SteeringConfig(lmbda=-1.0)
        with pytest.raises(SteeringError, match="lmbda must be >= 0, got nan"):
            SteeringConfig(lmbda=math.nan)

    def test_other_fields(self) -> None:
        with pytest.raises(SteeringError, match="method 'none' samples one particle"):
            SteeringConfig(method="none", num_particles=4)
        with pytest.raises(SteeringError, match=r"resample_end \(1\) < resample_start \(3\)"):
            SteeringConfig(resample_start=3, resample_end=1)
        for eta in (-0.5, math.nan, math.inf):
            with pytest.raises(SteeringError, match="eta must be a finite number >= 0"):
                SteeringConfig(eta=eta)

    def test_eta_needs_a_scheduler_that_takes_it(self) -> None:
        from diffusers import DDPMScheduler

        pixel = tiny_pixel_denoiser(seed=0)
        pixel.scheduler = DDPMScheduler.from_config(pixel.scheduler.config)
        config = SteeringConfig(method="none", num_particles=1, num_inference_steps=2, eta=1.0)
        with pytest.raises(
            SteeringError, match="eta=1 needs a scheduler whose step takes eta.*DDPMScheduler"
        ):
            sample(pixel, "a red circle", config)

    def test_schedule(self) -> None:
        config = SteeringConfig(
            num_inference_steps=10, resample_start=2, resample_end=7, resample_frequency=3
        )
        assert config.weighting_steps() == [2, 5, 9]
        assert SteeringConfig(num_inference_steps=4, resample_frequency=10).weighting_steps() == [0, 3]

    def test_reward_needed(self) -> None:
        with pytest.raises(SteeringError, match="needs a reward"):
            sample(tiny_pixel_denoiser(), "a red circle", SteeringConfig(num_inference_steps=2))


def redness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def latent():
    torch.set_num_threads(1)
    return tiny_latent_denoiser(seed=0)


STEPS = 6


class TestSampler:
    def test_identical_images_without_steering(self, latent) -> None:
        plain = sample(
            latent,
            "two red circles",
            SteeringConfig(method="none", num_particles=1, num_inference_steps=STEPS),
            seed=3,
        )
        again = sample(
            latent,
            "two red circles",
            SteeringConfig(method="none", num_particles=1, num_inference_steps=STEPS),
            seed=3,
        )
        assert torch.equal(plain.images, again.images)
        other = sample(
            latent,
            "two red circles",
            SteeringConfig(method="none", num_particles=1, num_inference_steps=STEPS),
            seed=4,
        )
        assert not torch.equal(plain.images, other.images)
        best = sample(
            latent,
            "two red circles",
            SteeringConfig(method="best_of_n", num_inference_steps=STEPS),
            reward=redness,
            seed=3,
        )
        fk_zero = sample(
            latent,
            "two red circles",
            SteeringConfig(
                method="fk", lmbda=0.0, adaptive=False, resample_frequency=1, num_inference_steps=STEPS
            ),
            reward=redness,
            seed=3,
        )
        assert torch.equal(fk_zero.images, best.images)
        # Particle 0 starts from the seed's own noise (equal up to batched-kernel rounding).
        assert torch.allclose(best.images[0], plain.images[0], atol=1e-4)
        assert not any(record.resampled for record in fk_zero.records)
        fk_one = sample(
            latent,
            "two red circles",
            SteeringConfig(
                method="fk", num_particles=1, lmbda=50.0, resample_frequency=1, num_inference_steps=STEPS
            ),
            reward=redness,
            seed=3,
        )
        assert torch.equal(fk_one.images, plain.images)
        assert best.nfe == fk_zero.nfe == 4 * STEPS

    @pytest.mark.filterwarnings("ignore:FK steering over a deterministic")
    def test_fk_batches_rewards_and_resamples(self, latent) -> None:
        calls: list[int] = []

        def counting(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            calls.append(len(images))
            assert images.shape[1:] == (3, 16, 16) and 0 <= images.min() and images.max() <= 1
            return redness(images, prompts)

        config = SteeringConfig(
            method="fk", lmbda=300.0, adaptive=False, resample_frequency=2, num_inference_steps=STEPS
        )
        result = sample(latent, "a blue square", config, reward=counting, seed=1)
        assert calls == [4] * len(config.weighting_steps())
        assert [record.step for record in result.records] == [0, 2, 4, 5]
        assert any(record.resampled for record in result.records)
        final = result.records[-1]
        assert result.final_rewards is not None
        # The final rewards are those of the returned images (after the last resampling).
        assert result.final_rewards.tolist() == pytest.approx(
            redness(result.images, []).double().tolist(), abs=1e-2
        )
        assert result.selected == int(torch.argmax(result.final_rewards))
        assert final.final and len(final.rewards) == 4

    def test_nan_reward_during_sampling(self, latent) -> None:
        def broken(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            values = redness(images, prompts).double()
            values[1] = math.nan
            return values

        config = SteeringConfig(
            method="fk", lmbda=10.0, adaptive=False, resample_frequency=2, num_inference_steps=STEPS
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = sample(latent, "a blue square", config, reward=broken, seed=1)
        assert any("non-finite reward" in str(w.message) for w in caught)
        assert result.images.shape == (4, 3, 16, 16)
        assert all(record.log_potentials[1] == -math.inf for record in result.records)
        for record in result.records:
            if record.ancestors is not None:
                assert 1 not in record.ancestors

    def test_pixel_space_model(self) -> None:
        pixel = tiny_pixel_denoiser(seed=0)
        plain = sample(
            pixel,
            "a red circle",
            SteeringConfig(method="none", num_particles=1, num_inference_steps=4),
            seed=2,
        )
        fk = sample(
            pixel,
            "a red circle",
            SteeringConfig(method="fk", lmbda=0.0, num_inference_steps=4),
            reward=redness,
            seed=2,
        )
        assert plain.images.shape == (1, 3, 16, 16)
        assert torch.allclose(fk.images[0], plain.images[0], atol=1e-4)
        guided = sample(
            pixel,
            "a red circle",
            SteeringConfig(method="none", num_particles=1, num_inference_steps=4, guidance_scale=3.0),
            seed=2,
        )
        assert guided.nfe == 8 and not torch.equal(guided.images, plain.images)


class TestStochasticSampler:
    """DDIM with η > 0: every particle slot draws its step noise from its own seeded stream."""

    def _sample(self, denoiser, config: SteeringConfig, seed: int = 3):
        return sample(denoiser, "two red circles", config, reward=redness, seed=seed)

    def test_seeded_streams_per_particle(self, latent) -> None:
        stochastic = {"num_inference_steps": STEPS, "eta": 1.0}
        plain = self._sample(latent, SteeringConfig(method="none", num_particles=1, **stochastic))
        again = self._sample(latent, SteeringConfig(method="none", num_particles=1, **stochastic))
        deterministic = self._sample(
            latent, SteeringConfig(method="none", num_particles=1, num_inference_steps=STEPS)
        )
        assert torch.equal(plain.images, again.images)
        assert not torch.allclose(plain.images, deterministic.images, atol=1e-3)
        best = self._sample(latent, SteeringConfig(method="best_of_n", **stochastic))
        fk_zero = self._sample(
            latent, SteeringConfig(method="fk", lmbda=0.0, adaptive=False, resample_frequency=1, **stochastic)
        )
        # Particle 0 of best-of-4 is the plain sample of the seed, step noise included (one slot's stream
        # does not depend on how many particles run beside it).
        assert torch.allclose(best.images[0], plain.images[0], atol=1e-4)
        assert torch.equal(fk_zero.images, best.images)

    def test_resampled_copies_diverge_only_with_noise(self, latent) -> None:
        def collapsed(eta: float):
            config = SteeringConfig(
                method="fk",
                lmbda=1e4,
                adaptive=False,
                resample_frequency=STEPS,  # weighting steps: 0 and the last
                num_inference_steps=STEPS,
                eta=eta,
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = self._sample(latent, config)
            first = result.records[0]
            assert first.ancestors is not None and len(set(first.ancestors)) == 1, first.ancestors
            return result, [str(w.message) for w in caught]

        # The last step's rewards are those of the four particles before its own resampling.
        frozen, frozen_warnings = collapsed(0.0)
        # Deterministic DDIM: four copies of one particle stay one image, and the run says why.
        assert len(set(frozen.records[-1].rewards)) == 1, frozen.records[-1].rewards
        assert any("deterministic DDIMScheduler step (eta=0)" in m for m in frozen_warnings)
        explored, explored_warnings = collapsed(1.0)
        assert len(set(explored.records[-1].rewards)) == 4, explored.records[-1].rewards
        assert not any("deterministic" in m for m in explored_warnings)
