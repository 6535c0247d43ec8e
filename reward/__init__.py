"""LLaVA-Reward model library: backbones, heads, losses (importable without Prefect).

Names are imported lazily, so ``import reward`` (or a light submodule such as metrics) does not pay
for importing transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Backbone": "reward.backbones",
    "BackboneError": "reward.backbones",
    "BackboneOutput": "reward.backbones",
    "load_backbone": "reward.backbones",
    "load_backbone_from_config": "reward.backbones",
    "build_tiny_backbone": "reward.tiny",
    "LinearHead": "reward.heads",
    "SkipCAHead": "reward.heads",
    "build_head": "reward.heads",
    "bt_loss": "reward.losses",
    "bt_probability": "reward.losses",
    "ce_loss": "reward.losses",
    "gpm_loss": "reward.losses",
    "gpm_probability": "reward.losses",
    "BackboneConfig": "reward.config",
    "HeadConfig": "reward.config",
    "LossConfig": "reward.config",
    "ConfigError": "reward.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reward' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
