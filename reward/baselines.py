"""Baseline scorers for the evaluation harness: CLIPScore with open_clip (no Prefect).

CLIPScore (Hessel et al. 2021) is ``w * max(cos(E_image, E_text), 0)`` with ``w = 2.5``; some libraries
report ``100 * cos`` instead, which ranks images the same way. Hessel et al. prefix every caption with
"A photo depicts"; :class:`ClipScoreScorer` takes that prefix as a parameter (empty by default, as the
text-to-image reward benchmarks use the raw prompt).

The open_clip model is a parameter (:class:`reward.clip.ClipSpec`; see :mod:`reward.clip`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from reward.clip import ClipEncoder, ClipSpec, load_clip

#: The CLIPScore weight w of Hessel et al. (2021).
CLIPSCORE_WEIGHT = 2.5


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
    "ClipEncoder",
    "ClipScoreScorer",
    "ClipSpec",
    "clip_score",
    "load_clip",
]
