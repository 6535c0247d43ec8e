"""Stand-in for Phi-3.5-vision's ``configuration_phi3_v.py`` (remote code): same class name, model type
and the fields the rest of the stand-in reads. Written for the tests; not Microsoft's code."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class Phi3VConfig(PretrainedConfig):
    """A flat decoder config plus the two dicts Phi-3-V keeps its vision settings in.

    ``embd_layer``: how image features become embeddings (``projection_cls`` "mlp" with the HD transform
    and learnable separators, as published). ``img_processor``: the vision tower; the real one names a fixed
    CLIP ViT-L/14-336, the stand-in carries the sizes of a tiny CLIP tower instead.
    """

    model_type = "phi3_v"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 32,
        intermediate_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 4096,
        embd_pdrop: float = 0.0,
        initializer_range: float = 0.02,
        embd_layer: dict[str, Any] | None = None,
        img_processor: dict[str, Any] | None = None,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.embd_pdrop = embd_pdrop
        self.initializer_range = initializer_range
        self.embd_layer = embd_layer or {
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        }
        self.img_processor = img_processor or {
            "name": "clip_vision_model",
            "model_name": "stand-in/tiny-clip",
            "image_dim_out": 16,
            "image_size": 16,
            "patch_size": 4,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "layer_idx": -2,
            "type_feature": "patch",
        }
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)
