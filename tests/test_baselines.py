"""CLIPScore: the formula on known vectors, and the scorer against an independent open_clip computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reward.baselines import CLIPSCORE_WEIGHT, ClipScoreScorer, ClipSpec, clip_score, load_clip
from reward.evaluation import Scorer

PROMPTS = [
    "two red circles",
    "a blue square above a star",
    "three yellow crosses",
    "one green triangle",
    "a cat",
    "a purple square to the left of a circle",
    "",
    "orange",
]


def images(count: int, seed: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def test_formula_on_known_vectors() -> None:
    image = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    text = np.array([[1.0, 1.0], [2.0, 2.0], [-1.0, 0.2], [0.0, 5.0]])
    expected = [2.5 / math.sqrt(2), 2.5 / math.sqrt(2), 0.0, 2.5]  # not unit: normalized; cos < 0 -> 0
    assert clip_score(image, text) == pytest.approx(expected)
    assert clip_score(image, text, weight=100.0) == pytest.approx([100 * v / 2.5 for v in expected])
    with pytest.raises(ValueError, match=r"two \(N, D\) arrays, got \(4, 2\) and \(3, 2\)"):
        clip_score(image, text[:3])


def test_scorer_equals_an_independent_computation_on_the_same_model() -> None:
    scorer = ClipScoreScorer(ClipSpec(seed=0))
    assert isinstance(scorer, Scorer) and scorer.name == "CLIPScore"
    pictures = images(len(PROMPTS), seed=1)
    got = scorer.score(pictures, PROMPTS)

    encoder = load_clip(ClipSpec(seed=0))
    with torch.no_grad():
        pixels = torch.stack([encoder.preprocess(picture) for picture in pictures])
        image_features = encoder.model.encode_image(pixels)  # unnormalized, unlike the scorer's path
        text_features = encoder.model.encode_text(encoder.tokenizer(PROMPTS))
    cosine = F.cosine_similarity(image_features.double(), text_features.double(), dim=-1).numpy()
    expected = CLIPSCORE_WEIGHT * np.clip(cosine, 0.0, None)
    assert (cosine < 0).any() and (cosine > 0).any()  # both branches of max(cos, 0) are exercised
    assert got.shape == (len(PROMPTS),) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(got[cosine < 0] == 0.0)


def test_prompt_prefix_is_prepended_to_every_prompt() -> None:
    pictures = images(3, seed=2)
    prefixed = ClipScoreScorer(prompt_prefix="A photo depicts ").score(pictures, PROMPTS[:3])
    manual = ClipScoreScorer().score(pictures, [f"A photo depicts {prompt}" for prompt in PROMPTS[:3]])
    np.testing.assert_array_equal(prefixed, manual)
    assert not np.allclose(prefixed, ClipScoreScorer().score(pictures, PROMPTS[:3]))


def test_model_is_loaded_once_and_seeds_give_different_weights() -> None:
    assert load_clip(ClipSpec(seed=0)) is load_clip(ClipSpec(seed=0, batch_size=8))
    texts = ["two red circles"]
    assert not np.allclose(
        load_clip(ClipSpec(seed=0)).encode_text(texts),
        load_clip(ClipSpec(seed=3)).encode_text(texts),
        atol=1e-3,
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="weight must be > 0, got 0"):
        ClipScoreScorer(weight=0)
    with pytest.raises(ValueError, match="CLIPScore: got 2 images but 1 prompts"):
        ClipScoreScorer().score(images(2, seed=0), ["one"])
    assert ClipScoreScorer().score([], []).shape == (0,)
