"""Phi-3.5-vision's image preprocessing (the "HD transform"), written from its published behaviour.

One image becomes a global view plus a grid of crops, each ``crop_size`` (336) pixels square:

1. a portrait image is transposed, so the long side is the width;
2. the largest scale ``s`` with ``s * ceil(s / ratio) <= num_crops`` (ratio = width / height) sets the
   size: the image is resized (Pillow bilinear, which antialiases) to width ``s * crop`` and height
   ``int(s * crop / ratio)``, then padded with white to a multiple of ``crop`` in height (centred, the
   extra row at the bottom) and transposed back;
3. ToTensor + CLIP normalisation; the global view is a bicubic resize of that normalised image to
   ``crop x crop``; the crops are cut row-major;
4. ``pixel_values`` = [global, crops...] zero-padded to ``num_crops + 1`` views; ``image_sizes`` = the
   padded image's (height, width).

An image of ``rows x cols`` crops takes ``(rows * cols + 1) * t + 1 + (rows + 1) * sqrt(t)`` tokens, with
``t`` = 144 tokens per view (a 24 x 24 patch grid merged 2 x 2), one separator per row and one between the
crops and the global view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

#: CLIP's normalisation constants (as in the published preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class HDImage:
    """One preprocessed image: its views, its padded size and how many tokens it takes."""

    pixel_values: torch.Tensor  # (num_crops + 1, 3, crop, crop)
    image_size: tuple[int, int]  # (height, width) of the padded HD image
    num_tokens: int


class Phi3VImageProcessor:
    """HD transform + normalisation of Phi-3-V images (see the module docstring)."""

    def __init__(
        self,
        num_crops: int = 4,
        *,
        crop_size: int = 336,
        tokens_per_view: int = 144,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
    ) -> None:
        if not isinstance(num_crops, int) or num_crops < 1:
            raise ValueError(f"num_crops must be a positive int, got {num_crops!r}")
        side = math.isqrt(tokens_per_view)
        if side * side != tokens_per_view:
            raise ValueError(f"tokens_per_view must be a square number, got {tokens_per_view}")
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.tokens_per_view = tokens_per_view
        self.image_mean = tuple(float(value) for value in image_mean)
        self.image_std = tuple(float(value) for value in image_std)

    def grid_scale(self, width: int, height: int) -> int:
        """The largest ``s`` with ``s * ceil(s / ratio) <= num_crops`` (width >= height)."""
        ratio = width / height
        scale = 1
        while scale * math.ceil(scale / ratio) <= self.num_crops:
            scale += 1
        return max(scale - 1, 1)

    def hd_resize(self, image: Image.Image) -> Image.Image:
        """Steps 1-2: resize to the crop grid and pad the height with white."""
        transposed = image.width < image.height
        if transposed:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        width, height = image.size
        scale = self.grid_scale(width, height)
        new_width = scale * self.crop_size
        new_height = int(new_width / (width / height))
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
        padded_height = math.ceil(new_height / self.crop_size) * self.crop_size
        top = (padded_height - new_height) // 2
        canvas = Image.new("RGB", (new_width, padded_height), (255, 255, 255))
        canvas.paste(image, (0, top))
        return canvas.transpose(Image.Transpose.TRANSPOSE) if transposed else canvas

    def num_tokens(self, height: int, width: int) -> int:
        """Image tokens of a padded HD image of ``height x width`` pixels."""
        rows, cols = height // self.crop_size, width // self.crop_size
        side = math.isqrt(self.tokens_per_view)
        return (rows * cols + 1) * self.tokens_per_view + 1 + (rows + 1) * side

    def preprocess_one(self, image: Image.Image) -> HDImage:
        """Steps 1-4 for one image."""
        hd = self.hd_resize(image if image.mode == "RGB" else image.convert("RGB"))
        tensor = TF.normalize(TF.to_tensor(hd), self.image_mean, self.image_std)
        _, height, width = tensor.shape
        crop = self.crop_size
        global_view = F.interpolate(tensor.unsqueeze(0), size=(crop, crop), mode="bicubic")
        rows, cols = height // crop, width // crop
        crops = (
            tensor.reshape(3, rows, crop, cols, crop)
            .permute(1, 3, 0, 2, 4)
            .reshape(rows * cols, 3, crop, crop)
        )
        views = torch.cat([global_view, crops], dim=0)
        padding = views.new_zeros(self.num_crops + 1 - views.shape[0], 3, crop, crop)
        return HDImage(torch.cat([views, padding], dim=0), (height, width), self.num_tokens(height, width))

    def __call__(self, images: Sequence[Image.Image]) -> dict[str, object]:
        """``pixel_values`` (B, num_crops + 1, 3, crop, crop), ``image_sizes`` (B, 2), ``num_img_tokens``."""
        processed = [self.preprocess_one(image) for image in images]
        return {
            "pixel_values": torch.stack([item.pixel_values for item in processed]),
            "image_sizes": torch.tensor([item.image_size for item in processed], dtype=torch.long),
            "num_img_tokens": [item.num_tokens for item in processed],
        }


__all__ = ["CLIP_MEAN", "CLIP_STD", "HDImage", "Phi3VImageProcessor"]
