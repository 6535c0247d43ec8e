"""Phi-3.5-vision as transformers 5 modules, with the published parameter names.

- :class:`Phi3VImageEmbedding` (``model.vision_embed_tokens``): token embeddings with the projected image
  features written over the image positions (negative ids). Image features: CLIP patch features of the
  chosen layer, 2 x 2 patches merged into the channel dimension, crops assembled row-major with a
  ``sub_GN`` separator after every row, ``glb_GN`` between the crops and the global view, then
  ``img_projection`` (Linear, GELU, Linear).
- :class:`Phi3VModel`: transformers' :class:`Phi3Model` fed by that embedding.
- :class:`Phi3VForCausalLM`: the model plus ``lm_head``; loads the published safetensors as they are.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPVisionModel
from transformers.models.phi3.modeling_phi3 import Phi3Model, Phi3PreTrainedModel

from reward.backbones.phi3v.config import (
    Phi3VConfig,
    hd_transform_order,
    image_feature_layer,
    keeps_cls_token,
    vision_tower_config,
)


class _FeaturesReady(Exception):
    """Raised by a forward hook once the wanted CLIP layer has run (ends the tower's pass early)."""


def _submodule_ending(module: nn.Module, suffix: str) -> Any:
    """The submodule whose path ends with ``suffix`` (CLIP's paths differ across transformers versions)."""
    for name, child in module.named_modules():
        if name == suffix or name.endswith("." + suffix):
            return child
    raise ValueError(f"{type(module).__name__} has no submodule ending with {suffix!r}")


class Phi3VImageEmbedding(nn.Module):
    """Token embeddings plus projected HD image features at the image positions."""

    def __init__(self, config: Phi3VConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        # The token embedding table belongs to the language model; kept out of this module's tree so the
        # weights are registered (and saved) once.
        object.__setattr__(self, "_embed_tokens", embed_tokens)
        vision = vision_tower_config(config)
        self.img_processor = CLIPVisionModel(vision)
        self.layer_idx = image_feature_layer(config)
        self.keep_cls = keeps_cls_token(config)
        self.order = hd_transform_order(config)
        self.crop_size = int(vision.image_size)
        width = int((config.img_processor or {}).get("image_dim_out", vision.hidden_size))
        merged = 4 * width
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))
        self.img_projection = nn.Sequential(
            nn.Linear(merged, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        self.drop = nn.Dropout(config.embd_pdrop)

    # ------------------------------------------------------------------ image features
    def clip_features(self, views: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, T, C): the CLIP hidden state ``layer_idx`` (indexed like HF ``hidden_states``).

        The tower stops after that layer (a forward hook ends the pass), so the layers after it (the last one,
        with the published ``layer_idx=-2``) cost nothing.
        """
        layers = _submodule_ending(self.img_processor, "encoder.layers")
        index = self.layer_idx % (len(layers) + 1)
        source = _submodule_ending(self.img_processor, "pre_layrnorm") if index == 0 else layers[index - 1]
        captured: list[Tensor] = []

        def stop(_module: nn.Module, _args: tuple, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _FeaturesReady

        handle = source.register_forward_hook(stop)
        try:
            self.img_processor(views.to(next(self.img_processor.parameters()).dtype))
        except _FeaturesReady:
            pass
        finally:
            handle.remove()
        return captured[0]

    def patch_grids(self, views: Tensor) -> Tensor:
        """(N, 3, S, S) views -> (N, g, g, 4C): the chosen CLIP layer's patches, 2 x 2 groups merged."""
        states = self.clip_features(views)
        if not self.keep_cls:
            states = states[:, 1:]
        count, tokens, channels = states.shape
        side = math.isqrt(tokens)
        if side * side != tokens or side % 2:
            raise ValueError(f"CLIP gave {tokens} patch tokens per view; expected an even square grid")
        grid = states.reshape(count, side // 2, 2, side // 2, 2, channels).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(count, side // 2, side // 2, 4 * channels)

    def _rows_with_separator(self, grid: Tensor) -> Tensor:
        """(h, w, D) -> (h * (w + 1), D): ``sub_GN`` after every row."""
        separator = self.sub_GN.reshape(1, 1, -1).expand(grid.shape[0], 1, -1).to(grid.dtype)
        return torch.cat([grid, separator], dim=1).reshape(-1, grid.shape[-1])

    def image_features(self, pixel_values: Tensor, image_sizes: Tensor) -> list[Tensor]:
        """Each image's merged tokens before projection, (tokens_i, 4C). Only the views an image uses
        (the global one and rows x cols crops) go through CLIP; zero padding views are skipped."""
        crop = self.crop_size
        shapes = [(int(h) // crop, int(w) // crop) for h, w in image_sizes.tolist()]
        views = torch.cat([pixel_values[i, : 1 + rows * cols] for i, (rows, cols) in enumerate(shapes)])
        grids = self.patch_grids(views)
        out, start = [], 0
        for rows, cols in shapes:
            global_grid, tiles = grids[start], grids[start + 1 : start + 1 + rows * cols]
            start += 1 + rows * cols
            side = tiles.shape[1]
            tiles = tiles.reshape(rows, cols, side, side, -1).permute(0, 2, 1, 3, 4)
            sub = self._rows_with_separator(tiles.reshape(rows * side, cols * side, -1))
            glb = self._rows_with_separator(global_grid)
            separator = self.glb_GN.reshape(1, -1).to(sub.dtype)
            parts = [sub, separator, glb] if self.order == "sub_glb" else [glb, separator, sub]
            out.append(torch.cat(parts, dim=0))
        return out

    def project(self, features: Tensor) -> Tensor:
        """``img_projection`` in its own dtype."""
        return self.img_projection(features.to(self.img_projection[0].weight.dtype))

    # ------------------------------------------------------------------ forward
    def forward(
        self, input_ids: Tensor, pixel_values: Tensor | None = None, image_sizes: Tensor | None = None
    ) -> Tensor:
        """(B, L) ids with negative image positions -> (B, L, H) input embeddings. ``input_ids`` is not
        modified (the published code clamps it in place)."""
        image_mask = input_ids < 0
        table = self._embed_tokens
        embeddings = table(input_ids.clamp(min=0, max=table.num_embeddings - 1))
        if bool(image_mask.any()):
            if pixel_values is None or image_sizes is None:
                raise ValueError(
                    "input_ids have image positions but no pixel_values / image_sizes were given"
                )
            per_image = self.image_features(pixel_values, image_sizes)
            counts = image_mask.sum(dim=1).tolist()
            wanted = [int(features.shape[0]) for features in per_image]
            if counts != wanted:
                raise ValueError(
                    f"image positions per row {counts} do not match the image tokens per image {wanted} "
                    "(one image per row, processed by Phi3VProcessor)"
                )
            projected = self.project(torch.cat(per_image, dim=0)).to(embeddings.dtype)
            rows, cols = image_mask.nonzero(as_tuple=True)
            embeddings = embeddings.index_put((rows, cols), projected)
        return self.drop(embeddings)


def _init_separators(module: nn.Module) -> bool:
    """Zero ``glb_GN`` / ``sub_GN`` (as published); True when ``module`` was the image embedding."""
    if isinstance(module, Phi3VImageEmbedding):
        nn.init.zeros_(module.glb_GN)
        nn.init.zeros_(module.sub_GN)
        return True
    return False


class Phi3VModel(Phi3Model):
    """Phi-3 decoder whose input embeddings come from :class:`Phi3VImageEmbedding`."""

    config_class = Phi3VConfig

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.vision_embed_tokens = Phi3VImageEmbedding(config, self.embed_tokens)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if not _init_separators(module):
            super()._init_weights(module)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_sizes: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.vision_embed_tokens(input_ids, pixel_values, image_sizes)
        return super().forward(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )


class Phi3VForCausalLM(Phi3PreTrainedModel):
    """Phi-3.5-vision: :class:`Phi3VModel` + ``lm_head``, as published (``model.*``, ``lm_head.weight``)."""

    config_class = Phi3VConfig
    _no_split_modules = ["Phi3DecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if not _init_separators(module):
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids: Tensor | None = None, **kwargs: Any) -> Any:
        """Logits over the vocabulary (the reward model uses :attr:`model` directly)."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        output = self.model(input_ids=input_ids, **kwargs)
        return CausalLMOutputWithPast(
            logits=self.lm_head(output.last_hidden_state), hidden_states=output.hidden_states
        )


__all__ = ["Phi3VForCausalLM", "Phi3VImageEmbedding", "Phi3VModel"]
