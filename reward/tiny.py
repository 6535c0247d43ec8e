"""Tiny random-weight vision-language checkpoints, built offline from configs (tests, demo, CI).

``build_tiny_backbone(out_dir, arch=...)`` writes a folder that loads through the same
:func:`reward.backbones.load_backbone` path as a real checkpoint: ``config.json`` + safetensors
weights, a word-level tokenizer over the demo corpus' vocabulary, an image processor and a processor
with a chat template that puts the prompt before the image and ends with ``</s>`` (so ``e_h`` is read
at an end-of-sequence token, as in the paper). Same arguments and seed give the same weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

ARCHITECTURES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")
#: File that marks a folder as a tiny random-weight backbone (read by the evaluation's provenance).
TINY_MARKER = "tiny_random_weights.json"

BASE_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
LLAVA_IMAGE_TOKEN = "<image>"
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")

#: Words of the synthetic demo corpus (counts, colours, shapes, spatial relations) plus common words.
VOCABULARY: tuple[str, ...] = tuple(
    """
    one two three four five six 1 2 3 4 5 6 single pair couple several many no some
    red green blue yellow purple orange black white gray grey brown pink cyan magenta colored coloured
    circle circles square squares triangle triangles star stars cross crosses shape shapes
    dot dots disc discs box boxes rectangle rectangles object objects
    to the left of right above below next beside under over on top bottom middle center centre
    between near far behind in front
    a an and or with without at is are there this that it its image photo picture drawing painting
    scene showing shows containing contains depicting of for by from background foreground canvas
    small large big tiny huge little bright dark light plain simple clean sharp clear blurry blurred
    noisy noise jpeg artifacts high low quality good bad real realistic sketch style
    , . : ; ! ? ' " - ( )
    """.split()
)


def _vocabulary(extra_words: Iterable[str]) -> list[str]:
    words = {word.lower() for word in VOCABULARY} | {word.lower() for word in extra_words}
    return sorted(words)


def build_tokenizer(
    special_tokens: Iterable[str], extra_words: Iterable[str] = (), named_tokens: dict[str, str] | None = None
) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer: special tokens first (``<pad>`` = 0), then words in sorted
    order, unknown words map to ``<unk>``. Built from a fixed word list, so ids are deterministic.
    ``named_tokens`` (e.g. ``{"image_token": "<image>"}``) become tokenizer attributes, as in real
    checkpoints, where processors look them up."""
    specials = list(dict.fromkeys([*BASE_SPECIAL_TOKENS, *special_tokens]))
    words = [word for word in _vocabulary(extra_words) if word not in specials]
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=dict(named_tokens or {}),
    )


def _chat_template(image_text: str) -> str:
    """Renders '<s>{prompt} {image} </s>': the prompt before the image, e_h read at </s>."""
    return (
        "<s>{% for message in messages %}{% for item in message['content'] %}"
        "{% if item['type'] == 'text' %}{{ item['text'] }} "
        f"{{% elif item['type'] == 'image' %}}{image_text} "
        "{% endif %}{% endfor %}{% endfor %}</s>"
    )


def _llama_text_config(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _clip_vision_config(
    hidden: int, layers: int, heads: int, image_size: int, patch_size: int
) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies over (time, height, width) like Qwen's 16/24/24 of 64."""
    half = head_dim // 2
    time = half // 4
    height = (half - time) // 2
    return [time, height, half - time - height]


def _qwen_text_config(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int
) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": _mrope_section(hidden // heads),
        },
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _build_llava(tokenizer, hidden, layers, heads, image_size, patch_size):  # noqa: ANN001, ANN202
    image_id = tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=_clip_vision_config(hidden, layers, heads, image_size, patch_size),
        text_config=_llama_text_config(tokenizer, hidden, layers, heads),
        image_token_id=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_chat_template(LLAVA_IMAGE_TOKEN),
    )
    return LlavaForConditionalGeneration(config), processor


def _build_llava_next(tokenizer, hidden, layers, heads, image_size, patch_size):  # noqa: ANN001, ANN202
    image_id = tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN)
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(hidden, layers, heads, image_size, patch_size),
        text_config=_llama_text_config(tokenizer, hidden, layers, heads),
        image_token_id=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=pinpoints,
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_chat_template(LLAVA_IMAGE_TOKEN),
    )
    return LlavaNextForConditionalGeneration(config), processor


def _qwen_processor(processor_class, tokenizer, image_size, patch_size):  # noqa: ANN001, ANN202
    merge = 2
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=(patch_size * merge) ** 2,
        max_pixels=image_size * image_size,
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=merge, temporal_patch_size=2)
    start, pad, end, _ = QWEN_VISION_TOKENS
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_chat_template(f"{start}{pad}{end}"),
    )


def _qwen_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    start, pad, end, video = (tokenizer.convert_tokens_to_ids(token) for token in QWEN_VISION_TOKENS)
    return {
        "image_token_id": pad,
        "video_token_id": video,
        "vision_start_token_id": start,
        "vision_end_token_id": end,
    }


def _build_qwen2_vl(tokenizer, hidden, layers, heads, image_size, patch_size):  # noqa: ANN001, ANN202
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(tokenizer, hidden, layers, heads),
        vision_config={
            "depth": layers,
            "embed_dim": hidden,
            "hidden_size": hidden,
            "mlp_ratio": 2,
            "num_heads": heads,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **_qwen_ids(tokenizer),
    )
    processor = _qwen_processor(Qwen2VLProcessor, tokenizer, image_size, patch_size)
    return Qwen2VLForConditionalGeneration(config), processor


def _build_qwen2_5_vl(tokenizer, hidden, layers, heads, image_size, patch_size):  # noqa: ANN001, ANN202
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tokenizer, hidden, layers, heads),
        vision_config={
            "depth": layers,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_heads": heads,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [layers - 1],
            # One attention window covers a whole image_size x image_size image.
            "window_size": image_size,
        },
        **_qwen_ids(tokenizer),
    )
    processor = _qwen_processor(Qwen2_5_VLProcessor, tokenizer, image_size, patch_size)
    return Qwen2_5_VLForConditionalGeneration(config), processor


_BUILDERS = {
    "llava": (_build_llava, (LLAVA_IMAGE_TOKEN,), {"image_token": LLAVA_IMAGE_TOKEN}),
    "llava_next": (_build_llava_next, (LLAVA_IMAGE_TOKEN,), {"image_token": LLAVA_IMAGE_TOKEN}),
    "qwen2_vl": (_build_qwen2_vl, QWEN_VISION_TOKENS, {"image_token": "<|image_pad|>"}),
    "qwen2_5_vl": (_build_qwen2_5_vl, QWEN_VISION_TOKENS, {"image_token": "<|image_pad|>"}),
}


def build_tiny_backbone(
    out_dir: str | Path,
    arch: str = "llava",
    *,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    extra_words: Iterable[str] = (),
) -> Path:
    """Write a tiny random-weight checkpoint of ``arch`` to ``out_dir`` and return the folder.

    Vision tower and language model both have ``hidden_size`` width and ``num_layers`` layers. Images
    are processed at ``image_size`` pixels with ``patch_size`` patches (LLaVA: (image_size/patch_size)^2
    visual tokens; Qwen merges 2x2 patches). ``extra_words`` extend the tokenizer's vocabulary.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} must split into {num_heads} heads of even width")
    step = patch_size * (2 if arch.startswith("qwen") else 1)
    if image_size % step:
        raise ValueError(f"image_size={image_size} must be a multiple of {step} for {arch}")
    builder, special_tokens, named_tokens = _BUILDERS[arch]
    tokenizer = build_tokenizer(special_tokens, extra_words, named_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder(tokenizer, hidden_size, num_layers, num_heads, image_size, patch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    marker = {"random_weights": True, "arch": arch, "seed": seed}
    (out / TINY_MARKER).write_text(json.dumps(marker) + "\n")
    return out
