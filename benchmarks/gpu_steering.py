"""FK steering at the paper's scale with random weights: seconds per prompt at k = 4, reward share.

An SD-2.1-sized latent pipeline is built from configs written here (UNet2DConditionModel with SD 2.1's
widths 320/640/1280/1280, linear-projection attention with 5/10/20/20 heads, cross-attention 1024;
the SD VAE; an OpenCLIP-ViT-H-sized CLIP text encoder: hidden 1024, 23 layers, an offline word-level
tokenizer), and the reward is a Phi-3.5-vision-sized LLaVA (:func:`benchmarks.gpu_eval.phi35_vision_sized`)
with a SkipCA head: both random, built on the device, no download. Per prompt: FK steering with k
particles, DDIM ``--steps`` steps, classifier-free guidance 7.5, the reward on the decoded x0 of all
particles in one call every ``--resample-frequency`` steps; plain sampling and best-of-k for reference.
Reported: seconds per prompt (median of ``--repeats``), the reward's share of it, peak GPU memory.

    python -m benchmarks.gpu_steering --out gpu_steering.json            # on a GPU host
    python -m benchmarks.gpu_steering --tiny --device cpu                # smoke mode: tiny sizes, CPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from benchmarks.common import write_json
from benchmarks.gpu_eval import build_backbone, default_dtype, phi35_vision_sized
from reward.config import HeadConfig
from reward.model import RewardModel
from reward.steering import LatentTextDenoiser, SteeringConfig, sample, to_pil
from reward.steering.tiny import ddim_scheduler, offline_tokenizer


def sd21_sized(tiny: bool) -> dict[str, Any]:
    """(unet, vae, text) config kwargs: SD 2.1 (768 px, latent 96) or tiny."""
    if tiny:
        return {
            "unet": dict(
                sample_size=8,
                block_out_channels=(32, 64),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                attention_head_dim=(2, 4),
                cross_attention_dim=32,
                layers_per_block=1,
                norm_num_groups=8,
            ),
            "vae": dict(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1),
            "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        }
    return {
        "unet": dict(
            sample_size=96,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            layers_per_block=2,
        ),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
        "text": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16),
    }


def build_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype) -> LatentTextDenoiser:
    sizes = sd21_sized(tiny)
    tokenizer = offline_tokenizer(max_length=77)
    blocks = len(sizes["vae"]["block_out_channels"])
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **sizes["unet"])
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            latent_channels=4,
            scaling_factor=0.18215,
            **sizes["vae"],
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=77,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sizes["text"],
            )
        )
    for module in (unet, vae, text):
        module.eval().requires_grad_(False)
    return LatentTextDenoiser(unet, vae, text, tokenizer, ddim_scheduler())


class _ModelReward:
    """A RewardModel (no scorer folder needed) as a steering reward: decoded images → PIL → rewards."""

    name = "phi35v-sized"

    def __init__(self, model: RewardModel) -> None:
        self.model = model

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.score(to_pil(images), prompts).float().cpu()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_steering", description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resample-frequency", type=int, default=5)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM noise (FK's copies diverge by it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    denoiser = build_pipeline(args.tiny, device, dtype)
    backbone = build_backbone(
        phi35_vision_sized(args.tiny), device, torch.bfloat16 if device.type == "cuda" else dtype
    )
    reward_model = RewardModel(backbone, HeadConfig()).to(device=device, dtype=backbone.model.dtype).eval()
    reward = _ModelReward(reward_model)
    prompt = "a photo of two red circles to the left of a blue square"
    shared = dict(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        resample_frequency=args.resample_frequency,
        eta=args.eta,
    )
    k = args.particles
    methods = {
        "none": SteeringConfig(method="none", num_particles=1, **shared),
        f"best-of-{k}": SteeringConfig(method="best_of_n", num_particles=k, **shared),
        f"fk-{k} max λ=60": SteeringConfig(method="fk", num_particles=k, lmbda=60.0, **shared),
    }
    report: dict[str, Any] = {"settings": vars(args), "device": str(device), "methods": {}}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
        torch.cuda.reset_peak_memory_stats(device)
    for label, config in methods.items():
        sample(denoiser, prompt, config, reward=reward, seed=0)  # warm-up
        runs = []
        for repeat in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            result = sample(denoiser, prompt, config, reward=reward, seed=repeat)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs.append((time.perf_counter() - started, result.reward_seconds))
        seconds = statistics.median(run[0] for run in runs)
        share = statistics.median(run[1] / run[0] for run in runs)
        report["methods"][label] = {
            "seconds_per_prompt": seconds,
            "reward_share": share,
            "nfe": result.nfe,
            "runs": runs,
        }
        print(f"{label}: {seconds:.2f} s per prompt, reward {share:.0%} of it, NFE {result.nfe}")
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
