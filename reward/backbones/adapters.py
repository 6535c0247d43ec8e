"""Architecture adapters: where each vision-language model keeps its parts and how to feed it.

An adapter knows, for one family of checkpoints:

- the module paths (relative to the loaded ``...ForConditionalGeneration`` / ``...ForCausalLM``) of
  the base model (forward without the LM head), the projector, the vision tower and the language
  model (the only place LoRA should go);
- where the language model's input embeddings can be read: the visual tokens ``e_v`` are those
  embeddings at image-token positions, i.e. ``hidden_states[0]`` at image tokens, which is the
  projector output scattered into the text sequence;
- which input ids are image tokens, how one image is written in a prompt, and how a batch of
  (image, text) pairs becomes model inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn


class BackboneError(ValueError):
    """A backbone cannot be loaded or fed. The message names the checkpoint or the input."""


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Module paths and input handling of one vision-language architecture family."""

    name: str
    model_types: tuple[str, ...]
    base_model_path: str
    projector_path: str
    vision_tower_path: str
    language_model_path: str
    #: "lm_input": a pre-hook on the language model reads its ``inputs_embeds`` kwarg;
    #: "module_output": a forward hook reads the output of ``embeddings_module_path``.
    embeddings_capture: str
    embeddings_module_path: str
    default_lora_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: Pass explicit position ids computed from the attention mask (left padding safe).
    needs_position_ids: bool = True
    #: The checkpoint's modelling code comes with the checkpoint (``trust_remote_code``).
    remote_code: bool = False
    #: What loads it: transformers' Auto class ("image-text-to-text" or "causal-lm"), or "phi3v-native"
    #: (:mod:`reward.backbones.phi3v`, the published Phi-3.5-vision folder without its remote code).
    auto_class: str = "image-text-to-text"
    #: A fixed prompt template for this family, used when the user gives none; None: the processor's
    #: chat template (prompt before image) or "{prompt}\n{image}".
    default_template: str | None = None
    #: The processor takes uint8 (3, H, W) tensors exactly as it takes PIL images (transformers'
    #: torchvision-backed image processors); False: tensors become PIL images before the processor.
    accepts_pixel_tensors: bool = True

    @property
    def decoder_layers_path(self) -> str:
        return f"{self.language_model_path}.layers"

    def image_placeholder(self, processor: Any) -> str:
        """The text that stands for one image in a prompt; the processor expands it."""
        return str(processor.image_token)

    def image_token_mask(self, input_ids: Tensor, model_config: Any) -> Tensor:
        return input_ids == int(model_config.image_token_id)

    def prepare(self, processor: Any, images: Sequence[Any], texts: Sequence[str]) -> Mapping[str, Tensor]:
        return processor(images=list(images), text=list(texts), return_tensors="pt", padding=True)

    def model_inputs(self, inputs: Mapping[str, Tensor], dtype: torch.dtype, device: torch.device) -> dict:
        """Tensors for the base model's forward, on ``device``, pixel values in the model dtype."""
        out: dict[str, Tensor] = {}
        for key, value in inputs.items():
            if not isinstance(value, Tensor):
                continue
            value = value.to(device)
            if key.startswith("pixel_values") and value.is_floating_point():
                value = value.to(dtype)
            out[key] = value
        if self.needs_position_ids and "position_ids" not in out:
            mask = out["attention_mask"].long()
            out["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return out

    def projector_modules_to_save(self, model: nn.Module) -> list[str]:
        """peft ``modules_to_save`` entries (paths in ``model``) that make the projector trainable."""
        return [self.projector_path]

    def lora_target_regex(self, modules: Sequence[str] | None = None) -> str:
        """A peft ``target_modules`` regex matching ``modules`` inside the language model's layers only.

        ``target_modules=["q_proj", ...]`` alone also hits the vision tower; this regex does not, and it
        still matches when the model sits under a wrapper (``base_model.model.``, ``backbone.model.``).
        """
        names = tuple(modules) if modules else self.default_lora_modules
        alternatives = "|".join(re.escape(name) for name in names)
        return rf"(?:.*\.)?{re.escape(self.decoder_layers_path)}\.\d+\.(?:.*\.)?(?:{alternatives})"


@dataclass(frozen=True)
class QwenVLAdapter(ArchitectureAdapter):
    """Qwen2-VL / Qwen2.5-VL: an image is <|vision_start|><|image_pad|><|vision_end|>; M-RoPE positions
    are computed by the model from ``mm_token_type_ids`` and the attention mask."""

    def image_placeholder(self, processor: Any) -> str:
        return f"<|vision_start|>{processor.image_token}<|vision_end|>"


@dataclass(frozen=True)
class Phi3VisionAdapter(ArchitectureAdapter):
    """Phi-3 / Phi-3.5-vision (native, or its remote code when asked for). Image tokens carry negative
    ids; the processor takes one prompt at a time, so a batch is processed row by row and padded here."""

    def image_placeholder(self, processor: Any) -> str:
        return "<|image_1|>"

    def image_token_mask(self, input_ids: Tensor, model_config: Any) -> Tensor:
        return input_ids < 0

    def model_inputs(self, inputs: Mapping[str, Tensor], dtype: torch.dtype, device: torch.device) -> dict:
        """As the base class, with a private copy of ``input_ids``: the remote code's image embedding
        clamps them in place (image ids become 0), which would otherwise erase the caller's image tokens."""
        out = super().model_inputs(inputs, dtype, device)
        out["input_ids"] = out["input_ids"].clone()
        return out

    def projector_modules_to_save(self, model: nn.Module) -> list[str]:
        """The projector's layers with parameters, not the projector: the remote code reads
        ``img_projection[0].bias`` when it is an ``nn.Sequential`` and ``img_projection.bias`` otherwise, so a
        peft wrapper around the whole Sequential (which has no ``bias``) breaks its forward."""
        projector = model.get_submodule(self.projector_path)
        if not isinstance(projector, nn.Sequential):
            return [self.projector_path]
        return [
            f"{self.projector_path}.{name}"
            for name, child in projector.named_children()
            if next(child.parameters(), None) is not None
        ]

    def prepare(self, processor: Any, images: Sequence[Any], texts: Sequence[str]) -> Mapping[str, Tensor]:
        rows = []
        for index, (image, text) in enumerate(zip(images, texts, strict=True)):
            try:
                rows.append(processor(text, [image], return_tensors="pt"))
            except ValueError as error:  # e.g. an image tag in the caption
                raise BackboneError(f"row {index}: {error}") from error
        tokenizer = processor.tokenizer
        return collate_rows(rows, pad_token_id=_pad_id(tokenizer), padding_side=tokenizer.padding_side)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise BackboneError("the tokenizer has neither a pad token nor an eos token to pad with")
    return int(pad)


def collate_rows(
    rows: Sequence[Mapping[str, Tensor]], *, pad_token_id: int, padding_side: str
) -> dict[str, Tensor]:
    """Merge processor outputs of single examples (each with a batch dim of 1) into one batch.

    ``input_ids`` are padded with ``pad_token_id`` and ``attention_mask`` with 0 on ``padding_side``;
    every other tensor is concatenated on dim 0 (it must have equal trailing shapes).
    """
    if not rows:
        raise BackboneError("cannot collate an empty batch")
    if padding_side not in ("left", "right"):
        raise BackboneError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(int(row["input_ids"].shape[-1]) for row in rows)
    batch: dict[str, list[Tensor]] = {}
    for index, row in enumerate(rows):
        for key in ("input_ids", "attention_mask"):
            if key not in row:
                raise BackboneError(f"processor output for row {index} has no {key!r}")
        for key, value in row.items():
            if not isinstance(value, Tensor):
                continue
            if key in ("input_ids", "attention_mask"):
                fill = pad_token_id if key == "input_ids" else 0
                gap = length - value.shape[-1]
                pad = (gap, 0) if padding_side == "left" else (0, gap)
                value = nn.functional.pad(value, pad, value=fill)
            batch.setdefault(key, []).append(value)
    merged: dict[str, Tensor] = {}
    for key, values in batch.items():
        if len(values) != len(rows):
            raise BackboneError(f"processor output {key!r} is missing in some rows of the batch")
        try:
            merged[key] = torch.cat(values, dim=0)
        except RuntimeError as error:
            shapes = [tuple(value.shape) for value in values]
            raise BackboneError(
                f"processor output {key!r} has unequal shapes across rows: {shapes}"
            ) from error
    return merged


LLAVA = ArchitectureAdapter(
    name="llava",
    model_types=("llava",),
    base_model_path="model",
    projector_path="model.multi_modal_projector",
    vision_tower_path="model.vision_tower",
    language_model_path="model.language_model",
    embeddings_capture="lm_input",
    embeddings_module_path="model.language_model",
)

#: LLaVA-NeXT keeps LLaVA's module layout (its image features are packed per crop before the LM).
LLAVA_NEXT = replace(LLAVA, name="llava_next", model_types=("llava_next",))

QWEN_VL = QwenVLAdapter(
    name="qwen_vl",
    model_types=("qwen2_vl", "qwen2_5_vl"),
    base_model_path="model",
    projector_path="model.visual.merger",
    vision_tower_path="model.visual",
    language_model_path="model.language_model",
    embeddings_capture="lm_input",
    embeddings_module_path="model.language_model",
    needs_position_ids=False,
)

#: Phi-3.5-vision loaded natively (reward.backbones.phi3v): the default for model_type "phi3_v".
PHI3_VISION = Phi3VisionAdapter(
    name="phi3_v",
    model_types=("phi3_v",),
    base_model_path="model",
    projector_path="model.vision_embed_tokens.img_projection",
    vision_tower_path="model.vision_embed_tokens.img_processor",
    language_model_path="model",
    embeddings_capture="module_output",
    embeddings_module_path="model.vision_embed_tokens",
    default_lora_modules=("qkv_proj", "o_proj"),
    auto_class="phi3v-native",
    accepts_pixel_tensors=False,  # the HD transform resizes and pads PIL images, as the paper's code does
    default_template="<|user|>\n{prompt}\n{image}<|end|>\n<|assistant|>\n",
)

#: The same family through the checkpoint's own modelling code (opt-in: ``trust_remote_code=True``).
PHI3_VISION_REMOTE = replace(PHI3_VISION, name="phi3_v_remote", remote_code=True, auto_class="causal-lm")

ADAPTERS: tuple[ArchitectureAdapter, ...] = (LLAVA, LLAVA_NEXT, QWEN_VL, PHI3_VISION)


def adapter_for_model_type(
    model_type: str | None, *, source: str, remote_code: bool = False
) -> ArchitectureAdapter:
    """The adapter for a config ``model_type``; a clear error naming ``source`` when unsupported.
    ``remote_code`` picks the checkpoint's own modelling code where the family has both paths."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            if remote_code and adapter is PHI3_VISION:
                return PHI3_VISION_REMOTE
            return adapter
    supported = sorted(t for adapter in ADAPTERS for t in adapter.model_types)
    raise BackboneError(f"{source}: model_type {model_type!r} is not supported; supported: {supported}")
