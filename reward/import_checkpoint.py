"""Import a checkpoint published by the LLaVA-Reward authors into this project's model folder.

A published folder (one per model, e.g. on the hub under ``smz8599/LLaVA-Reward``) holds::

    reward_config.yaml        is_general_preference, value_head_dim, general_preference_tau,
                              add_cross_attention
    pytorch_model.bin         value_head / W_q / W_k / W_v / ca_layernorm weights and, when the
                              projector was fine-tuned, model.vision_embed_tokens.img_projection.*
    lora/adapter_config.json  the peft LoRA config (language model projections only)
    lora/adapter_model.bin    the LoRA matrices (``.safetensors`` accepted too)

plus copies of the base model's JSON files. :func:`import_checkpoint` checks every file against the
base model, loads the tensors into a :class:`reward.model.RewardModel` on that base (native Phi-3.5-vision,
the paper's exact SkipCA, the paper's prompt rendering and 16 HD crops, as the paper's loader uses) and
writes the project's folder (safetensors + ``reward_config.json``), which every scoring, evaluation and
registry path then reads like a model trained here.

Pickled ``.bin`` files are read with ``torch.load(weights_only=True)``: only tensors and plain containers
are accepted; a file holding anything else is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from reward.backbones import load_backbone_from_config
from reward.backbones.loading import read_config_dict
from reward.backbones.templates import LLAVA_REWARD_PHI3V, PAPER_NUM_CROPS
from reward.checkpoint import (
    CheckpointError,
    RewardModelConfig,
    check_perspective_name,
    save_reward_model,
)
from reward.config import BackboneConfig, ConfigError, HeadConfig, LoraSettings, LossConfig
from reward.model import RewardModel
from reward.training import trainable_fraction

REWARD_CONFIG = "reward_config.yaml"
HEAD_FILE = "pytorch_model.bin"
LORA_DIR = "lora"
LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = ("adapter_model.bin", "adapter_model.safetensors")
#: Phi-3 decoder projections a published adapter may target (the vision tower is never adapted).
PHI3_LORA_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_HEAD_NAMES = {
    "value_head.weight": "output.weight",
    "W_q.weight": "query.weight",
    "W_k.weight": "key.weight",
    "W_v.weight": "value.weight",
    "ca_layernorm.weight": "norm.weight",
}
_PROJECTOR = re.compile(r"^(?:.*\.)?img_projection\.(?P<rest>.+)$")
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)"
    r"\.lora_[AB]\.weight$"
)
_PEFT_PREFIX = "base_model.model."


class CheckpointImportError(CheckpointError):
    """A published checkpoint cannot be imported; the message lists every problem found."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{folder}: cannot import this LLaVA-Reward checkpoint:\n{listed}")


@dataclass
class PublishedCheckpoint:
    """The parts of a published folder, read and checked on their own (no base model yet)."""

    folder: Path
    reward_config: dict[str, Any]
    head_state: dict[str, torch.Tensor]
    projector_state: dict[str, torch.Tensor]
    lora_config: dict[str, Any]
    lora_state: dict[str, torch.Tensor]

    @property
    def cross_attention(self) -> bool:
        return bool(self.reward_config["add_cross_attention"])

    @property
    def general_preference(self) -> bool:
        return bool(self.reward_config["is_general_preference"])

    @property
    def value_head_dim(self) -> int:
        return int(self.reward_config["value_head_dim"])

    def head_config(self, norm_eps: float) -> HeadConfig:
        gpm_dim = self.value_head_dim // 2 if self.general_preference else None
        kind = "skipca" if self.cross_attention else "linear"
        return HeadConfig(kind=kind, gpm_dim=gpm_dim, norm_eps=norm_eps)

    def loss_config(self) -> LossConfig:
        tau = float(self.reward_config["general_preference_tau"])
        return LossConfig(kind="gpm" if self.general_preference else "bt", temperature=tau)

    def lora_settings(self) -> LoraSettings:
        targets = self.lora_config["target_modules"]
        return LoraSettings(
            rank=int(self.lora_config["r"]),
            alpha=float(self.lora_config["lora_alpha"]),
            dropout=float(self.lora_config.get("lora_dropout") or 0.0),
            target_modules=sorted(targets),
        )


# ---------------------------------------------------------------------------- reading files
def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` file: safetensors, or a pickle read with tensor-only unpickling."""
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: holds something other than tensors; refused without running it "
            f"(tensor-only loading: {first_line})"
        ) from error
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({error})") from error
    if not isinstance(data, dict) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in data.items()
    ):
        kinds = sorted(
            {type(value).__name__ for value in (data.values() if isinstance(data, dict) else [data])}
        )
        raise CheckpointError(f"{path}: expected a mapping of names to tensors, found {kinds}")
    return data


def _read_reward_config(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        problems.append(f"{path.name}: not valid YAML ({error})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a mapping, got {type(data).__name__}")
        return {}
    expected = {
        "is_general_preference": bool,
        "add_cross_attention": bool,
        "value_head_dim": int,
        "general_preference_tau": (int, float),
    }
    for key, kind in expected.items():
        if key not in data:
            problems.append(f"{path.name}: missing {key!r}")
        elif not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            problems.append(
                f"{path.name}: {key!r} must be {getattr(kind, '__name__', 'a number')}, got {data[key]!r}"
            )
    if problems:
        return data
    if not data["general_preference_tau"] > 0:
        problems.append(
            f"{path.name}: general_preference_tau must be > 0, got {data['general_preference_tau']}"
        )
    dim = data["value_head_dim"]
    if data["is_general_preference"] and (dim < 2 or dim % 2):
        problems.append(
            f"{path.name}: a general-preference head needs an even value_head_dim >= 2, got {dim}"
        )
    if not data["is_general_preference"] and dim != 1:
        problems.append(f"{path.name}: a Bradley-Terry head needs value_head_dim 1, got {dim}")
    return data


def _split_head_file(
    state: dict[str, torch.Tensor], cross_attention: bool, problems: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    head, projector, unexpected = {}, {}, []
    for name, tensor in state.items():
        match = _PROJECTOR.match(name)
        if name in _HEAD_NAMES:
            head[name] = tensor
        elif match:
            projector[match["rest"]] = tensor
        else:
            unexpected.append(name)
    needed = list(_HEAD_NAMES) if cross_attention else ["value_head.weight"]
    missing = [name for name in needed if name not in head]
    if missing:
        problems.append(f"{HEAD_FILE}: missing tensors {missing}")
    if not cross_attention:
        unexpected += sorted(set(head) - {"value_head.weight"})
    if unexpected:
        problems.append(f"{HEAD_FILE}: unexpected tensors {sorted(unexpected)}")
    return head, projector


def _check_lora_config(data: Any, problems: list[str]) -> dict[str, Any]:
    where = f"{LORA_DIR}/{LORA_CONFIG}"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a JSON object")
        return {}
    if data.get("peft_type") != "LORA":
        problems.append(f"{where}: peft_type must be 'LORA', got {data.get('peft_type')!r}")
    for key in ("r", "lora_alpha"):
        if not isinstance(data.get(key), int | float) or isinstance(data.get(key), bool) or not data[key] > 0:
            problems.append(f"{where}: {key!r} must be a positive number, got {data.get(key)!r}")
    targets = data.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets:
        problems.append(f"{where}: target_modules must be a list of module names, got {targets!r}")
    else:
        others = sorted(set(targets) - set(PHI3_LORA_MODULES))
        if others:
            problems.append(
                f"{where}: LoRA adapter for other modules {others}; a LLaVA-Reward adapter targets the "
                f"language model's {list(PHI3_LORA_MODULES)} only"
            )
    unsupported = {
        "use_dora": bool(data.get("use_dora")),
        "use_rslora": bool(data.get("use_rslora")),
        "modules_to_save": bool(data.get("modules_to_save")),
        "layers_to_transform": data.get("layers_to_transform") is not None,
        "rank_pattern": bool(data.get("rank_pattern")),
        "alpha_pattern": bool(data.get("alpha_pattern")),
        "bias": data.get("bias", "none") != "none",
    }
    for key, present in unsupported.items():
        if present:
            problems.append(f"{where}: {key}={data.get(key)!r} is not supported by the importer")
    return data


def _check_lora_keys(state: dict[str, torch.Tensor], targets: list[str], problems: list[str]) -> None:
    wrong = []
    for name in state:
        match = _LORA_KEY.match(name)
        if match is None or match["module"] not in targets:
            wrong.append(name)
    if wrong:
        problems.append(
            f"{LORA_DIR}/adapter_model: LoRA tensors for other modules than the language model's {targets} "
            f"({len(wrong)}, e.g. {wrong[:3]})"
        )


def read_published_checkpoint(folder: str | Path) -> PublishedCheckpoint:
    """Read and check a published folder (files present, tensor-only, names and config fields)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    lora_weights = next(
        (folder / LORA_DIR / name for name in LORA_WEIGHTS if (folder / LORA_DIR / name).is_file()), None
    )
    missing = [
        name
        for name in (REWARD_CONFIG, HEAD_FILE, f"{LORA_DIR}/{LORA_CONFIG}")
        if not (folder / name).is_file()
    ]
    if lora_weights is None:
        missing.append(f"{LORA_DIR}/{LORA_WEIGHTS[0]} (or {LORA_WEIGHTS[1]})")
    if missing:
        raise CheckpointImportError(folder, [f"missing file {name}" for name in missing])
    problems: list[str] = []
    reward_config = _read_reward_config(folder / REWARD_CONFIG, problems)
    head_state = load_tensor_file(folder / HEAD_FILE)
    cross_attention = bool(reward_config.get("add_cross_attention", True))
    head, projector = _split_head_file(head_state, cross_attention, problems)
    try:
        lora_json = json.loads((folder / LORA_DIR / LORA_CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        problems.append(f"{LORA_DIR}/{LORA_CONFIG}: not valid JSON ({error})")
        lora_json = {}
    lora_config = _check_lora_config(lora_json, problems)
    lora_state = load_tensor_file(lora_weights)
    if isinstance(lora_config.get("target_modules"), list):
        _check_lora_keys(lora_state, list(lora_config["target_modules"]), problems)
    if problems:
        raise CheckpointImportError(folder, problems)
    return PublishedCheckpoint(folder, reward_config, head, projector, lora_config, lora_state)


# ---------------------------------------------------------------------------- building the model
def _strip_peft_prefix(name: str) -> str:
    return name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name


def _shape_problems(
    source: str, given: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> list[str]:
    return [
        f"{source}: {name} has shape {list(given[name].shape)}, "
        f"the base model needs {list(expected[name].shape)}"
        for name in sorted(set(given) & set(expected))
        if given[name].shape != expected[name].shape
    ]


def _load_adapter(model: RewardModel, checkpoint: PublishedCheckpoint, problems: list[str]) -> None:
    """LoRA matrices and (when fine-tuned) the projector into the model's adapter."""
    peft_model = model.peft_model
    assert peft_model is not None  # built with LoRA settings
    current = get_peft_model_state_dict(peft_model, adapter_name=model.adapter_name)
    lora_given = {_strip_peft_prefix(name): tensor for name, tensor in checkpoint.lora_state.items()}
    projector_prefix = f"{model.backbone.adapter.projector_path}."
    new_state: dict[str, torch.Tensor] = {}
    lora_expected: dict[str, torch.Tensor] = {}
    projector_expected: dict[str, torch.Tensor] = {}
    for name, tensor in current.items():
        short = _strip_peft_prefix(name)
        if "lora_" in short:
            lora_expected[short] = tensor
        elif short.startswith(projector_prefix):
            projector_expected[short[len(projector_prefix) :]] = tensor
        new_state[name] = tensor
    missing = sorted(set(lora_expected) - set(lora_given))
    extra = sorted(set(lora_given) - set(lora_expected))
    if missing or extra:
        problems.append(
            f"{LORA_DIR}/adapter_model: does not fit the base model's layers: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )
    problems += _shape_problems(f"{LORA_DIR}/adapter_model", lora_given, lora_expected)
    if checkpoint.projector_state:
        missing = sorted(set(projector_expected) - set(checkpoint.projector_state))
        extra = sorted(set(checkpoint.projector_state) - set(projector_expected))
        if missing or extra:
            problems.append(
                f"{HEAD_FILE}: img_projection tensors do not fit the base model's projector: "
                f"missing {missing}, "
                f"unexpected {extra}"
            )
        problems += _shape_problems(
            f"{HEAD_FILE} img_projection", checkpoint.projector_state, projector_expected
        )
    if problems:
        return
    for name in new_state:
        short = _strip_peft_prefix(name)
        if short in lora_given:
            new_state[name] = lora_given[short]
        elif short.startswith(projector_prefix) and checkpoint.projector_state:
            new_state[name] = checkpoint.projector_state[short[len(projector_prefix) :]]
    set_peft_model_state_dict(peft_model, new_state, adapter_name=model.adapter_name)


def _load_head(model: RewardModel, checkpoint: PublishedCheckpoint, problems: list[str]) -> None:
    """value_head (and SkipCA's W_q / W_k / W_v / ca_layernorm) into the model's head."""
    published = {ours: name for name, ours in _HEAD_NAMES.items()}
    state = {_HEAD_NAMES[name]: tensor for name, tensor in checkpoint.head_state.items()}
    expected = model.head.state_dict()
    if "output.bias" in expected:  # the linear head's bias; the paper's value head has none
        state["output.bias"] = torch.zeros_like(expected["output.bias"])
    for name, tensor in sorted(state.items()):
        if tensor.shape != expected[name].shape:
            problems.append(
                f"{HEAD_FILE}: {published.get(name, name)} has shape {list(tensor.shape)}, the base model "
                f"needs {list(expected[name].shape)}"
            )
    if not problems:
        model.head.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()})


def _check_same_base(
    checkpoint: PublishedCheckpoint, base_config: dict[str, Any], problems: list[str]
) -> None:
    """The checkpoint's copy of config.json (when present) must describe the given base model."""
    path = checkpoint.folder / "config.json"
    if not path.is_file():
        return
    try:
        trained_on = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if key in trained_on and trained_on.get(key) != base_config.get(key):
            problems.append(
                f"config.json: the checkpoint was trained on a base with {key}={trained_on.get(key)!r}, "
                f"the given base has {base_config.get(key)!r}"
            )


def _file_digests(folder: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def import_checkpoint(
    checkpoint_dir: str | Path,
    base: str | Path,
    out_dir: str | Path,
    *,
    perspective: str | None = None,
    num_crops: int | None = PAPER_NUM_CROPS,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a published LLaVA-Reward folder into this project's model folder at ``out_dir``.

    Args:
        checkpoint_dir: the published folder (reward_config.yaml, pytorch_model.bin, lora/).
        base: the Phi-3.5-vision base it was trained on (hub id or local folder); recorded in the result.
        out_dir: where the project's folder goes (written atomically: a temporary folder, then a rename).
        perspective: the model's perspective name (default: the checkpoint folder's name).
        num_crops: HD crops per image; 16 (default) scores as the paper's loader does, None reads the base
            folder's preprocessor_config.json.
        dtype: the base model dtype recorded for scoring ("auto": as stored).
        overwrite: replace an existing ``out_dir``.
    """
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    name = check_perspective_name(
        perspective or re.sub(r"[^A-Za-z0-9_-]", "_", checkpoint_dir.resolve().name)
    )
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CheckpointError(
            f"{out_dir}: already exists and is not empty (pass overwrite=True / --overwrite)"
        )
    checkpoint = read_published_checkpoint(checkpoint_dir)
    base_path = Path(base)
    base_name = str(base_path.resolve()) if base_path.exists() else str(base)
    base_config = read_config_dict(base_name)
    problems: list[str] = []
    if base_config.get("model_type") != "phi3_v":
        problems.append(
            f"base {base_name}: model_type {base_config.get('model_type')!r}; LLaVA-Reward needs phi3_v"
        )
    _check_same_base(checkpoint, base_config, problems)
    if problems:
        raise CheckpointImportError(checkpoint_dir, problems)
    backbone_config = BackboneConfig(
        name_or_path=base_name, dtype=dtype, template_profile=LLAVA_REWARD_PHI3V, num_crops=num_crops
    )
    try:
        head_config = checkpoint.head_config(norm_eps=float(base_config.get("rms_norm_eps", 1e-5)))
        loss_config = checkpoint.loss_config()
        lora = checkpoint.lora_settings()
    except ConfigError as error:
        raise CheckpointImportError(checkpoint_dir, [str(error)]) from error
    model = RewardModel(load_backbone_from_config(backbone_config), head_config, lora, adapter_name=name)
    _load_adapter(model, checkpoint, problems)
    _load_head(model, checkpoint, problems)
    if problems:
        raise CheckpointImportError(checkpoint_dir, problems)
    report = model.parameter_report()
    config = RewardModelConfig(
        perspective=name,
        backbone=backbone_config,
        head=head_config,
        loss=loss_config,
        lora=lora,
        trainable_fraction=trainable_fraction(report),
        parameters=report,
        training={
            "imported_from": {
                "checkpoint": str(checkpoint_dir.resolve()),
                "format": "LLaVA-Reward (github.com/sjz5202/LLaVA-Reward)",
                "reward_config": checkpoint.reward_config,
                "files_sha256": _file_digests(checkpoint_dir),
            }
        },
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_reward_model(model, staging, config)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


__all__ = [
    "CheckpointImportError",
    "PAPER_NUM_CROPS",
    "PublishedCheckpoint",
    "import_checkpoint",
    "load_tensor_file",
    "read_published_checkpoint",
]
