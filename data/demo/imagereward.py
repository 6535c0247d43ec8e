"""The rated-image part of the corpus, written in ImageRewardDB's published layout.

Layout under ``<out>/imagerewarddb/``::

    metadata-{train,validation,test}.parquet      one row per image (no image bytes)
    images/{split}/{split}_{i}.zip                lossless WebP members named <uuid>.webp
    images/{split}/{split}_{i}.json               that zip's rows, same fields as the metadata
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import SPLITS, DemoCorpusConfig
from .ratings import alignment_rating, competition_ranks, fidelity_rating, overall_rating
from .samples import PlannedImage, PromptSampler, plan_image, sample_artifact
from .scene import Prompt, sample_layout, sample_mistakes
from .writers import DeterministicZip, write_json, write_parquet

DATASET = "imagerewarddb"
#: How many mistakes a non-reference image gets (0, 1, 2) and with which probability.
MISTAKE_COUNT_WEIGHTS = (0.25, 0.45, 0.30)

METADATA_SCHEMA = pa.schema(
    [
        ("image_path", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("classification", pa.string()),
        ("image_amount_in_total", pa.int8()),
        ("rank", pa.int8()),
        ("overall_rating", pa.int8()),
        ("image_text_alignment_rating", pa.int8()),
        ("fidelity_rating", pa.int8()),
    ]
)


@dataclass(frozen=True)
class RatedImage:
    image_id: str  # the UUID that names the WebP file
    planned: PlannedImage
    alignment: int
    fidelity: int
    overall: int
    rank: int


@dataclass(frozen=True)
class RatedPrompt:
    prompt_id: str
    split: str
    prompt: Prompt
    images: tuple[RatedImage, ...]


def prompt_id_for(index: int) -> str:
    """DiffusionDB-style id ``<part>-<index in part>``, e.g. ``000864-0061``."""
    return f"{index // 100:06d}-{index % 100:04d}"


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _mistake_count(rng: np.random.Generator) -> int:
    draw, cumulative = rng.random(), 0.0
    for count, weight in enumerate(MISTAKE_COUNT_WEIGHTS):
        cumulative += weight
        if draw < cumulative:
            return count
    return len(MISTAKE_COUNT_WEIGHTS) - 1


def _plan_images(prompt: Prompt, config: DemoCorpusConfig, rng: np.random.Generator) -> list[PlannedImage]:
    """4-9 images of ``prompt`` on one layout: the first is correct, each has a distinct
    (mistakes, artifact, severity) signature when the prompt allows it."""
    layout = sample_layout(prompt, rng)
    n_images = int(rng.integers(config.min_images_per_prompt, config.max_images_per_prompt + 1))
    planned: list[PlannedImage] = []
    seen: set[tuple] = set()
    for index in range(n_images):
        for _attempt in range(50):
            n_mistakes = 0 if index == 0 else _mistake_count(rng)
            mistakes = sample_mistakes(prompt, n_mistakes, rng, config.colours, config.shapes)
            artifact, severity = sample_artifact(rng, config.clean_fraction)
            signature = (mistakes, artifact, severity)
            if signature not in seen:
                break
        seen.add(signature)
        planned.append(
            plan_image(prompt, layout, mistakes, config, rng, artifact=artifact, severity=severity)
        )
    return [planned[int(i)] for i in rng.permutation(n_images)]


def _rate(images: list[PlannedImage], rng: np.random.Generator) -> tuple[RatedImage, ...]:
    alignment = [alignment_rating(image.satisfied) for image in images]
    fidelity = [fidelity_rating(image.spec.severity) for image in images]
    overall = [overall_rating(a, f) for a, f in zip(alignment, fidelity, strict=True)]
    ranks = competition_ranks(overall)
    return tuple(
        RatedImage(_uuid(rng), image, a, f, o, r)
        for image, a, f, o, r in zip(images, alignment, fidelity, overall, ranks, strict=True)
    )


def plan_imagerewarddb(
    config: DemoCorpusConfig, sampler: PromptSampler, rng: np.random.Generator
) -> list[RatedPrompt]:
    """All rated prompts, ordered train, validation, test."""
    plan = []
    index = 0
    for split, size in config.split_sizes().items():
        for _ in range(size):
            prompt = sampler.draw(rng)
            images = _rate(_plan_images(prompt, config, rng), rng)
            plan.append(RatedPrompt(prompt_id_for(index), split, prompt, images))
            index += 1
    return plan


def _zip_groups(prompts: list[RatedPrompt], images_per_zip: int) -> list[list[RatedPrompt]]:
    """Consecutive prompts packed into zips of at most ``images_per_zip`` images (a prompt with more
    images than that gets a zip of its own)."""
    groups: list[list[RatedPrompt]] = []
    filled = 0
    for prompt in prompts:
        if not groups or filled + len(prompt.images) > images_per_zip:
            groups.append([])
            filled = 0
        groups[-1].append(prompt)
        filled += len(prompt.images)
    return groups


def write_imagerewarddb(
    out: Path, plan: list[RatedPrompt], encoded: Iterator[bytes], config: DemoCorpusConfig
) -> tuple[list[dict], dict[str, int]]:
    """Write the layout under ``out / 'imagerewarddb'`` consuming ``encoded`` (the WebP bytes of
    every image in plan order). Returns ground-truth rows and counts."""
    root = out / DATASET
    truth: list[dict] = []
    counts: dict[str, int] = {}
    for split in SPLITS:
        prompts = [p for p in plan if p.split == split]
        rows: list[dict] = []
        for zip_number, group in enumerate(_zip_groups(prompts, config.images_per_zip), start=1):
            stem = f"{split}_{zip_number}"
            zip_rows = []
            with DeterministicZip(root / "images" / split / f"{stem}.zip") as archive:
                for rated_prompt in group:
                    for image in rated_prompt.images:
                        member = f"{image.image_id}.webp"
                        archive.add(member, next(encoded))
                        row = {
                            "image_path": f"images/{split}/{stem}/{member}",
                            "prompt_id": rated_prompt.prompt_id,
                            "prompt": rated_prompt.prompt.text,
                            "classification": rated_prompt.prompt.classification,
                            "image_amount_in_total": len(rated_prompt.images),
                            "rank": image.rank,
                            "overall_rating": image.overall,
                            "image_text_alignment_rating": image.alignment,
                            "fidelity_rating": image.fidelity,
                        }
                        zip_rows.append(row)
                        truth.append(
                            {
                                "dataset": DATASET,
                                "split": split,
                                "item_id": rated_prompt.prompt_id,
                                "image_id": image.image_id,
                                "image_ref": f"{DATASET}/images/{split}/{stem}.zip::{member}",
                                "prompt_id": rated_prompt.prompt_id,
                                "prompt": rated_prompt.prompt.text,
                                "category": rated_prompt.prompt.classification,
                                "alignment_rating": image.alignment,
                                "fidelity_rating": image.fidelity,
                                "overall_rating": image.overall,
                                "rank": image.rank,
                                **image.planned.truth(),
                            }
                        )
            write_json(root / "images" / split / f"{stem}.json", zip_rows)
            rows.extend(zip_rows)
            counts[f"imagerewarddb_{split}_zips"] = zip_number
        table = pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)
        write_parquet(root / f"metadata-{split}.parquet", table)
        counts[f"imagerewarddb_{split}_prompts"] = len(prompts)
        counts[f"imagerewarddb_{split}_images"] = len(rows)
    return truth, counts


def specs_in_order(plan: list[RatedPrompt]) -> list:
    """The image specs in the order :func:`write_imagerewarddb` consumes their bytes."""
    order = {split: i for i, split in enumerate(SPLITS)}
    ordered = sorted(plan, key=lambda p: order[p.split])  # stable: plan order within a split
    return [image.planned.spec for prompt in ordered for image in prompt.images]
