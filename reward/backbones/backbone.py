"""The :class:`Backbone`: a vision-language model, its processor and its architecture adapter.

``prepare(images, prompts)`` turns raw inputs into tensors (processor work, fit for a data
collator); ``forward(inputs)`` runs the base model once (no LM head, no cache) and returns a
:class:`BackboneOutput` with ``e_h`` and ``e_v``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from reward.backbones.adapters import ArchitectureAdapter, BackboneError
from reward.backbones.features import BackboneOutput, gather_last_token, gather_visual_tokens
from reward.backbones.templates import TemplateError, render_profile
from reward.config import BackboneConfig

FALLBACK_TEMPLATE = "{prompt}\n{image}"


def check_pixel_tensor(image: Tensor, name: str) -> None:
    """Raise a :class:`BackboneError` naming ``name`` unless ``image`` is a uint8 (3, H, W) tensor."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise BackboneError(
            f"{name}: an image tensor must be uint8 (3, H, W), got {str(image.dtype).removeprefix('torch.')} "
            f"{tuple(image.shape)}"
        )


#: Distinct prompts whose rendered text a backbone remembers (cleared when full).
RENDER_CACHE_SIZE = 100_000


class Backbone(nn.Module):
    """A loaded vision-language model with feature extraction for reward modelling."""

    def __init__(
        self, model: nn.Module, processor: Any, adapter: ArchitectureAdapter, config: BackboneConfig
    ) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.config = config
        self.feature_layer = self._resolve_layer(config.hidden_layer)
        self._rendered: dict[str, str] = {}

    # ----------------------------------------------------------------- structure
    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        """Width of e_h and e_v (the language model's hidden size)."""
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.model.get_submodule(self.adapter.decoder_layers_path))

    @property
    def projector(self) -> nn.Module:
        return self.model.get_submodule(self.adapter.projector_path)

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.get_submodule(self.adapter.vision_tower_path)

    @property
    def language_model(self) -> nn.Module:
        return self.model.get_submodule(self.adapter.language_model_path)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def lora_target_regex(self, modules: Sequence[str] | None = None) -> str:
        """peft ``target_modules`` regex restricted to the language model (see the adapter)."""
        return self.adapter.lora_target_regex(modules)

    def _resolve_layer(self, layer: int) -> int:
        """Map an HF ``hidden_states`` index (negative allowed) to 0..num_layers."""
        count = self.num_layers
        if not -(count + 1) <= layer <= count:
            raise BackboneError(
                f"{self.config.name_or_path}: hidden_layer={layer} is out of range for a language model "
                f"with {count} layers (valid: {-(count + 1)}..{count})"
            )
        return layer % (count + 1)

    # ----------------------------------------------------------------- inputs
    @property
    def image_placeholder(self) -> str:
        return self.adapter.image_placeholder(self.processor)

    def render_prompt(self, prompt: str) -> str:
        """The text of one example: the prompt, then the image placeholder (prompt first helps).
        Rendered once per distinct prompt (a chat template is a Jinja render: ~0.1 ms each)."""
        rendered = self._rendered.get(prompt)
        if rendered is None:
            if len(self._rendered) >= RENDER_CACHE_SIZE:
                self._rendered.clear()
            rendered = self._rendered[prompt] = self._render(prompt)
        return rendered

    def _render(self, prompt: str) -> str:
        if self.config.template_profile is not None:
            try:
                return render_profile(
                    self.config.template_profile, prompt, self.image_placeholder, self.processor.tokenizer
                )
            except TemplateError as error:
                raise BackboneError(f"{self.config.name_or_path}: {error}") from error
        template = self.config.prompt_template or self.adapter.default_template
        if template is not None:
            return template.format(prompt=prompt, image=self.image_placeholder)
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image"}]}]
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return FALLBACK_TEMPLATE.format(prompt=prompt, image=self.image_placeholder)

    def prepare(self, images: Sequence[Image.Image | Tensor], prompts: Sequence[str]) -> Mapping[str, Tensor]:
        """Processor outputs (CPU tensors) for a batch of (image, prompt) pairs. An image is a PIL image
        or a uint8 (3, H, W) tensor (e.g. a sampler's output), which reaches the processor without a PIL
        round trip where the architecture's processor takes tensors."""
        if len(images) != len(prompts):
            raise BackboneError(f"got {len(images)} images but {len(prompts)} prompts")
        if not images:
            raise BackboneError("cannot prepare an empty batch")
        image_token = getattr(self.processor, "image_token", None) or self.image_placeholder
        pixels = []
        for index, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            if not isinstance(prompt, str):
                raise BackboneError(f"prompts[{index}] must be a string, got {type(prompt).__name__}")
            if image_token in prompt:
                raise BackboneError(
                    f"prompts[{index}] contains the image token {image_token!r}; "
                    "the image is inserted by the prompt template"
                )
            pixels.append(self._processor_image(image, index))
        texts = [self.render_prompt(prompt) for prompt in prompts]
        return self.adapter.prepare(self.processor, pixels, texts)

    def _processor_image(self, image: Image.Image | Tensor, index: int) -> Image.Image | Tensor:
        """An RGB PIL image, or a checked uint8 (3, H, W) tensor in the form the processor takes."""
        if isinstance(image, Image.Image):
            return image if image.mode == "RGB" else image.convert("RGB")
        if not isinstance(image, Tensor):
            raise BackboneError(
                f"images[{index}] must be a PIL image or a uint8 (3, H, W) tensor, got {type(image).__name__}"
            )
        check_pixel_tensor(image, f"images[{index}]")
        if self.adapter.accepts_pixel_tensors:
            return image.cpu()
        return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())

    # ----------------------------------------------------------------- forward
    @contextmanager
    def _capture(self, store: dict[str, Tensor]) -> Iterator[None]:
        """Hooks that record the language model's input embeddings and, if needed, one layer's output."""
        handles = []
        embeddings_module = self.model.get_submodule(self.adapter.embeddings_module_path)
        if self.adapter.embeddings_capture == "lm_input":

            def read_input(_module: nn.Module, _args: tuple, kwargs: dict) -> None:
                if kwargs.get("inputs_embeds") is None:
                    raise BackboneError(
                        "the language model was called without inputs_embeds; cannot read e_v"
                    )
                store["embeddings"] = kwargs["inputs_embeds"]

            handles.append(embeddings_module.register_forward_pre_hook(read_input, with_kwargs=True))
        else:

            def read_output(_module: nn.Module, _args: tuple, output: Any) -> None:
                store["embeddings"] = output[0] if isinstance(output, tuple) else output

            handles.append(embeddings_module.register_forward_hook(read_output))
        if 0 < self.feature_layer < self.num_layers:
            layer = self.model.get_submodule(self.adapter.decoder_layers_path)[self.feature_layer - 1]

            def read_layer(_module: nn.Module, _args: tuple, output: Any) -> None:
                store["layer"] = output[0] if isinstance(output, tuple) else output

            handles.append(layer.register_forward_hook(read_layer))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, inputs: Mapping[str, Tensor], *, return_sequence: bool = False) -> BackboneOutput:
        """One forward of the base model (no LM head, no cache).

        Args:
            inputs: the output of :meth:`prepare` (on any device).
            return_sequence: also return the chosen layer's full (B, L, H) hidden states (for mean pooling).
        """
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise BackboneError("inputs need 'input_ids' and 'attention_mask' (use Backbone.prepare)")
        kwargs = self.adapter.model_inputs(inputs, self.dtype, self.device)
        # Read before the forward: Phi-3-V's remote code clamps the (negative) image ids in place.
        image_mask = self.adapter.image_token_mask(kwargs["input_ids"], self.model.config)
        base = self.model.get_submodule(self.adapter.base_model_path)
        store: dict[str, Tensor] = {}
        with self._capture(store):
            output = base(**kwargs, use_cache=False, return_dict=True)
        if "embeddings" not in store:
            raise BackboneError(f"{self.config.name_or_path}: the input embeddings were not observed")
        embeddings = store["embeddings"]
        if self.feature_layer == self.num_layers:
            hidden = output.last_hidden_state
        elif self.feature_layer == 0:
            hidden = embeddings
        else:
            hidden = store["layer"]
        attention_mask = kwargs["attention_mask"]
        e_h, last_index = gather_last_token(hidden, attention_mask)
        e_v, e_v_mask = gather_visual_tokens(embeddings, image_mask)
        return BackboneOutput(
            e_h=e_h,
            e_v=e_v,
            e_v_mask=e_v_mask,
            attention_mask=attention_mask,
            last_index=last_index,
            sequence=hidden if return_sequence else None,
        )

    def encode(
        self, images: Sequence[Image.Image], prompts: Sequence[str], *, return_sequence: bool = False
    ) -> BackboneOutput:
        """:meth:`prepare` then :meth:`forward`."""
        return self(self.prepare(images, prompts), return_sequence=return_sequence)
