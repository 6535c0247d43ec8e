"""Vision-language backbones: loading, architecture adapters and feature extraction (e_h, e_v)."""

from reward.backbones.adapters import (
    ADAPTERS,
    ArchitectureAdapter,
    BackboneError,
    adapter_for_model_type,
    collate_rows,
)
from reward.backbones.backbone import Backbone
from reward.backbones.features import (
    BackboneOutput,
    gather_last_token,
    gather_visual_tokens,
    last_token_index,
    masked_mean,
)
from reward.backbones.loading import load_backbone, load_backbone_from_config

__all__ = [
    "ADAPTERS",
    "ArchitectureAdapter",
    "Backbone",
    "BackboneError",
    "BackboneOutput",
    "adapter_for_model_type",
    "collate_rows",
    "gather_last_token",
    "gather_visual_tokens",
    "last_token_index",
    "load_backbone",
    "load_backbone_from_config",
    "masked_mean",
]
