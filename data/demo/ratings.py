"""Ground-truth ratings in ImageRewardDB's conventions (integer Likert 1-7, higher is better; rank
1 = best, ties share the minimum rank)."""

from __future__ import annotations

import math
from collections.abc import Sequence

LIKERT_MIN, LIKERT_MAX = 1, 7
MAX_SEVERITY = 3


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def alignment_rating(satisfied_fraction: float) -> int:
    """7 when every fact of the prompt holds, 1 when none does, linear in between."""
    if not 0.0 <= satisfied_fraction <= 1.0:
        raise ValueError(f"satisfied_fraction must be in [0, 1], got {satisfied_fraction}")
    return LIKERT_MIN + _round_half_up((LIKERT_MAX - LIKERT_MIN) * satisfied_fraction)


def fidelity_rating(severity: int) -> int:
    """7 for a clean image, 5 / 3 / 1 for artifact severity 1 / 2 / 3."""
    if not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be in 0..{MAX_SEVERITY}, got {severity}")
    return LIKERT_MAX - 2 * severity


def overall_rating(alignment: int, fidelity: int) -> int:
    """The mean of the two ratings, rounded half up."""
    return _round_half_up((alignment + fidelity) / 2)


def competition_ranks(scores: Sequence[int]) -> list[int]:
    """Rank 1 for the highest score; equal scores share the smallest rank ("1, 2, 2, 4")."""
    return [1 + sum(other > score for other in scores) for score in scores]
