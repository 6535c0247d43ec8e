"""Preference pairs in MJ-Bench's Hugging Face layout.

``<out>/mjbench/data/{alignment,quality,safety}-00000-of-00001.parquet`` with columns ``caption``,
``image0``, ``image1`` (HF Image), ``label`` (0: image0 preferred, 1: image1 preferred; balanced) and
``info`` (JSON: category, ...). Pairs are minimal: both images share the caption's layout and differ
only by one alignment mistake, one artifact, or an unsafe marker.

Most captions are fresh (normalized Levenshtein distance >= ``fresh_min_distance`` to every train
prompt); a share are exact copies and near copies of train prompts, recorded in the ground truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import DemoCorpusConfig
from .overlap import any_within, distance, near_copy, nearest
from .render import ARTIFACT_KINDS
from .samples import PlannedImage, PromptSampler, plan_image, sample_marker
from .scene import (
    BENCHMARK_TEMPLATES,
    MISTAKE_CATEGORIES,
    Prompt,
    make_mistake,
    pick,
    possible_mistakes,
    sample_layout,
)
from .unsafebench import UNSAFE_CATEGORIES
from .writers import HF_IMAGE_TYPE, hf_image, write_parquet

DATASET = "mjbench"
SUBSETS: tuple[str, ...] = ("alignment", "quality", "safety")

SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("image0", HF_IMAGE_TYPE),
        ("image1", HF_IMAGE_TYPE),
        ("label", pa.int64()),
        ("info", pa.string()),
    ]
)


@dataclass(frozen=True)
class Caption:
    """A benchmark caption, the prompt whose facts it states, and how it overlaps training."""

    text: str
    prompt: Prompt
    overlap_kind: str  # "exact", "near" or "fresh"
    source_prompt_id: str | None = None
    source_distance: float | None = None


@dataclass(frozen=True)
class Pair:
    item_id: str
    subset: str
    category: str
    caption: Caption
    preferred: PlannedImage
    rejected: PlannedImage
    label: int
    info: dict

    @property
    def images(self) -> tuple[PlannedImage, PlannedImage]:
        """(image0, image1) as written."""
        return (self.preferred, self.rejected) if self.label == 0 else (self.rejected, self.preferred)


class CaptionPlanner:
    """Hands out captions: exact / near copies of distinct train prompts, and fresh prompts."""

    def __init__(
        self,
        config: DemoCorpusConfig,
        train: list[tuple[str, Prompt]],
        sampler: PromptSampler,
        rng: np.random.Generator,
    ):
        if not train:
            raise ValueError("benchmark captions need at least one train prompt")
        self.config = config
        self.train = train
        self.train_texts = [prompt.text for _, prompt in train]
        self.taken = set(self.train_texts)
        self.sampler = sampler
        self.rng = rng
        self._copy_order = [int(i) for i in rng.permutation(len(train))]

    def _next_train(self) -> tuple[str, Prompt]:
        if not self._copy_order:
            raise ValueError(
                f"more exact/near benchmark copies requested than train prompts ({len(self.train)}): "
                "lower exact_copy_fraction / near_copy_fraction or raise n_prompts"
            )
        return self.train[self._copy_order.pop()]

    def _exact(self) -> Caption:
        prompt_id, prompt = self._next_train()
        return Caption(prompt.text, prompt, "exact", prompt_id, 0.0)

    def _near(self) -> Caption:
        for _ in range(len(self.train)):
            prompt_id, prompt = self._next_train()
            variant = near_copy(prompt.text, self.rng, self.config.near_copy_max_distance, self.taken)
            if variant is not None:
                self.taken.add(variant)
                return Caption(variant, prompt, "near", prompt_id, distance(variant, prompt.text))
        raise ValueError("no train prompt admits a near copy within near_copy_max_distance")

    def _fresh(self, n: int) -> list[Caption]:
        fresh: list[Caption] = []
        for _round in range(100):
            if len(fresh) == n:
                return fresh
            wanted = n - len(fresh)
            candidates = [
                self.sampler.draw(self.rng, BENCHMARK_TEMPLATES) for _ in range(wanted + wanted // 8 + 4)
            ]
            close = any_within([c.text for c in candidates], self.train_texts, self.config.fresh_min_distance)
            for candidate, too_close in zip(candidates, close, strict=True):
                if not too_close and len(fresh) < n:
                    fresh.append(Caption(candidate.text, candidate, "fresh"))
        if len(fresh) < n:
            raise ValueError(
                f"found only {len(fresh)} of {n} captions at distance >= {self.config.fresh_min_distance} "
                "from every train prompt: lower fresh_min_distance"
            )
        return fresh

    def plan(self, n: int) -> list[Caption]:
        """``n`` captions in random order: round(n * fraction) exact and near copies, the rest fresh."""
        n_exact = round(n * self.config.exact_copy_fraction)
        n_near = round(n * self.config.near_copy_fraction)
        captions = [self._exact() for _ in range(n_exact)] + [self._near() for _ in range(n_near)]
        captions += self._fresh(n - len(captions))
        return [captions[int(i)] for i in self.rng.permutation(len(captions))]


def _labels(n: int, rng: np.random.Generator) -> list[int]:
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2))
    return [int(v) for v in labels[rng.permutation(n)]]


def _pair_images(
    subset: str, caption: Caption, config: DemoCorpusConfig, rng: np.random.Generator
) -> tuple[PlannedImage, PlannedImage, str, dict]:
    prompt = caption.prompt
    layout = sample_layout(prompt, rng)
    preferred = plan_image(prompt, layout, (), config, rng, image_format="png")
    if subset == "alignment":
        kind, group = pick(rng, possible_mistakes(prompt))
        mistake = make_mistake(prompt, kind, group, rng, config.colours, config.shapes)
        rejected = plan_image(prompt, layout, (mistake,), config, rng, image_format="png")
        return preferred, rejected, MISTAKE_CATEGORIES[kind], {"mistake": kind}
    if subset == "quality":
        artifact, severity = pick(rng, ARTIFACT_KINDS), int(rng.integers(1, 4))
        rejected = plan_image(
            prompt, layout, (), config, rng, artifact=artifact, severity=severity, image_format="png"
        )
        return preferred, rejected, artifact, {"severity": severity}
    if subset == "safety":
        marker = sample_marker(rng)
        rejected = plan_image(prompt, layout, (), config, rng, marker=marker, image_format="png")
        return preferred, rejected, pick(rng, UNSAFE_CATEGORIES), {"marker": marker}
    raise ValueError(f"unknown MJ-Bench subset {subset!r}")


def plan_mjbench(
    config: DemoCorpusConfig,
    train: list[tuple[str, Prompt]],
    sampler: PromptSampler,
    rng: np.random.Generator,
) -> list[Pair]:
    """All pairs, subset by subset; ``train`` are the (prompt_id, prompt) of the train split."""
    planner = CaptionPlanner(config, train, sampler, rng)
    sizes = {
        "alignment": config.mjbench_alignment_pairs,
        "quality": config.mjbench_quality_pairs,
        "safety": config.mjbench_safety_pairs,
    }
    pairs = []
    for subset in SUBSETS:
        captions = planner.plan(sizes[subset])
        for index, (caption, label) in enumerate(zip(captions, _labels(len(captions), rng), strict=True)):
            preferred, rejected, category, extra = _pair_images(subset, caption, config, rng)
            item_id = f"{subset}-{index:05d}"
            info = {"id": item_id, "category": category, "source": "synthetic", **extra}
            pairs.append(Pair(item_id, subset, category, caption, preferred, rejected, label, info))
    return pairs


def write_mjbench(
    out: Path, pairs: list[Pair], encoded: list[bytes], train: list[tuple[str, Prompt]]
) -> tuple[list[dict], dict[str, int]]:
    """Write the three shards; ``encoded`` holds (image0, image1) PNG bytes of each pair in order."""
    train_ids = [prompt_id for prompt_id, _ in train]
    nearest_index, nearest_distance = nearest([p.caption.text for p in pairs], [p.text for _, p in train])
    truth, counts = [], {}
    position = {id(pair): i for i, pair in enumerate(pairs)}
    for subset in SUBSETS:
        shard = f"data/{subset}-00000-of-00001.parquet"
        rows = []
        for row, pair in enumerate(p for p in pairs if p.subset == subset):
            i = position[id(pair)]
            image_bytes = encoded[2 * i : 2 * i + 2]
            rows.append(
                {
                    "caption": pair.caption.text,
                    "image0": hf_image(image_bytes[0], f"{pair.item_id}_image0.png"),
                    "image1": hf_image(image_bytes[1], f"{pair.item_id}_image1.png"),
                    "label": pair.label,
                    "info": json.dumps(pair.info, separators=(",", ":")),
                }
            )
            for slot, planned in enumerate(pair.images):
                truth.append(
                    {
                        "dataset": DATASET,
                        "split": "test",
                        "subset": subset,
                        "item_id": pair.item_id,
                        "image_id": f"{pair.item_id}_image{slot}",
                        "image_ref": f"{DATASET}/{shard}::image{slot}[{row}]",
                        "slot": f"image{slot}",
                        "preferred": slot == pair.label,
                        "label": pair.label,
                        "category": pair.category,
                        "prompt": pair.caption.text,
                        "unsafe": planned.spec.marker != "none",
                        "overlap_kind": pair.caption.overlap_kind,
                        "overlap_prompt_id": pair.caption.source_prompt_id,
                        "overlap_distance": pair.caption.source_distance,
                        "nearest_train_prompt_id": train_ids[int(nearest_index[i])],
                        "nearest_train_distance": float(nearest_distance[i]),
                        **planned.truth(),
                    }
                )
        write_parquet(
            out / DATASET / shard,
            pa.Table.from_pylist(rows, schema=SCHEMA),
            hf_image_columns=("image0", "image1"),
        )
        subset_pairs = [p for p in pairs if p.subset == subset]
        counts[f"mjbench_{subset}"] = len(subset_pairs)
        for kind in ("exact", "near"):
            counts[f"mjbench_{subset}_{kind}_copies"] = sum(
                p.caption.overlap_kind == kind for p in subset_pairs
            )
    return truth, counts


def specs_in_order(pairs: list[Pair]) -> list:
    """Image specs in the order :func:`write_mjbench` expects their bytes: image0, image1 per pair."""
    return [planned.spec for pair in pairs for planned in pair.images]
