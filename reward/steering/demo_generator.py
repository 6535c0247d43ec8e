"""The demo's own text-to-image model: a tiny pixel-space diffusion UNet trained on rendered demo scenes.

With random weights nothing can be steered, so the CPU demo trains a small generator: a
``UNet2DConditionModel`` at 32 px whose cross-attention context is a learned embedding of the prompt's
facts (colour, shape and count of each group and the relation: 7 tokens), trained with the DDPM noise
loss on scenes rendered on the fly (no mistakes, random layouts). 10% of the contexts are dropped to the
null prompt, so classifier-free guidance works. Saved as a folder: ``unet/`` (diffusers, safetensors),
``encoder.safetensors``, ``scheduler/`` and ``generator_config.json``; nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from data.demo.oracle import PromptParseError, parse_prompt
from data.demo.render import ImageSpec, render
from data.demo.scene import (
    COLOURS,
    MAX_COUNT,
    RELATIONS,
    SHAPES,
    drawn_groups,
    sample_layout,
    sample_prompt,
    scene_objects,
)
from reward.steering.denoisers import PixelDenoiser

logger = logging.getLogger(__name__)

NULL, NONE = "<null>", "<none>"
TOKENS: tuple[str, ...] = (
    NULL,
    NONE,
    *COLOURS,
    *SHAPES,
    *(str(count) for count in range(1, MAX_COUNT + 1)),
    *RELATIONS,
)
TOKEN_IDS = {token: index for index, token in enumerate(TOKENS)}
CONTEXT_LENGTH = 7


def fact_tokens(prompt: str) -> list[int]:
    """The 7 fact tokens of a demo prompt (colour, shape, count of each group and the relation);
    the empty prompt, or one that is not a demo scene, is all ``<null>``."""
    try:
        parsed = parse_prompt(prompt) if prompt.strip() else None
    except PromptParseError:
        parsed = None
    if parsed is None:
        return [TOKEN_IDS[NULL]] * CONTEXT_LENGTH
    groups = [*parsed.groups, None][:2]
    tokens = []
    for group in groups:
        tokens += [NONE] * 3 if group is None else [group.colour, group.shape, str(group.count)]
    tokens.insert(3, parsed.relation or NONE)
    return [TOKEN_IDS[token] for token in tokens]


class FactEncoder(nn.Module):
    """Fact tokens → a (B, 7, dim) cross-attention context (token + position embeddings)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(len(TOKENS), dim)
        self.positions = nn.Parameter(torch.zeros(CONTEXT_LENGTH, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokens(tokens) + self.positions

    def encode(self, prompts: list[str]) -> torch.Tensor:
        device = self.positions.device
        return self(torch.tensor([fact_tokens(prompt) for prompt in prompts], device=device))


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class DemoGeneratorConfig:
    """What and how long to train."""

    image_size: int = field(default=32, metadata=_help("Edge of the generated images in pixels."))
    block_out_channels: tuple[int, ...] = field(default=(32, 64, 64), metadata=_help("UNet widths."))
    context_dim: int = field(default=32, metadata=_help("Width of the fact-token context."))
    two_group_fraction: float = field(default=0.0, metadata=_help("Share of two-group scenes in training."))
    colours: tuple[str, ...] = field(default=("red", "green", "blue", "yellow", "purple", "orange"))
    shapes: tuple[str, ...] = field(default=("circle", "square", "triangle"))
    steps: int = field(default=300, metadata=_help("Optimizer steps (the time budget may stop earlier)."))
    max_minutes: float | None = field(default=10.0, metadata=_help("Stop after this many minutes."))
    batch_size: int = field(default=64, metadata=_help("Rendered scenes per step."))
    learning_rate: float = field(default=2e-3, metadata=_help("AdamW learning rate."))
    final_learning_rate: float = field(
        default=2e-4,
        metadata=_help("Learning rate reached at the last step (cosine decay from learning_rate)."),
    )
    ema_decay: float | None = field(
        default=0.995,
        metadata=_help(
            "Decay of the saved exponential moving average of the weights; None saves the raw weights."
        ),
    )
    condition_dropout: float = field(default=0.1, metadata=_help("Share of contexts replaced by null."))
    train_timesteps: int = field(default=1000, metadata=_help("DDPM training timesteps."))
    seed: int = field(default=0, metadata=_help("Weights, scenes and noise derive from it."))
    init_from: str | None = field(
        default=None, metadata=_help("A saved generator folder to continue training from (same sizes).")
    )

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size {self.image_size} must divide by 2^(blocks-1)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        unknown = sorted(set(self.colours) - set(COLOURS)) + sorted(set(self.shapes) - set(SHAPES))
        if unknown:
            raise ValueError(f"unknown colour(s) / shape(s): {unknown}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> DemoGeneratorConfig:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def ema_with_warmup(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int], torch.Tensor]:
    """An ``AveragedModel`` update whose decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so a short run is not dominated by its first (untrained) weights."""

    def update(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor | int) -> torch.Tensor:
        rate = min(decay, (1 + int(updates)) / (10 + int(updates)))
        return rate * averaged + (1 - rate) * current

    return update


def build_unet(config: DemoGeneratorConfig) -> UNet2DConditionModel:
    blocks = len(config.block_out_channels)
    return UNet2DConditionModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=config.block_out_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
        cross_attention_dim=config.context_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def render_batch(config: DemoGeneratorConfig, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
    """``batch_size`` aligned demo scenes in [-1, 1] (B, 3, S, S) and their prompts."""
    images, prompts = [], []
    for _ in range(config.batch_size):
        prompt = sample_prompt(rng, config.colours, config.shapes, config.two_group_fraction)
        layout = sample_layout(prompt, rng)
        spec = ImageSpec(
            scene_objects(drawn_groups(prompt, ()), layout), layout.background, image_size=config.image_size
        )
        images.append(np.asarray(render(spec), dtype=np.float32))
        prompts.append(prompt.text)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1
    return pixels, prompts


def train_demo_generator(config: DemoGeneratorConfig, out_dir: str | Path) -> dict:
    """Train and save the generator into ``out_dir``; returns training statistics."""
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    unet, encoder = build_unet(config), FactEncoder(config.context_dim)
    if config.init_from is not None:
        start = Path(config.init_from)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(start / "unet").state_dict())
        encoder.load_state_dict(load_file(start / "encoder.safetensors"))
    scheduler = DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule="squaredcos_cap_v2")
    trained = nn.ModuleDict({"unet": unet, "encoder": encoder})
    optimizer = torch.optim.AdamW(trained.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.steps, eta_min=config.final_learning_rate
    )
    average = (
        None
        if config.ema_decay is None
        else AveragedModel(trained, avg_fn=ema_with_warmup(config.ema_decay), use_buffers=True)
    )
    generator = torch.Generator().manual_seed(config.seed)
    started, losses, step = time.perf_counter(), [], 0
    unet.train()
    while step < config.steps:
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
            break
        pixels, prompts = render_batch(config, rng)
        dropped = torch.rand(len(prompts), generator=generator) < config.condition_dropout
        prompts = ["" if drop else prompt for drop, prompt in zip(dropped.tolist(), prompts, strict=True)]
        noise = torch.randn(pixels.shape, generator=generator)
        timesteps = torch.randint(0, config.train_timesteps, (len(prompts),), generator=generator)
        noisy = scheduler.add_noise(pixels, noise, timesteps)
        predicted = unet(noisy, timesteps, encoder_hidden_states=encoder.encode(prompts)).sample
        loss = nn.functional.mse_loss(predicted, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(trained)
        losses.append(float(loss.detach()))
        step += 1
        if step % 25 == 0:
            logger.info(
                "demo generator step %d: loss %.4f (%.0f s)",
                step,
                np.mean(losses[-25:]),
                time.perf_counter() - started,
            )
    if average is not None and step > 0:
        trained.load_state_dict(average.module.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    unet.eval().save_pretrained(out_dir / "unet", safe_serialization=True)
    save_file(
        {key: value.contiguous() for key, value in encoder.state_dict().items()},
        out_dir / "encoder.safetensors",
    )
    scheduler.save_config(out_dir / "scheduler")
    stats = {
        "steps": step,
        "seconds": round(time.perf_counter() - started, 2),
        "final_loss": float(np.mean(losses[-25:])) if losses else None,
        "stopped_by_time_budget": step < config.steps,
        "saved_weights": "raw" if average is None else f"ema {config.ema_decay}",
    }
    (out_dir / "generator_config.json").write_text(
        json.dumps({"config": config.to_dict(), "training": stats}, indent=2)
    )
    return stats


def load_demo_generator(folder: str | Path, device: str | torch.device = "cpu") -> PixelDenoiser:
    """A saved demo generator as a denoiser, sampling with DDIM on its training noise schedule."""
    folder = Path(folder)
    config = DemoGeneratorConfig.from_dict(
        json.loads((folder / "generator_config.json").read_text())["config"]
    )
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").to(device).eval().requires_grad_(False)
    encoder = FactEncoder(config.context_dim)
    encoder.load_state_dict(load_file(folder / "encoder.safetensors"))
    encoder.to(device).eval().requires_grad_(False)
    scheduler = DDIMScheduler.from_config(DDPMScheduler.load_config(folder / "scheduler"))
    return PixelDenoiser(unet, scheduler, encoder.encode)
