"""Baseline scorers for the evaluation harness: CLIPScore with open_clip (no Prefect).

CLIPScore (Hessel et al. 2021) is ``w * max(cos(E_image, E_text), 0)`` with ``w = 2.5``; some libraries
report ``100 * cos`` instead, which ranks images the same way. Hessel et al. prefix every caption with
"A photo depicts"; :class:`ClipScoreScorer` takes that prefix as a parameter (empty by default, as the
text-to-image reward benchmarks use the raw prompt).

The open_clip model is a parameter (:class:`ClipSpec`): a model name (``ViT-B-32``, ``local-dir:/path``
or the bundled random ``demo-tiny-clip`` config) and ``pretrained`` (an open_clip tag, a local
checkpoint file, or None for random weights drawn from ``seed``). Offline only local checkpoints and
random weights load; set ``HF_HUB_OFFLINE=1`` so that open_clip fails fast instead of retrying a hub.
"""

from __future__ import annotations

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
#: The CLIPScore weight w of Hessel et al. (2021).
CLIPSCORE_WEIGHT = 2.5
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


@lru_cache(maxsize=4)
def _load(model_name: str, pretrained: str | None, seed: int, device: str) -> ClipEncoder:
    import open_clip
    import torch

    register_bundled_configs()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
    model.eval().requires_grad_(False)
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer(model_name), device)


def load_clip(spec: ClipSpec) -> ClipEncoder:
    """The open_clip model named by ``spec``, loaded once per process (the batch size does not matter)."""
    return _load(spec.model_name, spec.pretrained, spec.seed, spec.device)


def clip_score(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, *, weight: float = CLIPSCORE_WEIGHT
) -> np.ndarray:
    """``weight * max(cos, 0)`` of matching rows of two (N, D) embedding matrices (not assumed unit)."""
    images = np.asarray(image_embeddings, dtype=np.float64)
    texts = np.asarray(text_embeddings, dtype=np.float64)
    if images.ndim != 2 or images.shape != texts.shape:
        raise ValueError(f"clip_score: expected two (N, D) arrays, got {images.shape} and {texts.shape}")
    cosine = np.sum(images * texts, axis=1) / (np.linalg.norm(images, axis=1) * np.linalg.norm(texts, axis=1))
    return weight * np.maximum(cosine, 0.0)


class ClipScoreScorer:
    """CLIPScore of (image, prompt) pairs with an open_clip model: a :class:`reward.evaluation.Scorer`."""

    def __init__(
        self,
        spec: ClipSpec = ClipSpec(),
        *,
        weight: float = CLIPSCORE_WEIGHT,
        prompt_prefix: str = "",
        name: str = "CLIPScore",
    ) -> None:
        if not weight > 0:
            raise ValueError(f"CLIPScore weight must be > 0, got {weight}")
        self.spec = spec
        self.weight = weight
        self.prompt_prefix = prompt_prefix
        self.name = name

    @property
    def encoder(self) -> ClipEncoder:
        return load_clip(self.spec)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """CLIPScore of each (image, prompt) pair, float64 (N,) in ``[0, weight]``."""
        if len(images) != len(prompts):
            raise ValueError(f"{self.name}: got {len(images)} images but {len(prompts)} prompts")
        if not images:
            return np.zeros(0)
        encoder = self.encoder
        texts = encoder.encode_text([f"{self.prompt_prefix}{prompt}" for prompt in prompts])
        return clip_score(encoder.encode_pil(images), texts, weight=self.weight)


__all__ = [
    "CLIPSCORE_WEIGHT",
    "CLIP_CONFIG_DIR",
    "ClipEncoder",
    "ClipScoreScorer",
    "ClipSpec",
    "clip_score",
    "load_clip",
    "register_bundled_configs",
]
