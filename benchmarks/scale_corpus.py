"""Synthesize ImageRewardDB / MJ-Bench inputs at any scale without rendering a single image.

Rendering 10x the demo corpus (~520k images) would take a quarter of an hour; the non-embedding
stages do not look at pixels beyond an image header. So this module writes the *published layouts*
at the asked size with real image bytes taken, in a cycle, from an already rendered demo corpus:

- ImageRewardDB: the demo generator's own planner (:func:`data.demo.imagereward.plan_imagerewarddb`:
  prompts, 4-9 images each, ratings and ranks) and writer (:func:`~data.demo.imagereward.
  write_imagerewarddb`: ``metadata-{split}.parquet`` + stored zips of ``<uuid>.webp``), fed with the
  rendered corpus' WebP bytes instead of newly rendered ones. Every image id, zip member and prompt id
  is new; only the pixels repeat (image k gets the bytes of source image ``k mod n``).
- MJ-Bench: ``data/alignment-00000-of-00001.parquet`` (HF layout) with ``captions`` captions: 10%
  exact copies of train prompts, 10% one-edit near copies, the rest drawn from the benchmark
  templates; both images of each pair are source PNGs (cycled).

Colours and shapes are all those the demo scene knows (the default six colours x three shapes run
out of distinct prompts near 77k). A ``scaled.json`` marker makes a second call with the same
arguments reuse the folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import cycle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.demo import CorpusLayout, DemoCorpusConfig
from data.demo.imagereward import plan_imagerewarddb, write_imagerewarddb
from data.demo.mjbench import SCHEMA as MJBENCH_SCHEMA
from data.demo.overlap import near_copy
from data.demo.samples import PromptSampler
from data.demo.scene import BENCHMARK_TEMPLATES, COLOURS, SHAPES
from data.demo.writers import hf_image, write_parquet

MARKER = "scaled.json"
#: Published ImageRewardDB shares: 8,000 train, 412 validation, 466 test prompts.
SPLIT_FRACTIONS = (8000 / 8878, 412 / 8878, 466 / 8878)


@dataclass(frozen=True)
class ScaleSpec:
    """What to synthesize: train prompts (validation / test added in ImageRewardDB's proportions),
    benchmark captions, the seed, and the rendered corpus whose image bytes are reused."""

    train_prompts: int
    captions: int
    source: str
    seed: int = 0
    images_per_zip: int = 1600

    @property
    def total_prompts(self) -> int:
        return round(self.train_prompts / SPLIT_FRACTIONS[0])


@dataclass(frozen=True)
class ScaledCorpus(CorpusLayout):
    """A synthesized corpus: the demo corpus' layout, its row counts and how long it took."""

    counts: dict[str, int]
    seconds: float


def source_webp_bytes(source: Path) -> list[bytes]:
    """Every WebP of the rendered corpus' ImageRewardDB train zips, in archive order."""
    archives = sorted((source / "imagerewarddb" / "images" / "train").glob("*.zip"))
    if not archives:
        raise FileNotFoundError(f"{source}: no imagerewarddb/images/train/*.zip to take image bytes from")
    images = []
    for archive in archives:
        with zipfile.ZipFile(archive) as handle:
            images += [handle.read(name) for name in handle.namelist()]
    return images


def source_png_bytes(source: Path, limit: int = 512) -> list[bytes]:
    """Up to ``limit`` PNGs from the rendered corpus' MJ-Bench alignment shard."""
    shard = source / "mjbench" / "data" / "alignment-00000-of-00001.parquet"
    table = pq.read_table(shard, columns=["image0", "image1"]).slice(0, limit // 2)
    cells = table.column("image0").to_pylist() + table.column("image1").to_pylist()
    return [cell["bytes"] for cell in cells]


def _config(spec: ScaleSpec) -> DemoCorpusConfig:
    return DemoCorpusConfig(
        seed=spec.seed,
        n_prompts=spec.total_prompts,
        split_fractions=SPLIT_FRACTIONS,
        images_per_zip=spec.images_per_zip,
        colours=tuple(COLOURS),
        shapes=tuple(SHAPES),
        mjbench_alignment_pairs=0,
        mjbench_quality_pairs=0,
        mjbench_safety_pairs=0,
    )


def write_scaled_imagerewarddb(out: Path, spec: ScaleSpec, images: list[bytes]) -> tuple[list, dict]:
    """The ImageRewardDB layout at ``spec``'s size under ``out / 'imagerewarddb'``; returns the plan
    and the writer's counts."""
    config = _config(spec)
    sampler = PromptSampler(config)
    plan = plan_imagerewarddb(config, sampler, np.random.default_rng([spec.seed, 1]))
    stream: Iterator[bytes] = cycle(images)
    _, counts = write_imagerewarddb(out, plan, stream, config)
    return plan, counts


def benchmark_captions(
    train_texts: list[str], count: int, rng: np.random.Generator, sampler: PromptSampler
) -> list[str]:
    """``count`` captions: 10% exact copies, 10% near copies of train prompts, the rest fresh."""
    order = rng.permutation(len(train_texts))
    n_copy = min(count // 10, len(train_texts) // 2)
    exact = [train_texts[int(i)] for i in order[:n_copy]]
    taken = set(train_texts)
    near = []
    for i in order[n_copy:]:
        if len(near) == n_copy:
            break
        variant = near_copy(train_texts[int(i)], rng, 0.08, taken)
        if variant is not None:
            taken.add(variant)
            near.append(variant)
    fresh = [sampler.draw(rng, BENCHMARK_TEMPLATES).text for _ in range(count - len(exact) - len(near))]
    captions = exact + near + fresh
    return [captions[int(i)] for i in rng.permutation(len(captions))]


def write_scaled_mjbench(out: Path, captions: list[str], images: list[bytes]) -> Path:
    """An MJ-Bench HF alignment shard with one pair per caption."""
    pool = cycle(images)
    rows = [
        {
            "caption": caption,
            "image0": hf_image(next(pool), f"alignment-{index:06d}_image0.png"),
            "image1": hf_image(next(pool), f"alignment-{index:06d}_image1.png"),
            "label": index % 2,
            "info": json.dumps({"id": f"alignment-{index:06d}", "category": "synthetic"}),
        }
        for index, caption in enumerate(captions)
    ]
    path = out / "mjbench" / "data" / "alignment-00000-of-00001.parquet"
    write_parquet(
        path, pa.Table.from_pylist(rows, schema=MJBENCH_SCHEMA), hf_image_columns=("image0", "image1")
    )
    return path


def synthesize(out: str | Path, spec: ScaleSpec) -> ScaledCorpus:
    """Write (or reuse) the scaled corpus of ``spec`` in ``out``."""
    out = Path(out)
    marker = out / MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("spec") == asdict(spec):
            return ScaledCorpus(out, recorded["counts"], 0.0)
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    source = Path(spec.source)
    plan, counts = write_scaled_imagerewarddb(out, spec, source_webp_bytes(source))
    train_texts = [prompt.prompt.text for prompt in plan if prompt.split == "train"]
    sampler = PromptSampler(_config(spec))
    sampler.used.update(prompt.prompt.text for prompt in plan)
    captions = benchmark_captions(train_texts, spec.captions, np.random.default_rng([spec.seed, 2]), sampler)
    write_scaled_mjbench(out, captions, source_png_bytes(source))
    counts["mjbench_captions"] = len(captions)
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({"spec": asdict(spec), "counts": counts, "seconds": seconds}, indent=2))
    return ScaledCorpus(out, counts, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-prompts", type=int, required=True)
    parser.add_argument("--captions", type=int, required=True)
    parser.add_argument("--source", type=Path, required=True, help="a rendered demo corpus")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = synthesize(args.out, ScaleSpec(args.train_prompts, args.captions, str(args.source), args.seed))
    print(json.dumps({"root": str(corpus.root), "seconds": round(corpus.seconds, 1), **corpus.counts}))


if __name__ == "__main__":
    main()
