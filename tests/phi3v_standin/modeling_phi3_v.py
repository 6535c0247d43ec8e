"""Stand-in for Phi-3.5-vision's ``modeling_phi3_v.py`` (remote code), written for the tests.

It reproduces the published *interface*, not the model: ``Phi3VForCausalLM.model`` is a ``Phi3VModel``
with ``embed_tokens``, ``vision_embed_tokens`` (``img_processor``: a CLIP vision tower, ``img_projection``:
an MLP), ``layers.N.self_attn.{qkv_proj,o_proj}``, ``layers.N.mlp.{gate_up_proj,down_proj}`` and ``norm``.
Its forward takes ``input_ids, attention_mask, position_ids, pixel_values, image_sizes, use_cache,
output_hidden_states, return_dict``. Image tokens carry negative ids; ``vision_embed_tokens`` returns the
text embeddings with the projected image features written at those positions (sub-image crops with a
newline after each row, a global separator, then the global view, each 2x2 patch group merged into one
token). Two published behaviours are kept on purpose because callers must cope with them:

- ``vision_embed_tokens`` clamps ``input_ids`` **in place** (negative ids become 0);
- it reads the projection's dtype from ``img_projection[0].bias`` when it is an ``nn.Sequential``, else
  from ``img_projection.bias``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_phi3_v import Phi3VConfig

#: Image tokens are the ids in (-MAX_INPUT_ID, 0).
MAX_INPUT_ID = int(1e9)


class Phi3RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (x.float() * scale).to(x.dtype)


def _rotate(x: Tensor, position_ids: Tensor, theta: float) -> Tensor:
    """Rotary position embedding of (B, heads, L, D) at (B, L) positions."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = position_ids.float()[:, None, :, None] * freqs  # (B, 1, L, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class Phi3Attention(nn.Module):
    """Causal self-attention with one fused ``qkv_proj`` and an ``o_proj``, as in Phi-3."""

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        self.theta = config.rope_theta
        width = (self.heads + 2 * self.kv_heads) * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: Tensor, mask: Tensor, position_ids: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv_proj(x).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1
        )
        q = _rotate(q.view(batch, length, self.heads, -1).transpose(1, 2), position_ids, self.theta)
        k = _rotate(k.view(batch, length, self.kv_heads, -1).transpose(1, 2), position_ids, self.theta)
        v = v.view(batch, length, self.kv_heads, -1).transpose(1, 2)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class Phi3MLP(nn.Module):
    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * nn.functional.silu(gate))


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        self.self_attn = Phi3Attention(config)
        self.mlp = Phi3MLP(config)
        self.input_layernorm = Phi3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Phi3RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, mask: Tensor, position_ids: Tensor) -> tuple[Tensor]:
        x = x + self.self_attn(self.input_layernorm(x), mask, position_ids)
        return (x + self.mlp(self.post_attention_layernorm(x)),)  # a tuple, like the published layer


class Phi3ImageEmbedding(nn.Module):
    """Token embeddings with projected image features at the negative-id positions."""

    def __init__(self, config: Phi3VConfig, wte: nn.Embedding) -> None:
        super().__init__()
        vision = config.img_processor
        # The token embeddings are the model's ``embed_tokens``; kept out of this module's tree so that
        # they are saved once (the published class registers them twice; transformers 5's save_pretrained
        # refuses such shared weights unless the model declares them tied).
        object.__setattr__(self, "wte", wte)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.layer_idx = vision.get("layer_idx", -2)
        self.img_processor = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=vision["image_dim_out"],
                intermediate_size=2 * vision["image_dim_out"],
                num_hidden_layers=vision["num_hidden_layers"],
                num_attention_heads=vision["num_attention_heads"],
                image_size=vision["image_size"],
                patch_size=vision["patch_size"],
            )
        )
        self.image_dim_out = vision["image_dim_out"]
        merged = 4 * self.image_dim_out  # 2x2 patches merged into the channel dimension
        self.glb_GN = nn.Parameter(torch.randn(1, 1, merged) * 0.02)
        self.sub_GN = nn.Parameter(torch.randn(1, 1, 1, merged) * 0.02)
        self.img_projection = nn.Sequential(
            nn.Linear(merged, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def _projection_dtype(self) -> torch.dtype:
        # As published: breaks when a wrapper (e.g. peft's modules_to_save) replaces the Sequential.
        if isinstance(self.img_projection, nn.Sequential):
            return self.img_projection[0].bias.dtype
        return self.img_projection.bias.dtype

    def _patch_grid(self, crops: Tensor) -> Tensor:
        """(N, 3, S, S) crops -> (N, g/2, g/2, 4C): the chosen CLIP layer's patches, 2x2 groups merged."""
        hidden = self.img_processor(crops, output_hidden_states=True).hidden_states[self.layer_idx][:, 1:]
        count, tokens, channels = hidden.shape
        side = int(tokens**0.5)
        grid = hidden.reshape(count, side // 2, 2, side // 2, 2, channels).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(count, side // 2, side // 2, 4 * channels)

    def _with_newlines(self, grid: Tensor) -> Tensor:
        """(h, w, C) -> (h * (w + 1), C): ``sub_GN`` after every row."""
        rows = grid.shape[0]
        return torch.cat([grid, self.sub_GN[0].expand(rows, 1, -1)], dim=1).reshape(-1, grid.shape[-1])

    def _image_tokens(self, pixel_values: Tensor, image_sizes: Tensor) -> Tensor:
        """All images' tokens, in order, before projection: (sum of tokens, 4C)."""
        crop = pixel_values.shape[-1]
        grids = self._patch_grid(pixel_values.flatten(0, 1)).unflatten(0, pixel_values.shape[:2])
        pieces = []
        for index, (height, width) in enumerate(image_sizes.tolist()):
            rows, cols = height // crop, width // crop
            tiles = grids[index, 1 : 1 + rows * cols]  # (rows*cols, m, m, 4C), row-major crops
            side = tiles.shape[1]
            tiles = tiles.reshape(rows, cols, side, side, -1).permute(0, 2, 1, 3, 4)
            pieces += [
                self._with_newlines(tiles.reshape(rows * side, cols * side, -1)),
                self.glb_GN[0],
                self._with_newlines(grids[index, 0]),
            ]
        return torch.cat(pieces, dim=0)

    def forward(self, input_ids: Tensor, pixel_values: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        positions = torch.nonzero((input_ids < 0) & (input_ids > -MAX_INPUT_ID), as_tuple=True)
        input_ids.clamp_min_(0).clamp_max_(self.wte.num_embeddings - 1)  # in place, as published
        hidden = self.wte(input_ids)
        if positions[0].numel():
            features = self._image_tokens(pixel_values, image_sizes).to(self._projection_dtype())
            hidden = hidden.index_put(positions, self.img_projection(features).to(hidden.dtype))
        return self.drop(hidden)


class Phi3VPreTrainedModel(PreTrainedModel):
    config_class = Phi3VConfig
    base_model_prefix = "model"
    _no_split_modules = ["Phi3DecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)


def _attention_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, L) padding mask -> (B, L, L) additive causal mask; every query may see itself (no empty rows)."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal & attention_mask.bool()[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


class Phi3VModel(Phi3VPreTrainedModel):
    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.vision_embed_tokens = Phi3ImageEmbedding(config, wte=self.embed_tokens)
        self.layers = nn.ModuleList(Phi3DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = Phi3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_sizes: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            if pixel_values is not None and image_sizes is not None:
                inputs_embeds = self.vision_embed_tokens(
                    input_ids, pixel_values=pixel_values, image_sizes=image_sizes
                )
            else:
                inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device).expand(batch, -1)
        mask = _attention_mask(attention_mask, inputs_embeds.dtype)
        hidden, states = inputs_embeds, []
        for layer in self.layers:
            states.append(hidden)
            hidden = layer(hidden, mask, position_ids.view(-1, length))[0]
        hidden = self.norm(hidden)
        states.append(hidden)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden, hidden_states=tuple(states) if output_hidden_states else None
        )


class Phi3VForCausalLM(Phi3VPreTrainedModel):
    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids: Tensor | None = None, labels: Tensor | None = None, **kwargs: Any) -> Any:
        output = self.model(input_ids=input_ids, **kwargs)
        return CausalLMOutputWithPast(
            logits=self.lm_head(output.last_hidden_state), hidden_states=output.hidden_states
        )
