"""Configuration dataclasses of the reward model: backbone, head and loss.

They are saved as JSON next to trained adapters (never pickled), so each one round-trips through
:meth:`to_dict` / :meth:`from_dict` and validates its fields on construction with an error that
names the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the config class and the field."""


class JsonConfig:
    """Mixin: JSON round trip for flat dataclasses of plain values."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from error
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{path}: {error}") from error


def _check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")


@dataclass
class BackboneConfig(JsonConfig):
    """Which vision-language model to load and how to read features from it."""

    name_or_path: str = field(metadata={"help": "Hub id or local folder of the vision-language model."})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run modelling code shipped with the checkpoint (needed for Phi-3.5-vision). "
            "Only for sources you trust."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: 'auto' (as stored), 'float32', 'bfloat16' or 'float16'."},
    )
    hidden_layer: int = field(
        default=-1,
        metadata={
            "help": "Which hidden state gives e_h, indexed like HF `hidden_states` "
            "(0 = input embeddings, -1 = last layer after the final norm)."
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Text template with '{prompt}' and '{image}' placeholders. None: the processor's "
            "chat template with the prompt before the image, else '{prompt}\\n{image}'."
        },
    )
    padding_side: str = field(default="left", metadata={"help": "Tokenizer padding side: 'left' or 'right'."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel ('eager', 'sdpa', ...); None lets transformers pick."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    template_profile: str | None = field(
        default=None,
        metadata={
            "help": "A named rendering that reproduces a published model's input exactly (see "
            "reward.backbones.templates), e.g. 'llava-reward-phi3v'; overrides prompt_template."
        },
    )
    num_crops: int | None = field(
        default=None,
        metadata={
            "help": "Phi-3.5-vision only: HD crops per image (the LLaVA-Reward loader uses 16); None: the "
            "base folder's preprocessor_config.json."
        },
    )

    DTYPES: ClassVar[tuple[str, ...]] = ("auto", "float32", "bfloat16", "float16")

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path:
            raise ConfigError(
                f"BackboneConfig.name_or_path must be a non-empty string, got {self.name_or_path!r}"
            )
        _check_choice("BackboneConfig", "dtype", self.dtype, self.DTYPES)
        _check_choice("BackboneConfig", "padding_side", self.padding_side, ("left", "right"))
        if not isinstance(self.hidden_layer, int) or isinstance(self.hidden_layer, bool):
            raise ConfigError(f"BackboneConfig.hidden_layer must be an int, got {self.hidden_layer!r}")
        if self.template_profile is not None:
            from reward.backbones.templates import PROFILES

            _check_choice(
                "BackboneConfig", "template_profile", self.template_profile, tuple(sorted(PROFILES))
            )
        if self.num_crops is not None and (
            not isinstance(self.num_crops, int) or isinstance(self.num_crops, bool) or self.num_crops < 1
        ):
            raise ConfigError(
                f"BackboneConfig.num_crops must be a positive int or None, got {self.num_crops!r}"
            )
        if self.prompt_template is not None and (
            "{prompt}" not in self.prompt_template or "{image}" not in self.prompt_template
        ):
            raise ConfigError(
                "BackboneConfig.prompt_template must contain both '{prompt}' and '{image}', "
                f"got {self.prompt_template!r}"
            )


@dataclass
class HeadConfig(JsonConfig):
    """The reward head on top of the backbone features."""

    kind: str = field(
        default="skipca",
        metadata={
            "help": "'skipca': the paper's SkipCA (one head of bias-free W_q/W_k/W_v from e_h to the visual "
            "tokens e_v, residual + RMSNorm, bias-free value head); 'skipca_mha': multi-head attention with "
            "an output projection, residual + LayerNorm, linear with bias; 'linear': linear on the pooled "
            "e_h (the 'w/o SkipCA' ablation)."
        },
    )
    pooling: str = field(
        default="eos",
        metadata={
            "help": "'eos': the last non-padding token (paper default); 'mean': mean over non-padding "
            "tokens (ablation)."
        },
    )
    gpm_dim: int | None = field(
        default=None,
        metadata={"help": "k for the General Preference Model (2k outputs); None for one scalar reward."},
    )
    num_heads: int = field(
        default=1,
        metadata={"help": "Attention heads of 'skipca_mha' ('skipca' is single-head, as published)."},
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the cross-attention weights."})
    norm_eps: float = field(default=1e-5, metadata={"help": "Epsilon of the 'skipca' RMSNorm (Phi-3: 1e-5)."})

    KINDS: ClassVar[tuple[str, ...]] = ("skipca", "skipca_mha", "linear")

    def __post_init__(self) -> None:
        _check_choice("HeadConfig", "kind", self.kind, self.KINDS)
        _check_choice("HeadConfig", "pooling", self.pooling, ("eos", "mean"))
        if self.gpm_dim is not None and (not isinstance(self.gpm_dim, int) or self.gpm_dim < 1):
            raise ConfigError(f"HeadConfig.gpm_dim must be a positive int or None, got {self.gpm_dim!r}")
        if not isinstance(self.num_heads, int) or self.num_heads < 1:
            raise ConfigError(f"HeadConfig.num_heads must be a positive int, got {self.num_heads!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"HeadConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.kind == "skipca" and self.num_heads != 1:
            raise ConfigError(
                f"HeadConfig.num_heads={self.num_heads}: 'skipca' is the paper's single-head SkipCA; "
                "use kind='skipca_mha' for several heads"
            )
        if not isinstance(self.norm_eps, int | float) or not self.norm_eps > 0:
            raise ConfigError(f"HeadConfig.norm_eps must be a positive number, got {self.norm_eps!r}")

    @property
    def output_dim(self) -> int:
        """1 for a scalar reward, 2k for a GPM embedding."""
        return 1 if self.gpm_dim is None else 2 * self.gpm_dim


@dataclass
class LossConfig(JsonConfig):
    """The training objective."""

    kind: str = field(
        default="bt",
        metadata={
            "help": "'bt': Bradley-Terry on pairs; 'gpm': General Preference Model on pairs; "
            "'ce': binary cross-entropy on unpaired (image, prompt, label) rows."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "T in sigma(margin / T) for 'bt' and 'gpm'. Must be > 0."}
    )

    def __post_init__(self) -> None:
        _check_choice("LossConfig", "kind", self.kind, ("bt", "gpm", "ce"))
        if not isinstance(self.temperature, int | float) or not self.temperature > 0:
            raise ConfigError(f"LossConfig.temperature must be a positive number, got {self.temperature!r}")


def check_head_loss_compatible(head: HeadConfig, loss: LossConfig) -> None:
    """GPM needs a 2k-dimensional head; BT and CE need a scalar head."""
    if loss.kind == "gpm" and head.gpm_dim is None:
        raise ConfigError("LossConfig.kind='gpm' needs HeadConfig.gpm_dim (k, for 2k outputs); it is None")
    if loss.kind != "gpm" and head.gpm_dim is not None:
        raise ConfigError(
            f"LossConfig.kind={loss.kind!r} needs a scalar head, but HeadConfig.gpm_dim={head.gpm_dim}"
        )


@dataclass
class LoraSettings(JsonConfig):
    """LoRA on the language model's layers only (the vision tower is never adapted)."""

    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    alpha: float = field(
        default=16.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha / r)."}
    )
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Projection names inside the language model's layers; None: the architecture's "
            "attention projections (q/k/v/o, or qkv/o for Phi-3.5-vision)."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"LoraSettings.rank must be a positive int, got {self.rank!r}")
        if not self.alpha > 0:
            raise ConfigError(f"LoraSettings.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            if not self.target_modules or not all(
                isinstance(name, str) and name for name in self.target_modules
            ):
                raise ConfigError(
                    "LoraSettings.target_modules must be None or a non-empty list of names, "
                    f"got {self.target_modules!r}"
                )
            self.target_modules = list(self.target_modules)
