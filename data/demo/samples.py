"""Planning single images: a prompt, its shared layout, chosen mistakes and artifact -> an
:class:`~data.demo.render.ImageSpec` plus the ground truth that goes with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import DemoCorpusConfig
from .render import ARTIFACT_KINDS, MARKERS, ImageSpec
from .scene import (
    TRAINING_TEMPLATES,
    Layout,
    Mistake,
    Prompt,
    drawn_groups,
    pick,
    sample_prompt,
    satisfied_fraction,
    scene_objects,
)

SEED_BOUND = 2**63 - 1


@dataclass(frozen=True)
class PlannedImage:
    """One image to render and what is true about it."""

    prompt: Prompt
    mistakes: tuple[Mistake, ...]
    spec: ImageSpec
    satisfied: float

    def truth(self) -> dict:
        """Ground-truth columns shared by every dataset (see :mod:`data.demo.ground_truth`)."""
        return {
            "prompt_facts": json.dumps(self.prompt.to_json(), separators=(",", ":")),
            "mistakes": json.dumps([m.to_json() for m in self.mistakes], separators=(",", ":")),
            "n_mistakes": len(self.mistakes),
            "artifact": self.spec.artifact,
            "severity": self.spec.severity,
            "satisfied_fraction": self.satisfied,
            "unsafe_marker": self.spec.marker,
            "render_spec": self.spec.to_json(),
        }


def plan_image(
    prompt: Prompt,
    layout: Layout,
    mistakes: tuple[Mistake, ...],
    config: DemoCorpusConfig,
    rng: np.random.Generator,
    *,
    artifact: str = "none",
    severity: int = 0,
    marker: str = "none",
    image_format: str = "webp",
) -> PlannedImage:
    """The spec of ``prompt`` drawn with ``mistakes`` on ``layout``, plus its satisfied fraction."""
    groups = drawn_groups(prompt, mistakes)
    marker_box = (0.5, 0.5, 0.6)
    if marker != "none":
        marker_box = tuple(
            round(float(v), 4) for v in (*rng.uniform(0.4, 0.6, size=2), rng.uniform(0.6, 0.8))
        )
    spec = ImageSpec(
        objects=scene_objects(groups, layout),
        background=layout.background,
        artifact=artifact,
        severity=severity,
        marker=marker,
        marker_box=marker_box,
        seed=int(rng.integers(SEED_BOUND)),
        image_size=config.image_size,
        supersample=config.supersample,
        image_format=image_format,
    )
    return PlannedImage(prompt, mistakes, spec, satisfied_fraction(prompt, groups, layout))


def sample_artifact(rng: np.random.Generator, clean_fraction: float) -> tuple[str, int]:
    """``("none", 0)`` with probability ``clean_fraction``, else a random kind at severity 1-3."""
    if rng.random() < clean_fraction:
        return "none", 0
    return pick(rng, ARTIFACT_KINDS), int(rng.integers(1, 4))


def sample_marker(rng: np.random.Generator) -> str:
    return pick(rng, MARKERS)


class PromptSampler:
    """Draws prompts whose texts are unique across everything this sampler has handed out."""

    def __init__(self, config: DemoCorpusConfig, max_tries: int = 10_000):
        self.config = config
        self.max_tries = max_tries
        self.used: set[str] = set()

    def draw(self, rng: np.random.Generator, templates: Sequence[int] = TRAINING_TEMPLATES) -> Prompt:
        """A prompt not handed out before, worded with one of ``templates``."""
        for _ in range(self.max_tries):
            prompt = sample_prompt(
                rng, self.config.colours, self.config.shapes, self.config.two_group_fraction, templates
            )
            if prompt.text not in self.used:
                self.used.add(prompt.text)
                return prompt
        raise ValueError(
            f"could not draw a new unique prompt in {self.max_tries} tries after {len(self.used)} prompts: "
            "add colours / shapes or lower n_prompts"
        )
