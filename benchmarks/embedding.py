"""Embedding benchmark: images per second of the embed stage vs the bare model forward on the same
batches.

Both sides embed the same images in the same batches with the same model:

- stage: :func:`tasks.embed.embed` on a ratings table of ``--images`` rows (fresh artifact root each
  run: read, decode + preprocess, forward, write Parquet; the prompts' text embeddings included);
- bare forward: the same batches decoded and preprocessed beforehand (not timed), then only
  ``encode_images`` per batch plus ``encode_text`` per prompt batch.

The loss is ``1 - stage rate / bare rate``: what the stage spends on decoding, batching and writing.
The model is loaded once per process before timing (import + build are reported apart).

    python -m benchmarks.embedding --corpus /tmp/bench/irdb --model demo-tiny-clip --images 8192
    python -m benchmarks.embedding --corpus /tmp/bench/irdb --model ViT-B-32 --images 512
    python -m benchmarks.embedding --smoke
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.common import add_work_and_out, command_line, machine_facts, measure, smoke_corpus, write_json
from tasks.embed import ClipSpec, _batches, _load_pixels, embed, load_clip
from tasks.ingest import ingest_ratings


def ratings_table(imagerewarddb: Path, images: int, work: Path) -> Path:
    """The first ``images`` rows of the train split's ingest output (the columns embed reads)."""
    ingested = ingest_ratings(imagerewarddb, split="train", image_check="none", root=work / "artifacts")
    table = ingested.read().head(images)
    path = work / f"ratings-{images}.parquet"
    table.write_parquet(path)
    return path


def bare_forward_seconds(ratings_path: Path, clip: ClipSpec) -> tuple[float, float, int]:
    """(image forward seconds, text forward seconds, images): the embed stage's batches of images and
    prompts, each batch decoded and preprocessed first (not timed), then only the model timed."""
    import torch

    encoder = load_clip(clip)
    table = pl.read_parquet(ratings_path, columns=["prompt_id", "prompt", "image_uri"])
    image_seconds = 0.0
    for batch in _batches(table["image_uri"].to_list(), clip.batch_size):
        pixels = torch.stack([_load_pixels(uri, encoder.preprocess) for uri in batch])
        started = time.perf_counter()
        encoder.encode_images(pixels)
        image_seconds += time.perf_counter() - started
    prompts = table.unique("prompt_id", keep="first", maintain_order=True)["prompt"].to_list()
    started = time.perf_counter()
    for batch in _batches(prompts, clip.batch_size):
        encoder.encode_text(batch)
    text_seconds = time.perf_counter() - started
    return image_seconds, text_seconds, table.height


def benchmark(imagerewarddb: Path, *, clip: ClipSpec, images: int, runs: int, work: Path) -> dict[str, Any]:
    _, load = measure(lambda: load_clip(clip))
    ratings_path = ratings_table(imagerewarddb, images, work)
    bare_forward_seconds(ratings_path, clip)  # warm-up (first-call allocations)
    rows = []
    for index in range(runs):
        root = Path(tempfile.mkdtemp(prefix=f"embed{index}-", dir=work))
        try:
            result, stage = measure(lambda root=root: embed(ratings_path, clip=clip, root=root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        image_seconds, text_seconds, count = bare_forward_seconds(ratings_path, clip)
        bare = image_seconds + text_seconds
        rows.append(
            {
                "stage_seconds": stage.seconds,
                "stage_images_per_second": result.rows_kept / stage.seconds,
                "forward_seconds": bare,
                "forward_images_per_second": count / bare,
                "image_forward_seconds": image_seconds,
                "text_forward_seconds": text_seconds,
                "loss": 1 - bare / stage.seconds,
                "stage_peak_rss_mib": stage.peak_rss_mib,
                "load": stage.load_1min,
            }
        )
        print(f"run {index}:", {key: round(value, 4) for key, value in rows[-1].items()}, flush=True)
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {
        "machine": machine_facts(),
        "model": clip.model_name,
        "batch_size": clip.batch_size,
        "images": images,
        "model_load_seconds": load.seconds,
        "runs": rows,
        "median": median,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="a rendered demo corpus")
    source.add_argument("--smoke", action="store_true", help="a 30-prompt corpus, 64 images, one run")
    parser.add_argument("--model", default="demo-tiny-clip")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="embedding-", dir=args.work))
    if args.smoke:
        corpus = smoke_corpus(args.work)
        imagerewarddb, args.images, args.runs, args.batch_size = corpus.imagerewarddb, 64, 1, 16
    else:
        imagerewarddb = args.corpus / "imagerewarddb"
    clip = ClipSpec(model_name=args.model, batch_size=args.batch_size)
    report = benchmark(imagerewarddb, clip=clip, images=args.images, runs=args.runs, work=work)
    report["command"] = command_line("benchmarks.embedding", argv)
    print("median:", {key: round(value, 4) for key, value in report["median"].items()})
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
