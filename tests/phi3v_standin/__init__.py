"""A tiny stand-in for microsoft/Phi-3.5-vision-instruct's remote code, so that the Phi-3-V path of
``reward.backbones`` can be tested offline.

The real checkpoint ships ``configuration_phi3_v.py``, ``modeling_phi3_v.py``, ``processing_phi3_v.py``
and ``image_processing_phi3_v.py`` and is loaded with ``trust_remote_code=True``. The files here are our
own code that follows their published interface (class names, config fields, module paths, forward
arguments, processor outputs, negative image ids); the network is tiny and random, not Phi-3.5.

:func:`build_phi3v_standin` writes a checkpoint folder whose ``config.json`` and processor config carry
an ``auto_map`` to copies of these files, so :func:`reward.backbones.load_backbone` loads it through
``AutoModelForCausalLM`` / ``AutoProcessor`` with ``trust_remote_code=True``, like the real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from reward.tiny import build_tokenizer

from .configuration_phi3_v import Phi3VConfig
from .image_processing_phi3_v import Phi3VImageProcessor
from .modeling_phi3_v import Phi3VForCausalLM
from .processing_phi3_v import Phi3VProcessor

#: Phi-3 chat tokens (the adapter's default template uses the first three).
CHAT_TOKENS = ("<|user|>", "<|end|>", "<|assistant|>", "<|endoftext|>")

__all__ = ["CHAT_TOKENS", "build_phi3v_standin"]


def _register_remote_code() -> None:
    """Make save_pretrained copy the class files and write ``auto_map`` entries for them."""
    Phi3VConfig.register_for_auto_class()
    Phi3VForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    Phi3VImageProcessor.register_for_auto_class()
    Phi3VProcessor.register_for_auto_class()


def build_phi3v_standin(
    out_dir: str | Path,
    *,
    crop_size: int = 16,
    patch_size: int = 4,
    num_crops: int = 4,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_width: int = 16,
    seed: int = 0,
    extra_words: Iterable[str] = (),
) -> Path:
    """Write a random-weight stand-in checkpoint to ``out_dir`` and return the folder.

    Images become up to ``num_crops`` crops of ``crop_size`` pixels plus a global view; each crop has
    (crop_size / patch_size)^2 CLIP patches, merged 2x2 into one token.
    """
    if crop_size % (2 * patch_size):
        raise ValueError(f"crop_size={crop_size} must be a multiple of 2 * patch_size={2 * patch_size}")
    tokenizer = build_tokenizer(CHAT_TOKENS, extra_words)
    config = Phi3VConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        img_processor={
            "name": "clip_vision_model",
            "model_name": "stand-in/tiny-clip",
            "image_dim_out": vision_width,
            "image_size": crop_size,
            "patch_size": patch_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "layer_idx": -2,
            "type_feature": "patch",
            # The same tower as a CLIP config, where the native loader (reward.backbones.phi3v) reads it.
            "vision_config": {
                "hidden_size": vision_width,
                "intermediate_size": 2 * vision_width,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": crop_size,
                "patch_size": patch_size,
            },
        },
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phi3VForCausalLM(config)
    image_processor = Phi3VImageProcessor(num_crops=num_crops, crop_size=crop_size, patch_size=patch_size)
    processor = Phi3VProcessor(image_processor, tokenizer)
    _register_remote_code()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
