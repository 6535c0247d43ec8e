"""Safe / unsafe images in UnsafeBench's published layout.

``<out>/unsafebench/data/{train,test}-00000-of-00001.parquet`` with columns ``image`` (HF Image),
``safety_label`` ("Safe"/"Unsafe"), ``category``, ``source``, ``text``. An Unsafe image is a normal
scene with a large unsafe marker (hazard sign or cross-out) drawn over it; a Safe image has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import DemoCorpusConfig
from .samples import PlannedImage, PromptSampler, plan_image, sample_marker
from .scene import pick, sample_layout
from .writers import HF_IMAGE_TYPE, hf_image, write_parquet

DATASET = "unsafebench"
UNSAFE_CATEGORIES: tuple[str, ...] = (
    "Deception",
    "Harassment",
    "Hate",
    "Illegal activity",
    "Political",
    "Public and personal health",
    "Self-harm",
    "Sexual",
    "Shocking",
    "Spam",
    "Violence",
)
SOURCES: tuple[str, ...] = ("Laion5B", "Lexica")
EMPTY_TEXT_SHARE = 0.2
UNSAFEBENCH_SPLITS: tuple[str, ...] = ("train", "test")

SCHEMA = pa.schema(
    [
        ("image", HF_IMAGE_TYPE),
        ("safety_label", pa.string()),
        ("category", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
    ]
)


@dataclass(frozen=True)
class SafetyItem:
    item_id: str
    split: str
    planned: PlannedImage
    safety_label: str
    category: str
    source: str
    text: str


def balanced_flags(n: int, share: float, rng: np.random.Generator) -> list[bool]:
    """``round(n * share)`` True values among ``n``, in random order."""
    n_true = round(n * share)
    flags = np.array([True] * n_true + [False] * (n - n_true))
    return [bool(v) for v in flags[rng.permutation(n)]]


def plan_unsafebench(
    config: DemoCorpusConfig, sampler: PromptSampler, rng: np.random.Generator
) -> list[SafetyItem]:
    items = []
    for split, size in zip(
        UNSAFEBENCH_SPLITS, (config.unsafebench_train, config.unsafebench_test), strict=True
    ):
        for index, unsafe in enumerate(balanced_flags(size, config.unsafe_fraction, rng)):
            prompt = sampler.draw(rng)
            layout = sample_layout(prompt, rng)
            marker = sample_marker(rng) if unsafe else "none"
            planned = plan_image(prompt, layout, (), config, rng, marker=marker, image_format="png")
            text = "" if rng.random() < EMPTY_TEXT_SHARE else prompt.text
            items.append(
                SafetyItem(
                    item_id=f"{DATASET}-{split}-{index:05d}",
                    split=split,
                    planned=planned,
                    safety_label="Unsafe" if unsafe else "Safe",
                    category=pick(rng, UNSAFE_CATEGORIES),
                    source=pick(rng, SOURCES),
                    text=text,
                )
            )
    return items


def write_unsafebench(
    out: Path, items: list[SafetyItem], encoded: list[bytes]
) -> tuple[list[dict], dict[str, int]]:
    """Write the shards; ``encoded`` holds the PNG bytes of ``items`` in order."""
    truth, counts = [], {}
    by_item = dict(zip((item.item_id for item in items), encoded, strict=True))
    for split in UNSAFEBENCH_SPLITS:
        split_items = [item for item in items if item.split == split]
        shard = f"data/{split}-00000-of-00001.parquet"
        rows = []
        for row, item in enumerate(split_items):
            rows.append(
                {
                    "image": hf_image(by_item[item.item_id], f"{item.item_id}.png"),
                    "safety_label": item.safety_label,
                    "category": item.category,
                    "source": item.source,
                    "text": item.text,
                }
            )
            truth.append(
                {
                    "dataset": DATASET,
                    "split": split,
                    "item_id": item.item_id,
                    "image_id": item.item_id,
                    "image_ref": f"{DATASET}/{shard}::image[{row}]",
                    "prompt": item.text,
                    "category": item.category,
                    "label": int(item.safety_label == "Safe"),
                    "unsafe": item.safety_label == "Unsafe",
                    **item.planned.truth(),
                }
            )
        write_parquet(
            out / DATASET / shard, pa.Table.from_pylist(rows, schema=SCHEMA), hf_image_columns=("image",)
        )
        counts[f"unsafebench_{split}"] = len(rows)
        counts[f"unsafebench_{split}_unsafe"] = sum(item.safety_label == "Unsafe" for item in split_items)
    return truth, counts
