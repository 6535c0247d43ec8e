"""Benchmark captions that overlap training prompts on purpose (exact and near copies), and the
nearest-training-prompt distances that the ground truth records for every caption."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

#: One-word substitutions that keep a prompt's meaning (the scene facts stay those of the source).
WORD_SWAPS: dict[str, str] = {
    "picture": "image",
    "photo": "snapshot",
    "drawing": "sketch",
    "above": "over",
    "below": "under",
    "plain": "blank",
    "simple": "basic",
    "colours": "colors",
    "two": "2",
    "three": "3",
}


def distance(a: str, b: str) -> float:
    """Normalized Levenshtein distance (0 = equal, 1 = nothing in common), as the dedup stage uses."""
    return float(Levenshtein.normalized_distance(a, b))


def _capitalize(text: str) -> str | None:
    return text[0].upper() + text[1:] if text[:1].islower() else None


def _shout_first_word(text: str) -> str | None:
    first, _, rest = text.partition(" ")
    return f"{first.upper()} {rest}" if rest and not first.isupper() else None


def _punctuate(mark: str) -> Callable[[str], str | None]:
    return lambda text: None if text.endswith(mark) else text + mark


def _swap_word(word: str, replacement: str) -> Callable[[str], str | None]:
    pattern = re.compile(rf"\b{re.escape(word)}\b")
    return lambda text: pattern.sub(replacement, text, count=1) if pattern.search(text) else None


PERTURBATIONS: tuple[Callable[[str], str | None], ...] = (
    _capitalize,
    _shout_first_word,
    _punctuate("."),
    _punctuate("!"),
    *(_swap_word(word, replacement) for word, replacement in WORD_SWAPS.items()),
)


def near_copy(text: str, rng: np.random.Generator, max_distance: float, taken: set[str]) -> str | None:
    """A case, punctuation or one-word variant of ``text`` within ``max_distance`` (and > 0) that is
    not in ``taken``; None when no variant is close enough (very short texts)."""
    for index in rng.permutation(len(PERTURBATIONS)):
        variant = PERTURBATIONS[int(index)](text)
        if variant is None or variant in taken:
            continue
        if 0.0 < distance(variant, text) <= max_distance:
            return variant
    return None


def nearest(queries: Sequence[str], choices: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the index of its nearest choice and the normalized Levenshtein distance
    (ties: the lowest index). Uses rapidfuzz's C++ all-pairs matrix."""
    if not choices:
        raise ValueError("nearest: no choices to compare against")
    if not queries:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    matrix = process.cdist(
        queries, choices, scorer=Levenshtein.normalized_distance, dtype=np.float32, workers=-1
    )
    index = matrix.argmin(axis=1)
    # Recompute the winners in double precision so recorded distances match a direct check exactly.
    dist = np.array([distance(q, choices[int(i)]) for q, i in zip(queries, index, strict=True)])
    return index.astype(np.int64), dist


def any_within(queries: Sequence[str], choices: Sequence[str], max_distance: float) -> np.ndarray:
    """For each query: is some choice at normalized Levenshtein distance < ``max_distance``?
    (rapidfuzz skips the exact computation past the cutoff, so this is much faster than
    :func:`nearest`.)"""
    if not queries or not choices:
        return np.zeros(len(queries), dtype=bool)
    matrix = process.cdist(
        queries,
        choices,
        scorer=Levenshtein.normalized_distance,
        dtype=np.float32,
        score_cutoff=max_distance,
        workers=-1,
    )
    close = matrix < max_distance
    # float32 rounding near the cutoff: settle borderline pairs in double precision.
    border = np.argwhere(np.abs(matrix - max_distance) < 1e-5)
    for q, c in border:
        close[q, c] = distance(queries[int(q)], choices[int(c)]) < max_distance
    return close.any(axis=1)
