"""Save and load trained reward models: one folder per perspective, safetensors and JSON only.

A perspective folder holds::

    reward_config.json              RewardModelConfig: perspective, backbone (id / path, hidden layer,
                                    template), head, loss (+ temperature), LoRA settings, trainable
                                    fraction, parameter counts, training data key, training summary
    adapter/adapter_config.json     the peft LoRA config (standard peft layout, loadable by peft alone)
    adapter/adapter_model.safetensors   LoRA matrices + the projector (a peft ``modules_to_save`` copy)
    head.safetensors                the reward head
    projector.safetensors           the projector, only for models trained without LoRA

The frozen base model is never copied: ``backbone.name_or_path`` names it. Nothing is unpickled:
weights go through :mod:`safetensors`, configs through JSON (``torch.load`` is never called here).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from reward.backbones import load_backbone_from_config
from reward.config import BackboneConfig, ConfigError, HeadConfig, LoraSettings, LossConfig
from reward.heads import RewardHead, build_head
from reward.model import RewardModel

#: 2: head kind "skipca" is the paper's exact SkipCA; format-1 folders' "skipca" is now "skipca_mha".
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
CONFIG_NAME = "reward_config.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
PROJECTOR_WEIGHTS = "projector.safetensors"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class CheckpointError(ValueError):
    """A model folder is missing, incomplete or does not fit the model. The message names the file."""


def check_perspective_name(name: str) -> str:
    """Perspective names become peft adapter names: letters, digits, '_' and '-', no dots."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"perspective name must start with a letter or '_' and hold only letters, digits, '_' or '-', "
            f"got {name!r}"
        )
    return name


@dataclass
class RewardModelConfig:
    """What a perspective folder is: everything needed to rebuild and describe the model."""

    perspective: str
    backbone: BackboneConfig
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    trainable_fraction: float | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_perspective_name(self.perspective)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "perspective": self.perspective,
            "backbone": self.backbone.to_dict(),
            "head": self.head.to_dict(),
            "loss": self.loss.to_dict(),
            "lora": None if self.lora is None else self.lora.to_dict(),
            "trainable_fraction": self.trainable_fraction,
            "parameters": dict(self.parameters),
            "training_data": dict(self.training_data),
            "training": dict(self.training),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"RewardModelConfig: expected a JSON object, got {type(data).__name__}")
        known = {
            "format_version",
            "perspective",
            "backbone",
            "head",
            "loss",
            "lora",
            "trainable_fraction",
            "parameters",
            "training_data",
            "training",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"RewardModelConfig: unknown field(s) {unknown}")
        version = data.get("format_version", FORMAT_VERSION)
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ConfigError(
                f"RewardModelConfig: format_version {version} is not supported (this reads "
                f"{list(SUPPORTED_FORMAT_VERSIONS)})"
            )
        for required in ("perspective", "backbone"):
            if required not in data:
                raise ConfigError(f"RewardModelConfig: missing field {required!r}")
        head = dict(data.get("head", {}))
        if version == 1 and head.get("kind", "skipca") == "skipca":
            head["kind"] = "skipca_mha"  # format 1's SkipCA: multi-head, LayerNorm, linear with bias
        return cls(
            perspective=data["perspective"],
            backbone=BackboneConfig.from_dict(data["backbone"]),
            head=HeadConfig.from_dict(head),
            loss=LossConfig.from_dict(data.get("loss", {})),
            lora=None if data.get("lora") is None else LoraSettings.from_dict(data["lora"]),
            trainable_fraction=data.get("trainable_fraction"),
            parameters=dict(data.get("parameters", {})),
            training_data=dict(data.get("training_data", {})),
            training=dict(data.get("training", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path


def read_reward_config(folder: str | Path) -> RewardModelConfig:
    """The :class:`RewardModelConfig` of a perspective folder."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a reward model folder (no {CONFIG_NAME})")
    try:
        return RewardModelConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: {error}") from error


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def _load_module(module: nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(_read_weights(path), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: does not fit the model ({error})") from error


def save_reward_model(
    model: RewardModel, folder: str | Path, config: RewardModelConfig, *, adapter_name: str | None = None
) -> Path:
    """Write the trained parts of ``model`` (adapter ``adapter_name``, head, projector) and ``config``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model = model.peft_model
    if (config.lora is None) != (peft_model is None):
        raise CheckpointError(
            f"{folder}: config.lora is {'None' if config.lora is None else 'set'} but the model "
            f"{'has no' if peft_model is None else 'has a'} LoRA adapter"
        )
    if peft_model is not None:
        name = adapter_name or model.adapter_name
        adapter_dir = folder / ADAPTER_DIR
        adapter_dir.mkdir(exist_ok=True)
        state = get_peft_model_state_dict(peft_model, adapter_name=name)
        save_file(_cpu_tensors(state), adapter_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        lora_config = copy.deepcopy(peft_model.peft_config[name])
        lora_config.inference_mode = True
        lora_config.save_pretrained(str(adapter_dir))
    else:
        state = model.backbone.projector.state_dict()
        save_file(_cpu_tensors(state), folder / PROJECTOR_WEIGHTS, metadata={"format": "pt"})
    save_file(_cpu_tensors(model.head.state_dict()), folder / HEAD_WEIGHTS, metadata={"format": "pt"})
    config.to_json(folder / CONFIG_NAME)
    return folder


def load_adapter_weights(peft_model: PeftModel, folder: str | Path, adapter_name: str) -> None:
    """Copy the saved LoRA + projector weights of ``folder`` into adapter ``adapter_name``; every
    tensor of the adapter must be in the file and every tensor of the file must fit."""
    path = Path(folder) / ADAPTER_DIR / ADAPTER_WEIGHTS
    saved = _read_weights(path)
    expected = set(get_peft_model_state_dict(peft_model, adapter_name=adapter_name))
    missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or extra:
        raise CheckpointError(
            f"{path}: does not fit the model's adapter: {len(missing)} tensor(s) missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )
    try:
        set_peft_model_state_dict(peft_model, saved, adapter_name=adapter_name)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: does not fit the model's adapter ({error})") from error


def load_lora_config(folder: str | Path) -> LoraConfig:
    """The saved peft LoRA config of a perspective folder."""
    adapter_dir = Path(folder) / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise CheckpointError(f"{adapter_dir}: missing adapter_config.json")
    return LoraConfig.from_pretrained(str(adapter_dir))


def load_head(folder: str | Path, config: RewardModelConfig, hidden_size: int) -> RewardHead:
    """A new head of ``config.head`` with the weights saved in ``folder``."""
    head = build_head(hidden_size, config.head)
    _load_module(head, Path(folder) / HEAD_WEIGHTS)
    return head


def load_projector_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The projector weights of a model trained without LoRA."""
    return _read_weights(Path(folder) / PROJECTOR_WEIGHTS)


def load_trainable_weights(
    model: RewardModel, folder: str | Path, *, adapter_name: str | None = None
) -> None:
    """Put the weights saved in ``folder`` into ``model``'s adapter, head and projector (in place)."""
    folder = Path(folder)
    config = read_reward_config(folder)
    if (config.lora is None) != (model.peft_model is None):
        raise CheckpointError(
            f"{folder}: saved {'without' if config.lora is None else 'with'} LoRA, but the model "
            f"{'has no' if model.peft_model is None else 'has a'} LoRA adapter"
        )
    if model.peft_model is not None:
        load_adapter_weights(model.peft_model, folder, adapter_name or model.adapter_name)
    else:
        _load_module(model.backbone.projector, folder / PROJECTOR_WEIGHTS)
    _load_module(model.head, folder / HEAD_WEIGHTS)


def backbone_config_for(
    config: RewardModelConfig, *, backbone: str | None = None, dtype: str | None = None
) -> BackboneConfig:
    """The saved backbone config, optionally pointed at another copy of the base model or dtype."""
    changes: dict[str, Any] = {}
    if backbone is not None:
        changes["name_or_path"] = str(backbone)
    if dtype is not None:
        changes["dtype"] = dtype
    return replace(config.backbone, **changes)


def check_remote_code_allowed(folder: str | Path, backbone: BackboneConfig, trust_remote_code: bool) -> None:
    """Remote code runs only where the folder asks for it and the caller allows it.

    A folder whose saved config asks for remote code, loaded by a caller who did not allow it, is
    refused (nothing is imported from the base model's folder). The caller's permission never turns
    remote code on for a folder that did not ask for it: such a model was trained on the native classes
    (Phi-3.5-vision has both), and it loads the way it was trained.
    """
    if backbone.trust_remote_code and not trust_remote_code:
        raise CheckpointError(
            f"{folder}: its {CONFIG_NAME} asks to run code shipped with the base model "
            f"{backbone.name_or_path} (trust_remote_code), which runs only when the caller allows it: "
            "pass --trust-remote-code (CLI), trust_remote_code=True (load_reward_model, "
            "RewardScorer.from_pretrained) or the flow parameter trust_remote_code=true, "
            "only for a folder and base model you trust"
        )


def load_reward_model(
    folder: str | Path,
    *,
    backbone: str | None = None,
    dtype: str | None = None,
    device: str | torch.device | None = None,
    adapter_name: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[RewardModel, RewardModelConfig]:
    """Load one perspective folder onto a freshly loaded base model, in eval mode with no gradients.

    ``backbone`` replaces the saved base model location (e.g. the model folder moved machines);
    ``adapter_name`` names the peft adapter (default: the perspective); ``trust_remote_code`` allows
    modelling code shipped with the base model (the saved config alone never does, see
    :func:`check_remote_code_allowed`).
    """
    config = read_reward_config(folder)
    check_remote_code_allowed(folder, config.backbone, trust_remote_code)
    base = load_backbone_from_config(backbone_config_for(config, backbone=backbone, dtype=dtype))
    name = check_perspective_name(adapter_name or config.perspective)
    model = RewardModel(base, config.head, config.lora, adapter_name=name)
    load_trainable_weights(model, folder, adapter_name=name)
    if device is not None:
        model.to(device)
    model.eval().requires_grad_(False)
    return model, config


__all__ = [
    "ADAPTER_DIR",
    "CONFIG_NAME",
    "CheckpointError",
    "HEAD_WEIGHTS",
    "PROJECTOR_WEIGHTS",
    "RewardModelConfig",
    "backbone_config_for",
    "check_remote_code_allowed",
    "check_perspective_name",
    "load_adapter_weights",
    "load_head",
    "load_lora_config",
    "load_projector_state",
    "load_reward_model",
    "load_trainable_weights",
    "read_reward_config",
    "save_reward_model",
]
