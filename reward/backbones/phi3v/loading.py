"""Load a published Phi-3.5-vision folder (hub id or local path) natively: no remote code runs.

``config.json`` -> :class:`Phi3VConfig`; the safetensors shards load into :class:`Phi3VForCausalLM` by
their published names; ``tokenizer.json`` loads as it is; ``preprocessor_config.json`` gives the number
of HD crops (unless the caller sets it) and the normalisation. Files are read, never executed.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast
from transformers.utils import cached_file

from reward.backbones.phi3v.config import (
    Phi3VConfig,
    phi3v_config_from_dict,
    tokens_per_view,
    vision_tower_config,
)
from reward.backbones.phi3v.image_processing import CLIP_MEAN, CLIP_STD, Phi3VImageProcessor
from reward.backbones.phi3v.modeling import Phi3VForCausalLM
from reward.backbones.phi3v.processing import Phi3VProcessor

PREPROCESSOR_FILE = "preprocessor_config.json"


def read_preprocessor_config(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """The folder's ``preprocessor_config.json`` (empty when it has none)."""
    path = cached_file(
        name_or_path,
        PREPROCESSOR_FILE,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{name_or_path}/{PREPROCESSOR_FILE}: expected a JSON object")
    return data


def build_processor(
    config: Phi3VConfig,
    preprocessor: dict[str, Any],
    tokenizer: Any,
    *,
    num_crops: int | None = None,
) -> Phi3VProcessor:
    """The processor for a model config + preprocessor config; ``num_crops`` overrides the file's."""
    vision = vision_tower_config(config)
    per_view = tokens_per_view(config)
    declared = preprocessor.get("num_img_tokens")
    if declared is not None and int(declared) != per_view:
        raise ValueError(
            f"{PREPROCESSOR_FILE} says num_img_tokens={declared}, but the vision tower "
            f"({vision.image_size} px, patch {vision.patch_size}) gives {per_view} tokens per view"
        )
    crops = num_crops if num_crops is not None else int(preprocessor.get("num_crops", 4))
    image_processor = Phi3VImageProcessor(
        crops,
        crop_size=int(vision.image_size),
        tokens_per_view=per_view,
        image_mean=preprocessor.get("image_mean", CLIP_MEAN),
        image_std=preprocessor.get("image_std", CLIP_STD),
    )
    return Phi3VProcessor(image_processor, tokenizer)


def load_phi3v(
    name_or_path: str,
    config_dict: dict[str, Any],
    *,
    dtype: torch.dtype | str = "auto",
    attn_implementation: str | None = None,
    revision: str | None = None,
    num_crops: int | None = None,
) -> tuple[Phi3VForCausalLM, Phi3VProcessor]:
    """Model and processor of a published Phi-3.5-vision folder."""
    config = phi3v_config_from_dict(config_dict)
    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "revision": revision}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = Phi3VForCausalLM.from_pretrained(name_or_path, **kwargs)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(name_or_path, revision=revision)
    processor = build_processor(
        config, read_preprocessor_config(name_or_path, revision), tokenizer, num_crops=num_crops
    )
    return model, processor


__all__ = ["build_processor", "load_phi3v", "read_preprocessor_config"]
