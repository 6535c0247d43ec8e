"""Stand-in for Phi-3.5-vision's ``processing_phi3_v.py`` (remote code), written for the tests.

Published interface: ``processor(text, images, return_tensors="pt")`` for **one** prompt whose images
are written ``<|image_1|>``, ``<|image_2|>``, ...; each tag becomes ``num_img_tokens`` copies of ``-k``
(negative ids); returns ``input_ids``, ``attention_mask``, ``pixel_values`` and ``image_sizes``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")


class Phi3VProcessor(ProcessorMixin):
    def __init__(self, image_processor: Any, tokenizer: Any) -> None:
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        text: str,
        images: Any = None,
        padding: bool = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        if not images:
            encoded = self.tokenizer(text, padding=padding, truncation=truncation, max_length=max_length)
            return BatchFeature(data=dict(encoded), tensor_type=return_tensors)
        image_inputs = self.image_processor(images, return_tensors="pt")
        tags = [int(number) for number in IMAGE_TAG.findall(text)]
        if sorted(set(tags)) != list(range(1, len(images) + 1)):
            raise ValueError(f"image tags {tags} must number the {len(images)} images 1..{len(images)}")
        chunks = [self.tokenizer(chunk)["input_ids"] for chunk in IMAGE_TAG.split(text)[::2]]
        ids: list[int] = list(chunks[0])
        for tag, chunk in zip(tags, chunks[1:], strict=True):
            ids += [-tag] * int(image_inputs["num_img_tokens"][tag - 1]) + list(chunk)
        input_ids = torch.tensor([ids], dtype=torch.long)
        data = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": image_inputs["pixel_values"],
            "image_sizes": image_inputs["image_sizes"],
        }
        return BatchFeature(data=data, tensor_type=return_tensors)
