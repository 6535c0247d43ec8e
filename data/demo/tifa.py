"""Faithfulness ratings in TIFA160's layout: N texts x 5 generators with different mistake rates.

``<out>/tifa160/human_annotations.json`` maps ``<text_id>_<model>`` to ``{text_id, image_path, text,
human_scores: [2 ints 1-5], human_avg}``; images are PNGs in ``<out>/tifa160/images/`` and
``image_path`` is relative to ``<out>/tifa160``. Each rater scores 1 + 4 x (satisfied fraction) plus
gaussian noise, rounded and clipped to 1-5; ``human_avg`` is the mean of the two raters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DemoCorpusConfig
from .samples import PlannedImage, PromptSampler, plan_image, sample_artifact
from .scene import sample_layout, sample_mistakes
from .writers import write_json

DATASET = "tifa160"
#: Generator name -> (chance of each of two possible mistakes, chance of an artifact).
GENERATORS: dict[str, tuple[float, float]] = {
    "mini_dalle": (0.55, 0.5),
    "vqgan_clip": (0.7, 0.6),
    "stable_diffusion_v1_1": (0.4, 0.3),
    "stable_diffusion_v1_5": (0.25, 0.2),
    "stable_diffusion_v2_1": (0.15, 0.1),
}
RATER_NOISE = 0.5
N_RATERS = 2


@dataclass(frozen=True)
class TifaItem:
    key: str
    text_id: str
    model: str
    planned: PlannedImage
    human_scores: tuple[int, ...]

    @property
    def human_avg(self) -> float:
        return sum(self.human_scores) / len(self.human_scores)

    @property
    def image_path(self) -> str:
        return f"images/{self.key}.png"


def rater_score(satisfied: float, rng: np.random.Generator) -> int:
    """One noisy 1-5 faithfulness score for an image satisfying ``satisfied`` of its facts."""
    value = 1 + 4 * satisfied + rng.normal(0.0, RATER_NOISE)
    return int(min(5, max(1, math.floor(value + 0.5))))


def plan_tifa(config: DemoCorpusConfig, sampler: PromptSampler, rng: np.random.Generator) -> list[TifaItem]:
    items = []
    for index in range(config.tifa_texts):
        prompt = sampler.draw(rng)
        layout = sample_layout(prompt, rng)
        text_id = f"synthetic_{index:05d}"
        for model, (mistake_rate, artifact_rate) in GENERATORS.items():
            mistakes = sample_mistakes(
                prompt, int(rng.binomial(2, mistake_rate)), rng, config.colours, config.shapes
            )
            artifact, severity = sample_artifact(rng, 1.0 - artifact_rate)
            planned = plan_image(
                prompt,
                layout,
                mistakes,
                config,
                rng,
                artifact=artifact,
                severity=severity,
                image_format="png",
            )
            scores = tuple(rater_score(planned.satisfied, rng) for _ in range(N_RATERS))
            items.append(TifaItem(f"{text_id}_{model}", text_id, model, planned, scores))
    return items


def write_tifa(out: Path, items: list[TifaItem], encoded: list[bytes]) -> tuple[list[dict], dict[str, int]]:
    """Write the images and ``human_annotations.json``; ``encoded`` holds PNG bytes in item order."""
    root = out / DATASET
    (root / "images").mkdir(parents=True, exist_ok=True)
    annotations, truth = {}, []
    for item, data in zip(items, encoded, strict=True):
        (root / item.image_path).write_bytes(data)
        annotations[item.key] = {
            "text_id": item.text_id,
            "image_path": item.image_path,
            "text": item.planned.prompt.text,
            "human_scores": list(item.human_scores),
            "human_avg": item.human_avg,
        }
        truth.append(
            {
                "dataset": DATASET,
                "split": "test",
                "item_id": item.key,
                "image_id": item.key,
                "image_ref": f"{DATASET}/{item.image_path}",
                "prompt_id": item.text_id,
                "prompt": item.planned.prompt.text,
                "generator": item.model,
                "human_avg": item.human_avg,
                **item.planned.truth(),
            }
        )
    write_json(root / "human_annotations.json", annotations, indent=2)
    return truth, {"tifa160_texts": len({i.text_id for i in items}), "tifa160_images": len(items)}
