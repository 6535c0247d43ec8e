"""open_clip models by specification: which model, which weights, loaded once per process (no Prefect).

A :class:`ClipSpec` names a model (``ViT-B-32``, ``local-dir:/path`` or the bundled random
``demo-tiny-clip`` config) and its weights (``pretrained``: an open_clip tag, a local checkpoint file,
or None for random weights drawn from ``seed``). Offline only local checkpoints and random weights
load; set ``HF_HUB_OFFLINE=1`` so that open_clip fails fast instead of retrying a hub. The embed stage
(:mod:`tasks.embed`) and the CLIPScore baseline (:mod:`reward.baselines`) both load through here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Folder of the open_clip model configs bundled with the project (``demo-tiny-clip``).
CLIP_CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class ClipSpec:
    """Which open_clip model to load: name, weights (tag, checkpoint path or None = random), the seed
    of random weights, the batch size of whoever encodes with it, and the device."""

    model_name: str = "demo-tiny-clip"
    pretrained: str | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"


@dataclass
class ClipEncoder:
    """A loaded open_clip model with its evaluation image transform and tokenizer."""

    model: Any
    preprocess: Callable[[Image.Image], Any]
    tokenizer: Callable[[list[str]], Any]
    device: str

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized text embeddings, float32 (N, D)."""
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    def encode_images(self, pixels: Any) -> np.ndarray:
        """L2-normalized image embeddings of a preprocessed pixel batch, float32 (N, D)."""
        import torch

        with torch.inference_mode():
            return self.model.encode_image(pixels.to(self.device), normalize=True).float().cpu().numpy()

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalized embeddings of PIL images (preprocessed here)."""
        import torch

        return self.encode_images(torch.stack([self.preprocess(image.convert("RGB")) for image in images]))


def register_bundled_configs() -> None:
    """Make open_clip find the bundled configs (``demo-tiny-clip``); idempotent."""
    import open_clip

    with _registry_lock:
        if CLIP_CONFIG_DIR not in getattr(open_clip.factory, "_MODEL_CONFIG_PATHS", []):
            open_clip.add_model_config(CLIP_CONFIG_DIR)


logger = logging.getLogger(__name__)


class _ExpectedRandomInit(logging.Filter):
    """Drops open_clip's root-logger warning that a model got no pretrained weights, for a model loaded
    with ``pretrained=None`` on purpose (the demo model): there the random weights are what was asked."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")


@lru_cache(maxsize=4)
def _load(model_name: str, pretrained: str | None, seed: int, device: str) -> ClipEncoder:
    import open_clip
    import torch

    register_bundled_configs()
    expected = _ExpectedRandomInit()
    if not pretrained:
        logging.getLogger().addFilter(expected)
        logger.info(
            "open_clip %s: random weights (seed %d), as asked (no pretrained given)", model_name, seed
        )
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
    finally:
        logging.getLogger().removeFilter(expected)
    model.eval().requires_grad_(False)
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer(model_name), device)


def load_clip(spec: ClipSpec) -> ClipEncoder:
    """The open_clip model named by ``spec``, loaded once per process (the batch size does not matter)."""
    return _load(spec.model_name, spec.pretrained, spec.seed, spec.device)


__all__ = ["CLIP_CONFIG_DIR", "ClipEncoder", "ClipSpec", "load_clip", "register_bundled_configs"]
