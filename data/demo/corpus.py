"""Generate the whole demo corpus atomically, or reuse an identical one already on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import imagereward, mjbench, tifa, unsafebench
from .config import GENERATOR_VERSION, DemoCorpusConfig
from .ground_truth import write_ground_truth
from .pool import render_stream, take
from .samples import PromptSampler
from .writers import write_json

MANIFEST_NAME = "corpus.json"
GENERATOR_NAME = "data.demo"
#: Independent random streams, so that resizing one dataset leaves the others unchanged.
STREAMS = {"imagerewarddb": 1, "mjbench": 2, "unsafebench": 3, "tifa160": 4}


@dataclass(frozen=True)
class CorpusLayout:
    """Where each dataset of a corpus folder lives: the published layouts under one root."""

    root: Path

    @property
    def imagerewarddb(self) -> Path:
        return self.root / imagereward.DATASET

    @property
    def mjbench(self) -> Path:
        return self.root / mjbench.DATASET

    @property
    def unsafebench(self) -> Path:
        return self.root / unsafebench.DATASET

    @property
    def tifa160(self) -> Path:
        return self.root / tifa.DATASET

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    def image_uri(self, image_ref: str) -> str:
        """The :mod:`data.images` reference of a ground-truth ``image_ref`` (relative to the root)."""
        return str(self.root / image_ref)


@dataclass(frozen=True)
class DemoCorpus(CorpusLayout):
    """Where a generated corpus lives and what it holds."""

    config: DemoCorpusConfig
    counts: dict[str, int]
    generated: bool = True  # False when an identical corpus on disk was reused
    seconds: float = 0.0

    def summary(self) -> str:
        """Human-readable paths and counts (what the CLI prints)."""
        state = "generated" if self.generated else "reused (same config and generator version)"
        lines = [f"demo corpus {state} in {self.seconds:.1f} s: {self.root}"]
        for name in ("imagerewarddb", "mjbench", "unsafebench", "tifa160", "ground_truth", "manifest"):
            lines.append(f"  {name:14s} {getattr(self, name)}")
        lines += [f"  {key} = {value}" for key, value in self.counts.items()]
        return "\n".join(lines)


def _rng(config: DemoCorpusConfig, stream: str) -> np.random.Generator:
    return np.random.default_rng([config.seed, STREAMS[stream]])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_list(root: Path) -> list[dict]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return [
        {"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in files
    ]


def _build(root: Path, config: DemoCorpusConfig, workers: int) -> dict[str, int]:
    """Plan every image, render them (streaming into the writers) and write every layout."""
    sampler = PromptSampler(config)
    rated = imagereward.plan_imagerewarddb(config, sampler, _rng(config, "imagerewarddb"))
    train = [(p.prompt_id, p.prompt) for p in rated if p.split == "train"]
    pairs = mjbench.plan_mjbench(config, train, sampler, _rng(config, "mjbench"))
    safety = unsafebench.plan_unsafebench(config, sampler, _rng(config, "unsafebench"))
    tifa_items = tifa.plan_tifa(config, sampler, _rng(config, "tifa160"))

    rated_specs = imagereward.specs_in_order(rated)
    pair_specs = mjbench.specs_in_order(pairs)
    safety_specs = [item.planned.spec for item in safety]
    tifa_specs = [item.planned.spec for item in tifa_items]
    stream = render_stream(rated_specs + pair_specs + safety_specs + tifa_specs, workers)

    truth, counts = imagereward.write_imagerewarddb(root, rated, stream, config)
    for rows, part_counts in (
        mjbench.write_mjbench(root, pairs, take(stream, len(pair_specs)), train),
        unsafebench.write_unsafebench(root, safety, take(stream, len(safety_specs))),
        tifa.write_tifa(root, tifa_items, take(stream, len(tifa_specs))),
    ):
        truth += rows
        counts.update(part_counts)
    if next(stream, None) is not None:
        raise RuntimeError("render stream has more images than the writers consumed")
    write_ground_truth(root, truth)
    counts["ground_truth_rows"] = len(truth)
    counts["images"] = len(rated_specs) + len(pair_specs) + len(safety_specs) + len(tifa_specs)
    return counts


def _manifest(root: Path, config: DemoCorpusConfig, counts: dict[str, int]) -> dict:
    return {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "counts": counts,
        "files": _file_list(root),
    }


def load_demo_corpus(out_dir: Path, config: DemoCorpusConfig) -> DemoCorpus | None:
    """The corpus in ``out_dir`` if it is complete and was made from ``config`` by this generator
    version (every listed file present with its size); else None."""
    manifest_path = Path(out_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("config") != config.to_dict():
        return None
    for entry in manifest.get("files", []):
        path = Path(out_dir) / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return None
    return DemoCorpus(Path(out_dir), config, dict(manifest["counts"]), generated=False)


def _is_replaceable(out_dir: Path) -> bool:
    """An absent or empty folder, or one that holds a demo corpus (ours to overwrite)."""
    if not out_dir.exists():
        return True
    if not out_dir.is_dir():
        return False
    return (out_dir / MANIFEST_NAME).is_file() or not any(out_dir.iterdir())


def generate_demo_corpus(
    out_dir: Path, config: DemoCorpusConfig | None = None, *, workers: int = 2
) -> DemoCorpus:
    """Write the demo corpus into ``out_dir`` (see the package docstring for the layouts).

    Builds in a temporary folder beside ``out_dir`` and renames it into place, writing the
    ``corpus.json`` manifest last, so an interrupted run never leaves a corpus that looks complete.
    If ``out_dir`` already holds a complete corpus of the same config and generator version it is
    returned as is. ``workers`` only changes speed, never the bytes written.
    """
    config = config or DemoCorpusConfig()
    out_dir = Path(out_dir).absolute()
    started = time.perf_counter()
    existing = load_demo_corpus(out_dir, config)
    if existing is not None:
        return replace(existing, seconds=time.perf_counter() - started)
    if not _is_replaceable(out_dir):
        raise FileExistsError(
            f"{out_dir} exists and is not a demo corpus (no {MANIFEST_NAME}); refusing to overwrite it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        counts = _build(staging, config, workers)
        write_json(staging / MANIFEST_NAME, _manifest(staging, config, counts), indent=2)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DemoCorpus(out_dir, config, counts, generated=True, seconds=time.perf_counter() - started)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``, replacing an old corpus (or empty folder) there."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "corpus")
    try:
        os.replace(staging, out_dir)
    except OSError:
        if old is not None:  # put the previous corpus back
            os.replace(old / "corpus", out_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
