"""Phi-3.5-vision's processor: text with ``<|image_N|>`` tags + images -> model inputs.

As published: the text is split at the image tags and each chunk is tokenized on its own (so with a
Llama-style tokenizer every chunk starts with BOS), and image ``N`` is written as ``-N`` repeated once
per image token. One text at a time; :class:`reward.backbones.adapters.Phi3VisionAdapter` batches rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature

from reward.backbones.phi3v.image_processing import Phi3VImageProcessor

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")


class Phi3VProcessor:
    """Tokenizer + :class:`Phi3VImageProcessor` with Phi-3-V's negative image ids."""

    #: The tag that stands for the first (only) image of a prompt.
    image_token = "<|image_1|>"

    def __init__(self, image_processor: Phi3VImageProcessor, tokenizer: Any) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(
        self, text: str, images: Sequence[Image.Image] | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """``input_ids`` / ``attention_mask`` (1, L); with images also ``pixel_values``, ``image_sizes``."""
        if not isinstance(text, str):
            raise ValueError(f"Phi-3-V's processor takes one text at a time, got {type(text).__name__}")
        images = list(images or [])
        tags = [int(number) for number in IMAGE_TAG.findall(text)]
        if sorted(tags) != list(range(1, len(images) + 1)):
            raise ValueError(
                f"the text's image tags {[f'<|image_{n}|>' for n in tags]} do not name images "
                f"1..{len(images)} once each"
            )
        data: dict[str, Any] = {}
        image_tokens: list[int] = []
        if images:
            pixels = self.image_processor(images)
            data["pixel_values"] = pixels["pixel_values"]
            data["image_sizes"] = pixels["image_sizes"]
            image_tokens = pixels["num_img_tokens"]
        ids: list[int] = []
        chunks = IMAGE_TAG.split(text)  # text, number, text, number, ..., text
        for position, chunk in enumerate(chunks):
            if position % 2 == 0:
                ids.extend(self.tokenizer(chunk).input_ids)
            else:
                number = int(chunk)
                ids.extend([-number] * image_tokens[number - 1])
        data["input_ids"] = torch.tensor([ids], dtype=torch.long)
        data["attention_mask"] = torch.ones_like(data["input_ids"])
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["IMAGE_TAG", "Phi3VProcessor"]
