"""Tiny random-weight diffusion models built offline from diffusers / transformers configs (tests,
smoke runs and the GPU benchmark's SD-2.1-sized variant). Same seed, same weights."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerFast

from reward.steering.denoisers import LatentTextDenoiser, PixelDenoiser
from reward.steering.sdxl import LatentSDXLDenoiser
from reward.tiny import VOCABULARY


def offline_tokenizer(max_length: int = 16) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the demo vocabulary (no download)."""
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    words = sorted({word.lower() for word in VOCABULARY} - set(specials))
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.model_max_length = max_length
    return tokenizer


def ddim_scheduler() -> DDIMScheduler:
    """DDIM (η = 0) with SD 2.1's scheduler settings (β schedule, no final α of one, timesteps offset by
    one), predicting ε; diffusers' pipelines rewrite an older ``steps_offset=0`` to 1: this matches them."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _text_config(tokenizer: PreTrainedTokenizerFast, width: int, **extra: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _tiny_vae(latent_size: int) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=2 * latent_size,
    )


def tiny_latent_denoiser(seed: int = 0, latent_size: int = 8, width: int = 32) -> LatentTextDenoiser:
    """A random SD-like latent model: UNet2DConditionModel + AutoencoderKL (×2 downsampling, so images
    are ``2 * latent_size`` px) + a CLIP text encoder and an offline tokenizer."""
    torch.manual_seed(seed)
    tokenizer = offline_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, width))
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(width, 2 * width),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = _tiny_vae(latent_size)
    for module in (text_encoder, unet, vae):
        module.eval().requires_grad_(False)
    return LatentTextDenoiser(unet, vae, text_encoder, tokenizer, ddim_scheduler())


def tiny_sdxl_pipeline(seed: int = 0, latent_size: int = 8, width: int = 16) -> StableDiffusionXLPipeline:
    """A random SDXL-like pipeline: two CLIP text encoders (the second with a projection, whose pooled
    output and the six size ids condition the UNet through ``text_time`` embeddings), a UNet whose
    cross-attention reads both encoders' states side by side, the tiny VAE and offline tokenizers."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = offline_tokenizer(), offline_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, width))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, 2 * width, projection_dim=width))
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=3 * width,
        attention_head_dim=8,
        norm_num_groups=8,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + width,
    )
    vae = _tiny_vae(latent_size)
    for module in (text_encoder, text_encoder_2, unet, vae):
        module.eval().requires_grad_(False)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=ddim_scheduler(),
    )


def tiny_sdxl_denoiser(seed: int = 0) -> LatentSDXLDenoiser:
    """:func:`tiny_sdxl_pipeline` as a steering denoiser."""
    return LatentSDXLDenoiser(tiny_sdxl_pipeline(seed))


def tiny_pixel_denoiser(seed: int = 0, size: int = 16, num_classes: int = 4) -> PixelDenoiser:
    """A random class-conditional pixel-space UNet2DModel; a prompt's class is its length modulo
    ``num_classes`` (enough for tests: different prompts, different conditions)."""
    torch.manual_seed(seed)
    unet = (
        UNet2DModel(
            sample_size=size,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=num_classes,
        )
        .eval()
        .requires_grad_(False)
    )

    def classes(prompts: list[str]) -> torch.Tensor:
        return torch.tensor([len(prompt) % num_classes for prompt in prompts])

    return PixelDenoiser(unet, ddim_scheduler(), classes)
