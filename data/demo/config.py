"""Configuration of the synthetic demo corpus (one frozen dataclass, JSON round-trippable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .scene import COLOURS, SHAPES

#: Bumped whenever a change to the generator changes its output for the same configuration, so that a
#: cached corpus written by an older generator is regenerated instead of reused.
GENERATOR_VERSION = "1"

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class DemoCorpusConfig:
    """What to generate. Equal configurations (and generator version) give byte-identical corpora."""

    seed: int = field(default=0, metadata=_help("Master seed; every random choice derives from it."))
    n_prompts: int = field(
        default=1000, metadata=_help("ImageRewardDB-layout prompts over all splits (~6.5 images each).")
    )
    image_size: int = field(default=64, metadata=_help("Edge of every square image in pixels."))
    supersample: int = field(
        default=4, metadata=_help("Shapes are drawn at image_size*supersample, then downsampled.")
    )
    min_images_per_prompt: int = field(default=4, metadata=_help("Fewest images per prompt."))
    max_images_per_prompt: int = field(default=9, metadata=_help("Most images per prompt."))
    split_fractions: tuple[float, float, float] = field(
        default=(0.8, 0.1, 0.1), metadata=_help("Share of prompts in train / validation / test.")
    )
    images_per_zip: int = field(
        default=2000, metadata=_help("Images per zip archive; a prompt's images stay in one zip.")
    )
    two_group_fraction: float = field(
        default=0.6, metadata=_help("Share of prompts with two object groups and a spatial relation.")
    )
    clean_fraction: float = field(
        default=0.4, metadata=_help("Chance that a rated image has no artifact (severity 0).")
    )
    colours: tuple[str, ...] = field(
        default=("red", "green", "blue", "yellow", "purple", "orange"),
        metadata=_help("Object colours used in prompts (names from data.demo.scene.COLOURS)."),
    )
    shapes: tuple[str, ...] = field(
        default=("circle", "square", "triangle"),
        metadata=_help("Object shapes used in prompts (names from data.demo.scene.SHAPES)."),
    )
    mjbench_alignment_pairs: int = field(default=200, metadata=_help("MJ-Bench alignment pairs."))
    mjbench_quality_pairs: int = field(default=120, metadata=_help("MJ-Bench quality (artifact) pairs."))
    mjbench_safety_pairs: int = field(default=80, metadata=_help("MJ-Bench safety pairs."))
    exact_copy_fraction: float = field(
        default=0.1, metadata=_help("Share of benchmark captions that copy a train prompt verbatim.")
    )
    near_copy_fraction: float = field(
        default=0.1, metadata=_help("Share of benchmark captions that nearly copy a train prompt.")
    )
    near_copy_max_distance: float = field(
        default=0.08,
        metadata=_help("Largest normalized Levenshtein distance of a near copy to its train prompt."),
    )
    fresh_min_distance: float = field(
        default=0.15,
        metadata=_help("Smallest normalized Levenshtein distance of a fresh caption to any train prompt."),
    )
    unsafebench_train: int = field(default=400, metadata=_help("UnsafeBench-layout train rows."))
    unsafebench_test: int = field(default=100, metadata=_help("UnsafeBench-layout test rows."))
    unsafe_fraction: float = field(default=0.5, metadata=_help("Share of UnsafeBench rows that are Unsafe."))
    tifa_texts: int = field(default=40, metadata=_help("TIFA160-layout texts (5 generators each)."))

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid DemoCorpusConfig: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.n_prompts < 3:
            yield f"n_prompts must be >= 3 (one per split), got {self.n_prompts}"
        if self.image_size < 16:
            yield f"image_size must be >= 16, got {self.image_size}"
        if self.supersample < 1:
            yield f"supersample must be >= 1, got {self.supersample}"
        if not 2 <= self.min_images_per_prompt <= self.max_images_per_prompt:
            yield (
                "need 2 <= min_images_per_prompt <= max_images_per_prompt, got "
                f"{self.min_images_per_prompt}..{self.max_images_per_prompt}"
            )
        splits_ok = False
        if len(self.split_fractions) != 3 or any(f <= 0 for f in self.split_fractions):
            yield f"split_fractions must be 3 positive numbers, got {self.split_fractions}"
        elif abs(sum(self.split_fractions) - 1.0) > 1e-6:
            yield f"split_fractions must sum to 1, got {sum(self.split_fractions)}"
        else:
            splits_ok = self.n_prompts >= 3
        if self.images_per_zip < 1:
            yield f"images_per_zip must be >= 1, got {self.images_per_zip}"
        for name in ("two_group_fraction", "clean_fraction", "unsafe_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                yield f"{name} must be in [0, 1], got {getattr(self, name)}"
        if self.exact_copy_fraction < 0 or self.near_copy_fraction < 0:
            yield "exact_copy_fraction and near_copy_fraction must be >= 0"
        if self.exact_copy_fraction + self.near_copy_fraction > 0.9:
            yield "exact_copy_fraction + near_copy_fraction must be <= 0.9 (most captions are fresh)"
        if not 0 < self.near_copy_max_distance < self.fresh_min_distance < 1:
            yield (
                "need 0 < near_copy_max_distance < fresh_min_distance < 1, got "
                f"{self.near_copy_max_distance} and {self.fresh_min_distance}"
            )
        unknown_colours = sorted(set(self.colours) - set(COLOURS))
        if unknown_colours or len(set(self.colours)) < 2:
            yield f"colours: need >= 2 distinct known names (unknown: {unknown_colours})"
        unknown_shapes = sorted(set(self.shapes) - set(SHAPES))
        if unknown_shapes or len(set(self.shapes)) < 2:
            yield f"shapes: need >= 2 distinct known names (unknown: {unknown_shapes})"
        for name in (
            "mjbench_alignment_pairs",
            "mjbench_quality_pairs",
            "mjbench_safety_pairs",
            "unsafebench_train",
            "unsafebench_test",
            "tifa_texts",
        ):
            if getattr(self, name) < 0:
                yield f"{name} must be >= 0, got {getattr(self, name)}"
        if splits_ok:
            copies = self.benchmark_copies()
            train = self.split_sizes()["train"]
            if copies > train:
                yield (
                    f"the MJ-Bench pairs need {copies} exact/near copies of distinct train prompts but "
                    f"there are only {train} train prompts: raise n_prompts or lower the pair counts / "
                    "exact_copy_fraction / near_copy_fraction"
                )

    def benchmark_copies(self) -> int:
        """How many benchmark captions copy (exactly or nearly) a train prompt."""
        return sum(
            round(n * self.exact_copy_fraction) + round(n * self.near_copy_fraction)
            for n in (self.mjbench_alignment_pairs, self.mjbench_quality_pairs, self.mjbench_safety_pairs)
        )

    @classmethod
    def with_prompts(cls, n_prompts: int, seed: int = 0) -> DemoCorpusConfig:
        """The default corpus resized to ``n_prompts``: the benchmark, safety and TIFA sets scale in
        proportion (at least 10 of each), so that a small corpus stays a valid one."""
        default = cls()
        ratio = n_prompts / default.n_prompts

        def scaled(name: str) -> int:
            return max(10, round(getattr(default, name) * ratio))

        sized = (
            "mjbench_alignment_pairs",
            "mjbench_quality_pairs",
            "mjbench_safety_pairs",
            "unsafebench_train",
            "unsafebench_test",
            "tifa_texts",
        )
        return cls(seed=seed, n_prompts=n_prompts, **{name: scaled(name) for name in sized})

    @classmethod
    def imagerewarddb_scale(cls, seed: int = 0) -> DemoCorpusConfig:
        """The size of ImageRewardDB's 8k configuration: 8,000 train prompts (~52k images) plus its
        412 validation and 466 test prompts, benchmark and safety sets at their published sizes
        (MJ-Bench v1: alignment 724, quality 1,121, safety 574; UnsafeBench 8,109 / 2,037; TIFA160)."""
        total = 8000 + 412 + 466
        return cls(
            seed=seed,
            n_prompts=total,
            split_fractions=(8000 / total, 412 / total, 466 / total),
            images_per_zip=1600,
            mjbench_alignment_pairs=724,
            mjbench_quality_pairs=1121,
            mjbench_safety_pairs=574,
            unsafebench_train=8109,
            unsafebench_test=2037,
            tifa_texts=160,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoCorpusConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DemoCorpusConfig field(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def split_sizes(self) -> dict[str, int]:
        """Prompts per split: rounded shares, the remainder going to train, each split >= 1."""
        sizes = [max(1, round(self.n_prompts * f)) for f in self.split_fractions[1:]]
        train = self.n_prompts - sum(sizes)
        if train < 1:
            raise ValueError(f"n_prompts={self.n_prompts} leaves no train prompts")
        return dict(zip(SPLITS, [train, *sizes], strict=True))
