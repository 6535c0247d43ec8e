"""Stand-in for Phi-3.5-vision's ``image_processing_phi3_v.py`` (remote code), written for the tests.

Same outputs as published: ``pixel_values`` (images, num_crops + 1, 3, S, S) with the global view first,
then the sub-image crops row by row, zero-padded to ``num_crops + 1``; ``image_sizes`` (images, 2) as
(height, width) of the cropped canvas, multiples of S; ``num_img_tokens`` per image. The canvas is chosen
more simply than in the real processor (the crop grid closest to the aspect ratio, no padding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import ImageProcessingMixin


class Phi3VImageProcessor(ImageProcessingMixin):
    model_input_names = ["pixel_values", "image_sizes"]

    def __init__(self, num_crops: int = 4, crop_size: int = 16, patch_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.patch_size = patch_size

    def crop_grid(self, width: int, height: int) -> tuple[int, int]:
        """(rows, cols) with rows * cols <= num_crops closest to the aspect ratio; ties: more crops."""
        options = [
            (rows, cols)
            for rows in range(1, self.num_crops + 1)
            for cols in range(1, self.num_crops // rows + 1)
        ]
        target = math.log(width / height)
        return min(options, key=lambda rc: (round(abs(math.log(rc[1] / rc[0]) - target), 9), -rc[0] * rc[1]))

    def calc_num_image_tokens_from_image_size(self, width: int, height: int) -> int:
        """Crops' merged tokens with a newline per row, one separator, the global view with newlines."""
        rows, cols = self.crop_grid(width, height)
        side = self.crop_size // self.patch_size // 2
        return rows * side * (cols * side + 1) + 1 + side * (side + 1)

    def _to_tensor(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        array = np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.float32)
        return (torch.from_numpy(array).permute(2, 0, 1) / 255.0 - 0.5) / 0.5

    def __call__(self, images: Any, return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        images = images if isinstance(images, list | tuple) else [images]
        size = self.crop_size
        pixel_values, image_sizes, num_img_tokens = [], [], []
        for image in images:
            rows, cols = self.crop_grid(*image.size)
            canvas = self._to_tensor(image, cols * size, rows * size)
            tiles = canvas.unfold(1, size, size).unfold(2, size, size)  # (3, rows, cols, S, S)
            tiles = tiles.permute(1, 2, 0, 3, 4).reshape(rows * cols, 3, size, size)
            stack = torch.zeros(self.num_crops + 1, 3, size, size)
            stack[0] = self._to_tensor(image, size, size)
            stack[1 : 1 + rows * cols] = tiles
            pixel_values.append(stack)
            image_sizes.append([rows * size, cols * size])
            num_img_tokens.append(self.calc_num_image_tokens_from_image_size(*image.size))
        data = {
            "pixel_values": torch.stack(pixel_values),
            "image_sizes": torch.tensor(image_sizes, dtype=torch.long),
            "num_img_tokens": num_img_tokens,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)
