"""SD and SDXL denoisers sample what diffusers' own pipelines sample from the same noise, and a saved
pipeline folder loads as the right denoiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from reward.steering import SteeringConfig, sample
from reward.steering.registry import _pipeline_denoiser
from reward.steering.sampler import _initial_noise
from reward.steering.sdxl import LatentSDXLDenoiser
from reward.steering.tiny import tiny_latent_denoiser, tiny_sdxl_pipeline
from tests.reward_support import one_torch_thread  # noqa: F401 (autouse fixture)

PROMPT = "two red circles above a blue square"
STEPS = 4


def sd_pipeline() -> StableDiffusionPipeline:
    parts = tiny_latent_denoiser(seed=3)
    return StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def pipeline_images(pipeline, denoiser, guidance: float, seed: int) -> torch.Tensor:  # noqa: ANN001
    """The pipeline's own sampling from the noise our sampler starts from (particle 0 of ``seed``)."""
    noise = _initial_noise(denoiser.noise_shape(), 1, seed, torch.device("cpu"), torch.float32)
    size = noise.shape[-1] * 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    return pipeline(
        PROMPT,
        height=size,
        width=size,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=noise,
        output_type="pt",
    ).images


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_unsteered_sampling_equals_the_diffusers_pipeline(kind: str, guidance: float) -> None:
    if kind == "sd":
        pipeline = sd_pipeline()
        denoiser = tiny_latent_denoiser(seed=3)
    else:
        pipeline = tiny_sdxl_pipeline(seed=3)
        denoiser = LatentSDXLDenoiser(pipeline)
    config = SteeringConfig(
        method="none", num_particles=1, num_inference_steps=STEPS, guidance_scale=guidance
    )
    ours = sample(denoiser, PROMPT, config, seed=11).images
    theirs = pipeline_images(pipeline, denoiser, guidance, seed=11)
    assert ours.shape == theirs.shape == (1, 3, 16, 16)
    assert float(ours.std()) > 1e-3  # not a constant image
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=1e-5)


def test_sdxl_size_and_pooled_conditioning_reach_the_unet() -> None:
    """Changing the pooled embedding changes the prediction: the UNet really reads added_cond_kwargs."""
    denoiser = LatentSDXLDenoiser(tiny_sdxl_pipeline(seed=4))
    conditioning = denoiser.condition([PROMPT], guidance_scale=1.0)
    assert conditioning.time_ids.tolist() == [[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]]
    sample_ = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = denoiser.predict(sample_, 500, conditioning, 1.0)
        conditioning.pooled = conditioning.pooled + 1.0
        moved = denoiser.predict(sample_, 500, conditioning, 1.0)
    assert float((plain - moved).abs().max()) > 1e-4


def test_saved_pipelines_load_as_their_denoisers(tmp_path: Path) -> None:
    sd_folder, sdxl_folder = tmp_path / "sd", tmp_path / "sdxl"
    sd_pipeline().save_pretrained(sd_folder)
    tiny_sdxl_pipeline(seed=3).save_pretrained(sdxl_folder)
    sd, sdxl = _pipeline_denoiser(str(sd_folder), "cpu"), _pipeline_denoiser(str(sdxl_folder), "cpu")
    assert type(sd).__name__ == "LatentTextDenoiser" and isinstance(sdxl, LatentSDXLDenoiser)
    config = SteeringConfig(method="none", num_particles=1, num_inference_steps=STEPS, guidance_scale=3.0)
    reloaded = sample(sdxl, PROMPT, config, seed=11).images
    built = sample(LatentSDXLDenoiser(tiny_sdxl_pipeline(seed=3)), PROMPT, config, seed=11).images
    torch.testing.assert_close(reloaded, built, rtol=0, atol=1e-6)
