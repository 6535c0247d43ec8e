"""Validating the oracle judge on rendered demo images whose facts are known (no model involved)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .config import DemoCorpusConfig
from .oracle import OracleJudge
from .render import ImageSpec, render
from .scene import (
    BENCHMARK_TEMPLATES,
    Prompt,
    drawn_groups,
    sample_layout,
    sample_mistakes,
    sample_prompt,
    satisfied_facts,
    scene_objects,
)


@dataclass(frozen=True)
class Case:
    """A rendered image, its prompt and the truth of each of the prompt's facts."""

    image: Image.Image
    prompt: Prompt
    truth: list[bool]


def render_cases(
    count: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    max_mistakes: int = 2,
    config: DemoCorpusConfig | None = None,
) -> list[Case]:
    """``count`` random demo scenes (benchmark wordings) with 0..``max_mistakes`` mistakes each."""
    config = config or DemoCorpusConfig()
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        prompt = sample_prompt(
            rng, config.colours, config.shapes, config.two_group_fraction, BENCHMARK_TEMPLATES
        )
        layout = sample_layout(prompt, rng)
        mistakes = sample_mistakes(
            prompt, int(rng.integers(0, max_mistakes + 1)), rng, config.colours, config.shapes
        )
        groups = drawn_groups(prompt, mistakes)
        spec = ImageSpec(
            scene_objects(groups, layout), layout.background, image_size=image_size, supersample=4
        )
        cases.append(Case(render(spec), prompt, satisfied_facts(prompt, groups, layout)))
    return cases


def oracle_accuracy(cases: list[Case], judge: OracleJudge | None = None) -> dict[str, float]:
    """Share of facts the judge reads right (overall and per fact kind) and of images read entirely right."""
    judge = judge or OracleJudge()
    right_by_kind: dict[str, list[bool]] = defaultdict(list)
    whole = []
    for case in cases:
        read = judge.facts(case.image, case.prompt.text)
        for (kind, _), seen, true in zip(case.prompt.facts(), read, case.truth, strict=True):
            right_by_kind[kind].append(seen == true)
        whole.append(read == case.truth)
    every = [value for values in right_by_kind.values() for value in values]
    report = {"facts": float(np.mean(every)), "images": float(np.mean(whole)), "n_images": float(len(cases))}
    report.update({f"facts_{kind}": float(np.mean(values)) for kind, values in right_by_kind.items()})
    return report
