"""Denoisers: the model side of a diffusion sampler (diffusers components), behind one small interface.

A denoiser encodes prompts once, predicts the scheduler's model output for a batch of noisy samples,
and decodes x0 predictions to images (N, 3, H, W) in [0, 1]:

- :class:`LatentTextDenoiser`: a latent text-to-image model (UNet2DConditionModel + AutoencoderKL + a
  CLIP text encoder and its tokenizer), e.g. Stable Diffusion 2.1; :meth:`from_pipeline` takes the
  components of a loaded ``StableDiffusionPipeline``. Classifier-free guidance when scale > 1.
- :class:`PixelDenoiser`: a pixel-space UNet (``UNet2DModel`` with class labels, or
  ``UNet2DConditionModel`` with a context), conditioned by a prompt encoder callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def to_unit_range(samples: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] → image space [0, 1], as float32."""
    return (samples.float() / 2 + 0.5).clamp(0, 1)


@dataclass
class Conditioning:
    """Per-particle conditioning: the prompt's context (and the empty prompt's, for guidance)."""

    context: torch.Tensor
    unconditional: torch.Tensor | None = None


class LatentTextDenoiser:
    """A latent diffusion text-to-image model (SD-2.1-like) from diffusers components."""

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        *,
        sample_size: int | None = None,
    ) -> None:
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler = scheduler
        self.sample_size = sample_size or int(unet.config.sample_size)

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> LatentTextDenoiser:
        """The denoiser of a loaded diffusers ``StableDiffusionPipeline`` (its scheduler included)."""
        return cls(pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, pipeline.scheduler)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def noise_shape(self) -> tuple[int, int, int]:
        return (int(self.unet.config.in_channels), self.sample_size, self.sample_size)

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0].to(self.unet.dtype)

    def condition(self, prompts: Sequence[str], guidance_scale: float) -> Conditioning:
        context = self._encode(prompts)
        unconditional = self._encode([""] * len(prompts)) if guidance_scale > 1 else None
        return Conditioning(context, unconditional)

    def predict(
        self, sample: torch.Tensor, timestep: Any, conditioning: Conditioning, guidance_scale: float
    ) -> torch.Tensor:
        if conditioning.unconditional is None:
            return self.unet(sample, timestep, encoder_hidden_states=conditioning.context).sample
        doubled = torch.cat([sample, sample])
        context = torch.cat([conditioning.unconditional, conditioning.context])
        unconditional, conditional = self.unet(doubled, timestep, encoder_hidden_states=context).sample.chunk(
            2
        )
        return unconditional + guidance_scale * (conditional - unconditional)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        scale = float(getattr(self.vae.config, "scaling_factor", 1.0))
        return to_unit_range(self.vae.decode(latents.to(self.vae.dtype) / scale).sample)


class PixelDenoiser:
    """A pixel-space diffusion model. ``encode_prompts`` maps prompts to class labels (LongTensor, for a
    ``UNet2DModel`` with ``num_class_embeds``) or to a context (B, L, D) for a ``UNet2DConditionModel``;
    None for an unconditional model. ``null_condition`` (what guidance contrasts with) is the prompt ""."""

    def __init__(
        self, unet: Any, scheduler: Any, encode_prompts: Callable[[list[str]], torch.Tensor] | None = None
    ) -> None:
        self.unet, self.scheduler, self.encode_prompts = unet, scheduler, encode_prompts
        self.cross_attention = getattr(unet.config, "cross_attention_dim", None) is not None

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def noise_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = int(size[0] if isinstance(size, list | tuple) else size)
        return (int(self.unet.config.in_channels), size, size)

    def condition(self, prompts: Sequence[str], guidance_scale: float) -> Conditioning | None:
        if self.encode_prompts is None:
            return None
        context = self.encode_prompts(list(prompts)).to(self.device)
        unconditional = (
            self.encode_prompts([""] * len(prompts)).to(self.device) if guidance_scale > 1 else None
        )
        return Conditioning(context, unconditional)

    def _forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            return self.unet(sample, timestep).sample
        if self.cross_attention:
            return self.unet(sample, timestep, encoder_hidden_states=context).sample
        return self.unet(sample, timestep, class_labels=context).sample

    def predict(
        self, sample: torch.Tensor, timestep: Any, conditioning: Conditioning | None, guidance_scale: float
    ) -> torch.Tensor:
        if conditioning is None:
            return self._forward(sample, timestep, None)
        if conditioning.unconditional is None:
            return self._forward(sample, timestep, conditioning.context)
        doubled = torch.cat([sample, sample])
        context = torch.cat([conditioning.unconditional, conditioning.context])
        unconditional, conditional = self._forward(doubled, timestep, context).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return to_unit_range(samples)
