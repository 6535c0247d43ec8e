"""SDXL as a steering denoiser: two text encoders, a pooled text embedding and size conditioning.

SDXL's UNet takes, beside the token context, ``added_cond_kwargs``: the pooled embedding of the second
text encoder (``text_embeds``) and six "time ids" (original size, crop top-left, target size; here the
generated size and no crop, as the pipeline's defaults). Prompts are encoded by the loaded pipeline's own
``encode_prompt`` (penultimate hidden states of both encoders; a zero negative where the checkpoint says
``force_zeros_for_empty_prompt``), so sampling matches ``StableDiffusionXLPipeline`` given the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from reward.steering.denoisers import Conditioning, LatentTextDenoiser


@dataclass
class SDXLConditioning(Conditioning):
    """The token contexts plus the pooled text embeddings and size ids of each particle."""

    pooled: torch.Tensor | None = None
    unconditional_pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None


class LatentSDXLDenoiser(LatentTextDenoiser):
    """The denoiser of a loaded diffusers ``StableDiffusionXLPipeline`` (its scheduler included)."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__(
            pipeline.unet,
            pipeline.vae,
            pipeline.text_encoder,
            pipeline.tokenizer,
            pipeline.scheduler,
        )
        self.pipeline = pipeline

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> LatentSDXLDenoiser:
        return cls(pipeline)

    @property
    def image_size(self) -> int:
        """Edge of the decoded images: the latent size times the VAE's downsampling."""
        return self.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)

    def condition(self, prompts: Sequence[str], guidance_scale: float) -> SDXLConditioning:
        guided = guidance_scale > 1
        context, unconditional, pooled, unconditional_pooled = self.pipeline.encode_prompt(
            list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guided
        )
        size = self.image_size
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=context.dtype, device=self.device)
        return SDXLConditioning(
            context.to(self.unet.dtype),
            unconditional.to(self.unet.dtype) if guided else None,
            pooled=pooled.to(self.unet.dtype),
            unconditional_pooled=unconditional_pooled.to(self.unet.dtype) if guided else None,
            time_ids=time_ids.to(self.unet.dtype),
        )

    def predict(
        self, sample: torch.Tensor, timestep: Any, conditioning: Conditioning, guidance_scale: float
    ) -> torch.Tensor:
        if not isinstance(conditioning, SDXLConditioning):
            raise TypeError("an SDXL denoiser needs the SDXLConditioning its condition() made")
        if conditioning.unconditional is None:
            return self._forward(sample, timestep, conditioning.context, conditioning.pooled, conditioning)
        doubled = torch.cat([sample, sample])
        context = torch.cat([conditioning.unconditional, conditioning.context])
        pooled = torch.cat([conditioning.unconditional_pooled, conditioning.pooled])
        unconditional, conditional = self._forward(doubled, timestep, context, pooled, conditioning).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def _forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        pooled: torch.Tensor,
        conditioning: SDXLConditioning,
    ) -> torch.Tensor:
        added = {"text_embeds": pooled, "time_ids": conditioning.time_ids.expand(len(sample), -1)}
        return self.unet(sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added).sample

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """As SD, in float32 where the VAE asks for it (SDXL's VAE overflows in float16)."""
        if getattr(self.vae.config, "force_upcast", False) and self.vae.dtype == torch.float16:
            self.vae.to(torch.float32)
        return super().decode(latents)
