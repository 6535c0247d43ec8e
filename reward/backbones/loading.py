"""Load a vision-language checkpoint (hub id or local folder) as a :class:`Backbone`."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
)

from reward.backbones.adapters import ArchitectureAdapter, BackboneError, adapter_for_model_type
from reward.backbones.backbone import Backbone
from reward.config import BackboneConfig

_AUTO_CLASSES = {"image-text-to-text": AutoModelForImageTextToText, "causal-lm": AutoModelForCausalLM}


def read_config_dict(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, without running any code it ships."""
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name_or_path, revision=revision)
    except (OSError, ValueError) as error:
        raise BackboneError(
            f"{name_or_path}: cannot read its config.json ({error}). Give an existing local folder, or a hub "
            "id that is in the local cache or reachable (HF_HUB_OFFLINE=1 forbids downloads)."
        ) from error
    return config_dict


def resolve_adapter(config: BackboneConfig, config_dict: dict[str, Any] | None = None) -> ArchitectureAdapter:
    """The adapter for the checkpoint. Phi-3.5-vision loads natively unless ``trust_remote_code`` asks for
    its shipped code; no other family runs code from its folder."""
    if config_dict is None:
        config_dict = read_config_dict(config.name_or_path, config.revision)
    model_type = config_dict.get("model_type")
    adapter = adapter_for_model_type(
        model_type, source=config.name_or_path, remote_code=config.trust_remote_code
    )
    if config.num_crops is not None and model_type != "phi3_v":
        raise BackboneError(
            f"{config.name_or_path}: num_crops applies to Phi-3.5-vision (phi3_v) only; "
            f"this checkpoint is {model_type!r}"
        )
    return adapter


def _torch_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def _load_native_phi3v(config: BackboneConfig, config_dict: dict[str, Any]) -> tuple[Any, Any]:
    from reward.backbones.phi3v import load_phi3v

    return load_phi3v(
        config.name_or_path,
        config_dict,
        dtype=_torch_dtype(config.dtype),
        attn_implementation=config.attn_implementation,
        revision=config.revision,
        num_crops=config.num_crops,
    )


def _load_with_auto_classes(config: BackboneConfig, adapter: ArchitectureAdapter) -> tuple[Any, Any]:
    common: dict[str, Any] = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
    model_kwargs: dict[str, Any] = {"dtype": _torch_dtype(config.dtype)}
    if config.attn_implementation is not None:
        model_kwargs["attn_implementation"] = config.attn_implementation
    processor_kwargs = {} if config.num_crops is None else {"num_crops": config.num_crops}
    model = _AUTO_CLASSES[adapter.auto_class].from_pretrained(config.name_or_path, **common, **model_kwargs)
    processor = AutoProcessor.from_pretrained(config.name_or_path, **common, **processor_kwargs)
    return model, processor


def load_backbone_from_config(config: BackboneConfig) -> Backbone:
    """Load model + processor named by ``config`` and wrap them in a :class:`Backbone` (eval mode)."""
    config_dict = read_config_dict(config.name_or_path, config.revision)
    adapter = resolve_adapter(config, config_dict)
    try:
        if adapter.auto_class == "phi3v-native":
            model, processor = _load_native_phi3v(config, config_dict)
        else:
            model, processor = _load_with_auto_classes(config, adapter)
    except (OSError, ValueError) as error:
        raise BackboneError(
            f"{config.name_or_path}: loading the {adapter.name} model failed: {error}"
        ) from error
    processor.tokenizer.padding_side = config.padding_side
    backbone = Backbone(model, processor, adapter, config)
    backbone.eval()
    return backbone


def load_backbone(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    hidden_layer: int = -1,
    prompt_template: str | None = None,
    padding_side: str = "left",
    attn_implementation: str | None = None,
    revision: str | None = None,
    template_profile: str | None = None,
    num_crops: int | None = None,
) -> Backbone:
    """Load a LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL or Phi-3.5-vision model (Phi-3.5-vision natively;
    with ``trust_remote_code`` through the code its folder ships).

    See :class:`reward.config.BackboneConfig` for the meaning of each argument.
    """
    return load_backbone_from_config(
        BackboneConfig(
            name_or_path=str(name_or_path),
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            hidden_layer=hidden_layer,
            prompt_template=prompt_template,
            padding_side=padding_side,
            attn_implementation=attn_implementation,
            revision=revision,
            template_profile=template_profile,
            num_crops=num_crops,
        )
    )
