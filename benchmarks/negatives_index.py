"""Exact vs approximate hard-negative search: seconds of :func:`tasks.negatives.mine_negatives` with
the exact ``flat`` index and with the IVF index at several ``probes``, and how often IVF picks the
same negative as the exact search (per kind), on the same embeddings.

Inputs are prepared once (ingest without image checks, ratings, then the embed stage on a rendered
corpus or the synthesized embed output on a synthesized one, as in :mod:`benchmarks.data_pipeline`).

    python -m benchmarks.negatives_index --corpus /tmp/bench/irdb --probes 8,16,32
    python -m benchmarks.negatives_index --synthesize 24000:3000 --source /tmp/bench/irdb
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.common import (
    add_work_and_out,
    command_line,
    machine_facts,
    markdown_table,
    measure,
    write_json,
)
from benchmarks.data_pipeline import (
    PipelineInputs,
    SyntheticEmbeddings,
    source_embeddings,
    synthesize_embed_output,
)
from benchmarks.scale_corpus import ScaleSpec, synthesize
from tasks.embed import ClipSpec, embed, load_clip
from tasks.ingest import ingest_ratings
from tasks.negatives import mine_negatives
from tasks.ratings import ratings


def prepare(inputs: PipelineInputs, clip: ClipSpec, root: Path) -> tuple[Path, Path, Path]:
    """(scored, image embeddings, text embeddings) paths for the corpus of ``inputs``."""
    ingested = ingest_ratings(inputs.imagerewarddb, split=inputs.split, image_check="none", root=root)
    scored = ratings(ingested.path, perspective="alignment", root=root)
    if inputs.synthetic_embeddings is None:
        embedded = embed(scored.path, clip=clip, root=root)
        return scored.path, embedded.path, Path(embedded.paths["text"])
    images, texts = synthesize_embed_output(
        scored.path, inputs, load_clip(clip), clip.batch_size, root / "synthetic-embed"
    )
    return scored.path, images, texts


def agreement(exact: pl.DataFrame, approximate: pl.DataFrame) -> dict[str, float]:
    """Per kind: the share of anchors whose negative is the same in both tables (an anchor missing
    from one side counts as a disagreement)."""
    shares = {}
    for kind, column in (("negative_text", "rejected_prompt"), ("negative_image", "rejected_image_id")):
        left = exact.filter(pl.col("kind") == kind).select("chosen_image_id", column)
        right = approximate.filter(pl.col("kind") == kind).select("chosen_image_id", column)
        joined = left.join(right, on="chosen_image_id", how="full", suffix="_ivf", coalesce=True)
        same = (joined[column] == joined[f"{column}_ivf"]).fill_null(False)
        shares[kind] = float(same.mean()) if joined.height else 1.0
    return shares


def benchmark(inputs: PipelineInputs, *, probes: list[int], clip: ClipSpec, work: Path) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="negatives-", dir=work))
    scored_path, images_path, texts_path = prepare(inputs, clip, root)
    scored, images, texts = (pl.read_parquet(path) for path in (scored_path, images_path, texts_path))
    (exact, _, exact_stats), flat = measure(lambda: mine_negatives(scored, images, texts))
    rows: list[dict[str, Any]] = [
        {
            "index": "flat",
            "probes": "-",
            "seconds": flat.seconds,
            "cpu_seconds": flat.cpu_seconds,
            "load": flat.load_1min,
        }
    ]
    for count in probes:
        (pairs, _, stats), run = measure(
            lambda count=count: mine_negatives(scored, images, texts, index="ivf", probes=count)
        )
        same = agreement(exact, pairs)
        rows.append(
            {
                "index": "ivf",
                "probes": count,
                "seconds": run.seconds,
                "cpu_seconds": run.cpu_seconds,
                "same_text_negative": same["negative_text"],
                "same_image_negative": same["negative_image"],
                "image_similarity_ratio": stats["mean_image_similarity"]
                / exact_stats["mean_image_similarity"],
                "load": run.load_1min,
            }
        )
    return {
        "machine": machine_facts(),
        "images": images.height,
        "anchors": exact_stats["anchors"],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="a rendered demo corpus")
    source.add_argument("--synthesize", metavar="PROMPTS:CAPTIONS")
    parser.add_argument("--source", type=Path, help="rendered corpus whose images --synthesize reuses")
    parser.add_argument("--probes", default="8,16,32")
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    clip = ClipSpec()
    if args.corpus:
        inputs = PipelineInputs(args.corpus / "imagerewarddb", args.corpus / "mjbench")
    else:
        if args.source is None:
            parser.error("--synthesize needs --source")
        prompts, captions = (int(part) for part in args.synthesize.split(":"))
        corpus = synthesize(
            args.work / f"scaled-{prompts}-{captions}", ScaleSpec(prompts, captions, str(args.source))
        )
        synthetic = SyntheticEmbeddings(args.source, source_embeddings(args.source, clip, args.work))
        inputs = PipelineInputs(corpus.imagerewarddb, corpus.mjbench, synthetic_embeddings=synthetic)
    report = benchmark(inputs, probes=[int(p) for p in args.probes.split(",")], clip=clip, work=args.work)
    report["command"] = command_line("benchmarks.negatives_index", argv)
    columns = [
        "index",
        "probes",
        "seconds",
        "cpu_seconds",
        "same_text_negative",
        "same_image_negative",
        "load",
    ]
    print(markdown_table(report["rows"], columns))
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
