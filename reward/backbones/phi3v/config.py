"""Phi-3.5-vision's configuration, read from the published ``config.json`` without its remote code.

The published file is a Phi-3 decoder config plus two dicts: ``embd_layer`` (how image features become
token embeddings) and ``img_processor`` (the vision tower). transformers' own :class:`Phi3Config` takes
the decoder fields (legacy ``rope_scaling`` / ``rope_theta`` included; "su" rope becomes "longrope");
the vision tower is CLIP ViT-L/14-336 unless ``img_processor.vision_config`` gives another CLIP config.
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, Phi3Config

#: CLIP ViT-L/14 at 336 px, the tower the published model names (openai/clip-vit-large-patch14-336).
CLIP_VIT_L_14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "attention_dropout": 0.0,
    "dropout": 0.0,
}

#: Keys of a saved config.json that describe the file, not the model.
_FILE_KEYS = ("auto_map", "architectures", "transformers_version", "model_type", "_name_or_path")


class Phi3VConfig(Phi3Config):
    """A Phi-3 decoder config with Phi-3-V's ``embd_layer`` and ``img_processor`` dicts kept as given."""

    model_type = "phi3_v"


def phi3v_config_from_dict(config_dict: dict[str, Any]) -> Phi3VConfig:
    """A :class:`Phi3VConfig` from a published ``config.json`` dict (file-level keys dropped)."""
    fields = {key: value for key, value in config_dict.items() if key not in _FILE_KEYS}
    fields.pop("_attn_implementation", None)  # the caller picks the kernel ("flash_attention_2" is published)
    fields.setdefault("embd_layer", {})
    fields.setdefault("img_processor", {})
    return Phi3VConfig(**fields)


def vision_tower_config(config: Phi3VConfig) -> CLIPVisionConfig:
    """The CLIP tower: ``img_processor.vision_config`` when present, else CLIP ViT-L/14-336."""
    settings = dict((config.img_processor or {}).get("vision_config") or CLIP_VIT_L_14_336)
    vision = CLIPVisionConfig(**settings)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation is not None:
        vision._attn_implementation = implementation
    return vision


def tokens_per_view(config: Phi3VConfig) -> int:
    """Image tokens of one view: the CLIP patch grid merged 2 x 2 (144 for 336 px, patch 14)."""
    vision = vision_tower_config(config)
    return (int(vision.image_size) // int(vision.patch_size) // 2) ** 2


def image_feature_layer(config: Phi3VConfig) -> int:
    """Which CLIP hidden state gives the patch features (published default: -2, the second to last)."""
    return int((config.img_processor or {}).get("layer_idx", -2))


def keeps_cls_token(config: Phi3VConfig) -> bool:
    """``type_feature`` "patch" (published default) drops CLIP's CLS token; "cls_patch" keeps it."""
    kind = (config.img_processor or {}).get("type_feature", "patch")
    if kind not in ("patch", "cls_patch"):
        raise ValueError(f"img_processor.type_feature must be 'patch' or 'cls_patch', got {kind!r}")
    return kind == "cls_patch"


def hd_transform_order(config: Phi3VConfig) -> str:
    """Where the global view goes: "sub_glb" (published: crops, separator, global) or "glb_sub"."""
    order = (config.embd_layer or {}).get("hd_transform_order", "glb_sub")
    if order not in ("sub_glb", "glb_sub"):
        raise ValueError(f"embd_layer.hd_transform_order must be 'sub_glb' or 'glb_sub', got {order!r}")
    return order


__all__ = [
    "CLIP_VIT_L_14_336",
    "Phi3VConfig",
    "hd_transform_order",
    "image_feature_layer",
    "keeps_cls_token",
    "phi3v_config_from_dict",
    "tokens_per_view",
    "vision_tower_config",
]
