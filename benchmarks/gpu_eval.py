"""Reward-model speed at real backbone sizes with random weights: seconds per evaluation, LoRA step.

Backbones are built from configs written here (no hub, no download), directly on the device in bf16,
with random weights:

- ``phi35v-native`` (default): Phi-3.5-vision as this project loads it natively
  (:mod:`reward.backbones.phi3v`): CLIP ViT-L/14-336 (24 layers, width 1024, 577 tokens per 336 px view),
  the HD transform with the LLaVA-Reward loader's 16 crops (a square image: 4 x 4 crops + the global view,
  2,509 image tokens), the 2-layer MLP projector and a Phi-3 language model of 3.8B parameters (hidden 3072,
  32 layers, 32 heads, intermediate 8192, vocabulary 32,064; default RoPE, which costs the same as the
  published long-context RoPE at these lengths) with the paper's SkipCA head;
- ``phi35v`` (on request): the earlier stand-in, a LLaVA with Phi-3.5-vision's sizes and one 336 px view;
- ``qwen2.5-vl-3b-sized``: Qwen2.5-VL-3B's sizes (vision: 32 layers, width 1280, window attention,
  patch 14, 2x2 merge; language: hidden 2048, 36 layers, 16 heads / 2 KV heads, intermediate 11,008,
  vocabulary 151,936); a 448 px image gives 256 visual tokens.

One evaluation is one (image, prompt) reward: the backbone forward plus the SkipCA head, under
``torch.inference_mode``. The processor's CPU work is timed apart (it overlaps the GPU in a data
loader). For each batch size: warm-up calls, then the median of timed calls (CUDA synchronized).
Then one LoRA training step (rank 8 on the language model's attention, projector and head trained,
Bradley-Terry loss over a batch of pairs, AdamW): its median time and the peak GPU memory.

A GPU lease is short and paid for, so a run never loses what it measured: the report (``--out``) is
rewritten atomically after every measurement; a measurement that fails (out of memory, say) is
recorded with its error and the run goes on; measurements not started within ``--budget-seconds``
are recorded as skipped. The exit status is 1 when anything failed. ``benchmarks/gpu_run.sh`` is the
prepared command for a lent GPU machine.

    python -m benchmarks.gpu_eval --out gpu_eval.json                 # on a GPU host (H100 class)
    python -m benchmarks.gpu_eval --tiny --device cpu                 # smoke mode: tiny sizes, CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Phi3Config,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from benchmarks.common import library_versions, write_json
from reward.backbones import Backbone
from reward.backbones.adapters import LLAVA, PHI3_VISION, QWEN_VL, ArchitectureAdapter
from reward.backbones.phi3v import Phi3VConfig, Phi3VForCausalLM, Phi3VProcessor, build_processor
from reward.backbones.phi3v.config import CLIP_VIT_L_14_336
from reward.backbones.templates import PAPER_NUM_CROPS
from reward.config import BackboneConfig, HeadConfig, LoraSettings
from reward.losses import bt_loss
from reward.model import RewardModel
from reward.tiny import LLAVA_IMAGE_TOKEN, QWEN_VISION_TOKENS, build_tokenizer

logger = logging.getLogger("benchmarks.gpu_eval")

#: The paper's figure (A6000 / A100) and the target of this benchmark on an H100 with batching.
PAPER_SECONDS_PER_EVAL = 0.35
TARGET_SECONDS_PER_EVAL = 0.035

#: Phi-3's chat tokens, for the tokenizer of the native Phi-3.5-vision build.
PHI3_CHAT_TOKENS = ("<|user|>", "<|end|>", "<|assistant|>", "<|endoftext|>")

PROMPT_WORDS = "a photo of two red circles to the left of a blue square on a plain background".split()


@dataclass(frozen=True)
class BackboneSize:
    """One backbone's architecture and sizes."""

    name: str
    arch: str  # "llava" or "qwen2_5_vl"
    image_size: int
    patch_size: int
    vision: dict[str, Any]
    text: dict[str, Any]
    lora_modules: tuple[str, ...]
    num_crops: int | None = None  # Phi-3.5-vision's HD crops


#: Tiny stand-ins of the Phi-3.5-vision sizes (smoke runs on a CPU).
_PHI_TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
_PHI_TINY_TEXT = {**_PHI_TINY_VISION, "vocab_size": 512}
#: Phi-3.5-mini, the language model of Phi-3.5-vision.
_PHI35_MINI = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
}
#: CLIP ViT-L/14-336 without its image geometry (BackboneSize carries that).
_CLIP_L = {k: v for k, v in CLIP_VIT_L_14_336.items() if k not in ("image_size", "patch_size")}


def phi35_vision_sized(tiny: bool = False) -> BackboneSize:
    """LLaVA with Phi-3.5-vision's sizes (CLIP ViT-L/14-336 + a 3.8B phi3 language model)."""
    lora = ("qkv_proj", "o_proj")
    if tiny:
        return BackboneSize("phi35v-sized-tiny", "llava", 56, 14, _PHI_TINY_VISION, _PHI_TINY_TEXT, lora)
    vision = {key: _CLIP_L[key] for key in _PHI_TINY_VISION}  # LLaVA's CLIP: the sizes only
    return BackboneSize("phi35v-sized", "llava", 336, 14, vision, _PHI35_MINI, lora)


def phi35_vision_native(tiny: bool = False) -> BackboneSize:
    """Phi-3.5-vision as loaded natively: CLIP ViT-L/14-336, 16 HD crops, a 3.8B Phi-3 language model."""
    lora = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # the LLaVA-Reward adapter's targets
    if tiny:
        return BackboneSize(
            "phi35v-native-tiny", "phi3_v", 56, 14, _PHI_TINY_VISION, _PHI_TINY_TEXT, lora, num_crops=4
        )
    return BackboneSize(
        "phi35v-native", "phi3_v", 336, 14, _CLIP_L, _PHI35_MINI, lora, num_crops=PAPER_NUM_CROPS
    )


def qwen25_vl_3b_sized(tiny: bool = False) -> BackboneSize:
    """Qwen2.5-VL-3B's sizes."""
    if tiny:
        vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "window_size": 56}
        text = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 512,
        }
        return BackboneSize(
            "qwen2.5-vl-3b-sized-tiny", "qwen2_5_vl", 56, 14, vision, text, ("q_proj", "v_proj")
        )
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    }
    text = {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    }
    return BackboneSize("qwen2.5-vl-3b-sized", "qwen2_5_vl", 448, 14, vision, text, ("q_proj", "v_proj"))


# ------------------------------------------------------------------------------ building


@contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _llava(size: BackboneSize) -> tuple[Any, Any, ArchitectureAdapter]:
    tokenizer = build_tokenizer((LLAVA_IMAGE_TOKEN,), named_tokens={"image_token": LLAVA_IMAGE_TOKEN})
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            **size.vision, image_size=size.image_size, patch_size=size.patch_size, projection_dim=768
        ),
        text_config=Phi3Config(**size.text, max_position_embeddings=4096, **ids),
        image_token_id=tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    crop = {"height": size.image_size, "width": size.image_size}
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size.image_size}, crop_size=crop),
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return LlavaForConditionalGeneration(config), processor, LLAVA


def _qwen(size: BackboneSize) -> tuple[Any, Any, ArchitectureAdapter]:
    tokenizer = build_tokenizer(QWEN_VISION_TOKENS, named_tokens={"image_token": "<|image_pad|>"})
    start, pad, end, video = (tokenizer.convert_tokens_to_ids(token) for token in QWEN_VISION_TOKENS)
    head_dim = size.text["hidden_size"] // size.text["num_attention_heads"]
    half = head_dim // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2_5_VLConfig(
        text_config={
            **size.text,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": section},
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            **size.vision,
            "patch_size": size.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": size.text["hidden_size"],
            **(
                {"fullatt_block_indexes": [size.vision["depth"] - 1]}
                if "fullatt_block_indexes" not in size.vision
                else {}
            ),
        },
        image_token_id=pad,
        video_token_id=video,
        tie_word_embeddings=True,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    pixels = size.image_size * size.image_size
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=size.patch_size,
            merge_size=2,
            temporal_patch_size=2,
            min_pixels=pixels,
            max_pixels=pixels,
        ),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(
            patch_size=size.patch_size, merge_size=2, temporal_patch_size=2
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(config), processor, QWEN_VL


def _phi3v(size: BackboneSize) -> tuple[Any, Any, ArchitectureAdapter]:
    tokenizer = build_tokenizer(PHI3_CHAT_TOKENS, named_tokens={"image_token": Phi3VProcessor.image_token})
    config = Phi3VConfig(
        **size.text,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        img_processor={
            "image_dim_out": size.vision["hidden_size"],
            "vision_config": {**size.vision, "image_size": size.image_size, "patch_size": size.patch_size},
        },
        embd_layer={
            "hd_transform_order": "sub_glb",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
    )
    processor = build_processor(config, {}, tokenizer, num_crops=size.num_crops or 4)
    return Phi3VForCausalLM(config), processor, PHI3_VISION


_BUILDERS: dict[str, Callable[[BackboneSize], tuple[Any, Any, ArchitectureAdapter]]] = {
    "llava": _llava,
    "qwen2_5_vl": _qwen,
    "phi3_v": _phi3v,
}


def build_backbone(size: BackboneSize, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Backbone:
    """The backbone of ``size`` with random weights, allocated and initialized on ``device`` in ``dtype``."""
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype):
        model, processor, adapter = _BUILDERS[size.arch](size)
    model.eval()
    processor.tokenizer.padding_side = "left"
    template = "{prompt} {image}"
    config = BackboneConfig(
        name_or_path=f"random:{size.name}", dtype=str(dtype).removeprefix("torch."), prompt_template=template
    )
    return Backbone(model, processor, adapter, config)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


# ------------------------------------------------------------------------------ inputs and timing


def random_batch(size: BackboneSize, batch: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """``batch`` noise images at the backbone's resolution and prompts of 8-16 words."""
    rng = np.random.default_rng(seed)
    images = [
        Image.fromarray(rng.integers(0, 256, (size.image_size, size.image_size, 3), dtype=np.uint8))
        for _ in range(batch)
    ]
    prompts = [" ".join(rng.choice(PROMPT_WORDS, size=int(rng.integers(8, 17)))) for _ in range(batch)]
    return images, prompts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``function`` after ``warmup`` untimed ones (device synchronized)."""
    for _ in range(warmup):
        function()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def on_device(inputs: Any, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in inputs.items() if isinstance(value, torch.Tensor)}


@dataclass
class EvalTiming:
    batch_size: int
    seconds_per_batch: float
    seconds_per_eval: float
    evals_per_second: float
    prepare_seconds_per_eval: float  # processor (CPU), apart
    sequence_length: int
    peak_memory_gib: float | None


def measure_evaluation(
    model: RewardModel,
    size: BackboneSize,
    batch_size: int,
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
) -> EvalTiming:
    images, prompts = random_batch(size, batch_size)
    started = time.perf_counter()
    inputs = model.backbone.prepare(images, prompts)
    prepare_seconds = time.perf_counter() - started
    inputs = on_device(inputs, device)
    reset_peak(device)

    def evaluate() -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs)

    seconds = statistics.median(timed(evaluate, device, warmup=warmup, repeats=repeats))
    return EvalTiming(
        batch_size=batch_size,
        seconds_per_batch=seconds,
        seconds_per_eval=seconds / batch_size,
        evals_per_second=batch_size / seconds,
        prepare_seconds_per_eval=prepare_seconds / batch_size,
        sequence_length=int(inputs["input_ids"].shape[1]),
        peak_memory_gib=peak_memory_gib(device),
    )


@dataclass
class TrainTiming:
    pairs: int
    seconds_per_step: float
    peak_memory_gib: float | None
    trainable_parameters: int
    activation_checkpointing: bool
    loss: float


def measure_lora_step(
    backbone: Backbone,
    size: BackboneSize,
    pairs: int,
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    checkpointing: bool,
) -> TrainTiming:
    """One LoRA training step on ``pairs`` (chosen, rejected) pairs: forward of 2 x pairs examples,
    Bradley-Terry loss, backward, AdamW step."""
    model = RewardModel(
        backbone,
        HeadConfig(kind="skipca"),
        LoraSettings(rank=8, alpha=16, target_modules=list(size.lora_modules)),
    )
    model.head.to(device)
    if checkpointing:
        from reward.training import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    images, prompts = random_batch(size, 2 * pairs, seed=1)
    inputs = on_device(backbone.prepare(images, prompts), device)
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        rewards = model(inputs).float()
        loss = bt_loss(rewards[:pairs], rewards[pairs:])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    reset_peak(device)
    seconds = statistics.median(timed(step, device, warmup=warmup, repeats=repeats))
    return TrainTiming(
        pairs=pairs,
        seconds_per_step=seconds,
        peak_memory_gib=peak_memory_gib(device),
        trainable_parameters=sum(p.numel() for p in model.trainable_parameters()),
        activation_checkpointing=checkpointing,
        loss=losses[-1],
    )


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset (None off the GPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ------------------------------------------------------------------------------ driver


@dataclass
class BackboneReport:
    name: str
    parameters: dict[str, int]
    build_seconds: float
    evaluation: list[EvalTiming] = field(default_factory=list)
    lora_step: TrainTiming | None = None
    best_seconds_per_eval: float | None = None
    meets_target: bool | None = None
    failures: dict[str, str] = field(default_factory=dict)  # measurement -> its error
    skipped: list[str] = field(default_factory=list)  # measurements not started: time budget spent


class Deadline:
    """The time budget of a run: a measurement starts only while some of it is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> bool:
        return self.elapsed() >= self.seconds


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(
    report: BackboneReport,
    what: str,
    measurement: Callable[[], Any],
    device: torch.device,
    deadline: Deadline,
) -> Any:
    """``measurement()``, or None: recorded in ``report`` as skipped when the budget is spent, as a
    failure (its error; traceback logged) when it raises."""
    if deadline.spent():
        logger.warning("  %s: skipped, time budget of %.0f s spent", what, deadline.seconds)
        report.skipped.append(what)
        return None
    try:
        return measurement()
    except Exception as error:  # one failed measurement must not lose the others' figures
        logger.error("  %s failed:\n%s", what, traceback.format_exc())
        report.failures[what] = f"{type(error).__name__}: {error}"
        release_memory(device)
        return None


def run_backbone(
    size: BackboneSize,
    device: torch.device,
    dtype: torch.dtype,
    batch_sizes: Sequence[int],
    *,
    train_pairs: int,
    warmup: int,
    repeats: int,
    checkpointing: bool,
    deadline: Deadline,
    on_report: Callable[[BackboneReport], None] = lambda report: None,
) -> BackboneReport:
    """Build ``size`` and measure it; ``on_report(report)`` once after every measurement, measured,
    failed or skipped (to save it)."""
    started = time.perf_counter()
    backbone = build_backbone(size, device, dtype)
    synchronize(device)
    build_seconds = time.perf_counter() - started
    parameters = {
        "total": parameter_count(backbone.model),
        "vision_tower": parameter_count(backbone.vision_tower),
        "language_model": parameter_count(backbone.language_model),
        "projector": parameter_count(backbone.projector),
    }
    logger.info("%s: %.2fB parameters built in %.1f s", size.name, parameters["total"] / 1e9, build_seconds)
    report = BackboneReport(size.name, parameters, build_seconds)
    on_report(report)
    with torch.device(device), default_dtype(dtype):
        model = RewardModel(backbone, HeadConfig(kind="skipca"))
    model.eval()
    for batch_size in batch_sizes:
        timing = attempt(
            report,
            f"evaluation batch {batch_size}",
            lambda batch_size=batch_size: measure_evaluation(
                model, size, batch_size, device, warmup=warmup, repeats=repeats
            ),
            device,
            deadline,
        )
        if timing is not None:
            logger.info(
                "  batch %3d: %.4f s per evaluation (%.1f / s), sequence %d, peak %s",
                batch_size,
                timing.seconds_per_eval,
                timing.evals_per_second,
                timing.sequence_length,
                _gib(timing.peak_memory_gib),
            )
            report.evaluation.append(timing)
            report.best_seconds_per_eval = min(timing.seconds_per_eval for timing in report.evaluation)
            report.meets_target = report.best_seconds_per_eval <= TARGET_SECONDS_PER_EVAL
        on_report(report)
    if train_pairs > 0:

        def lora_step() -> TrainTiming:
            with torch.device(device), default_dtype(dtype):
                return measure_lora_step(
                    backbone,
                    size,
                    train_pairs,
                    device,
                    warmup=warmup,
                    repeats=repeats,
                    checkpointing=checkpointing,
                )

        report.lora_step = attempt(report, f"LoRA step {train_pairs} pairs", lora_step, device, deadline)
        if report.lora_step is not None:
            logger.info(
                "  LoRA step (%d pairs): %.3f s, peak %s",
                train_pairs,
                report.lora_step.seconds_per_step,
                _gib(report.lora_step.peak_memory_gib),
            )
        on_report(report)
    return report  # the backbone's memory is released by the caller, once this frame is gone


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} GiB"


def dry_run(dtype: torch.dtype) -> dict[str, dict[str, int]]:
    """Build both full-size backbones on the ``meta`` device (no memory, no weights) and count their
    parameters: checks the configs without a GPU."""
    counts = {}
    for factory in (phi35_vision_native, phi35_vision_sized, qwen25_vl_3b_sized):
        size = factory()
        backbone = build_backbone(size, torch.device("meta"), dtype)
        counts[size.name] = {
            "total": parameter_count(backbone.model),
            "vision_tower": parameter_count(backbone.vision_tower),
            "language_model": parameter_count(backbone.language_model),
            "projector": parameter_count(backbone.projector),
        }
    return counts


def device_facts(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "device": str(device),
        "versions": library_versions(("torch", "transformers", "peft", "accelerate", "tokenizers")),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts.update(
            name=properties.name,
            memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return facts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 (default on GPU) or float32 (default on CPU)")
    parser.add_argument(
        "--backbones",
        default="phi35v-native,qwen25vl",
        help="comma-separated: phi35v-native, qwen25vl, phi35v (the LLaVA-sized stand-in)",
    )
    parser.add_argument("--batch-sizes", default=None, help="default 1,4,16,32,64 (tiny: 1,4)")
    parser.add_argument(
        "--train-pairs", type=int, default=None, help="pairs per LoRA step (default 4; tiny 2)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--checkpointing", action="store_true", help="activation checkpointing in the LoRA step"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="full-size configs on 'meta': parameter counts"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=420.0,
        help="start no measurement after this many seconds (default 420: the run ends inside 8 minutes)",
    )
    parser.add_argument("--out", help="write the report as JSON here (rewritten after every measurement)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.dry_run:
        counts = dry_run(torch.bfloat16)
        print(json.dumps(counts, indent=2))
        return {"parameters": counts}
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if args.tiny else "1,4,16,32,64")).split(",")]
    train_pairs = args.train_pairs if args.train_pairs is not None else (2 if args.tiny else 4)
    sizes = {
        "phi35v-native": phi35_vision_native,
        "phi35v": phi35_vision_sized,
        "qwen25vl": qwen25_vl_3b_sized,
    }
    names = args.backbones.split(",")
    unknown = sorted(set(names) - set(sizes))
    if unknown:
        parser.error(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(sizes)}")
    deadline = Deadline(args.budget_seconds)
    result: dict[str, Any] = {
        "device": device_facts(device),
        "dtype": str(dtype),
        "paper_seconds_per_eval": PAPER_SECONDS_PER_EVAL,
        "target_seconds_per_eval": TARGET_SECONDS_PER_EVAL,
        "budget_seconds": args.budget_seconds,
        "backbones": [],
        "total_seconds": 0.0,
        "complete": False,
    }

    def save(current: BackboneReport | None = None) -> None:
        """Rewrite the report with ``current`` (the backbone being measured) as its last entry."""
        result["total_seconds"] = deadline.elapsed()
        if args.out:
            backbones = result["backbones"] + ([asdict(current)] if current is not None else [])
            write_json(args.out, {**result, "backbones": backbones})

    for name in names:
        size = sizes[name](tiny=args.tiny)
        if deadline.spent():
            report = BackboneReport(size.name, {}, 0.0, skipped=["build"])
        else:
            try:
                report = run_backbone(
                    size,
                    device,
                    dtype,
                    batch_sizes,
                    train_pairs=train_pairs,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    checkpointing=args.checkpointing,
                    deadline=deadline,
                    on_report=save,
                )
            except Exception as error:  # the next backbone may still build
                logger.error("%s failed outside a measurement:\n%s", size.name, traceback.format_exc())
                failure = {"build": f"{type(error).__name__}: {error}"}
                report = BackboneReport(size.name, {}, 0.0, failures=failure)
            release_memory(device)
        result["backbones"].append(asdict(report))
        save()
    result["complete"] = not any(entry["failures"] or entry["skipped"] for entry in result["backbones"])
    save()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    raise SystemExit(0 if main().get("complete", True) else 1)
