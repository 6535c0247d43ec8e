"""Data build benchmark: seconds and peak memory of every stage of build-alignment-data, and of the
naive reference (:mod:`benchmarks.naive_reference`) doing the same work, ratio per stage.

The stages run as plain functions (no Prefect: its overhead is measured by ``cache_rerun``) in flow
order — ingest ratings, ingest benchmark, dedup, ratings, pairs, embed, negatives, assemble — each
run into a fresh artifact root, so every run is a first run (inputs hashed, nothing cached). The embed
stage's model forward is timed on its own (the encoder's methods are wrapped), so "all stages but the
embedding model's forward" is the total minus that forward.

Inputs: a rendered demo corpus (``--corpus``), or one synthesized at a scale (``--synthesize``, see
:mod:`benchmarks.scale_corpus`); for synthesized corpora the embed stage is not run but its output is
synthesized: each image gets the embedding that the embed stage gave to the rendered image whose bytes
it reuses (the same pixels give the same vector), and each prompt is encoded by the same text model.

    python -m benchmarks.data_pipeline --corpus /tmp/bench/irdb --runs 3 --naive
    python -m benchmarks.data_pipeline --synthesize 80000:10000 --source /tmp/bench/irdb --runs 1
    python -m benchmarks.data_pipeline --smoke            # tiny corpus, 1 run, for the test suite
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks import naive_reference as naive
from benchmarks.common import (
    Measurement,
    add_work_and_out,
    command_line,
    lifetime_peak_rss,
    machine_facts,
    markdown_table,
    measure,
    ratio,
    smoke_corpus,
    summarize,
    write_json,
)
from benchmarks.embedding import bare_forward_seconds
from benchmarks.scale_corpus import ScaleSpec, synthesize
from tasks.assemble import assemble_pairs
from tasks.cache import StageResult
from tasks.dedup import dedup
from tasks.embed import ClipEncoder, ClipSpec, embed, load_clip
from tasks.ingest import ingest_benchmark, ingest_ratings
from tasks.negatives import negatives
from tasks.pairs import pairs
from tasks.ratings import ratings

logger = logging.getLogger("benchmarks.data_pipeline")

STAGES = ("ingest_ratings", "ingest_benchmark", "dedup", "ratings", "pairs", "embed", "negatives", "assemble")
NON_EMBEDDING = tuple(stage for stage in STAGES if stage != "embed")


@dataclass(frozen=True)
class PipelineInputs:
    """What the build reads: an ImageRewardDB folder (published layout), an MJ-Bench folder and its
    subsets, and, for synthesized corpora, how to synthesize the embed stage's output."""

    imagerewarddb: Path
    mjbench: Path
    subsets: tuple[str, ...] | None = ("alignment",)
    split: str = "train"
    synthetic_embeddings: SyntheticEmbeddings | None = None


@dataclass(frozen=True)
class SyntheticEmbeddings:
    """The rendered corpus whose image bytes a synthesized corpus reuses, and the embed stage's output
    for that corpus' train images."""

    source: Path
    source_images: Path  # embed stage main table of the source's train images


@dataclass
class PipelineRun:
    """One run of every stage: the stage results and their measurements."""

    results: dict[str, StageResult] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)


def run_stages(
    inputs: PipelineInputs, root: Path, clip: ClipSpec, *, negatives_index: str = "flat", probes: int = 16
) -> PipelineRun:
    """Every stage of build-alignment-data, in flow order, into the artifact root ``root``."""
    run = PipelineRun()

    def step(name: str, function: Callable[[], StageResult]) -> StageResult:
        result, measurement = measure(function)
        run.results[name], run.measurements[name] = result, measurement
        logger.info("%-16s %7.2f s  peak %6.0f MiB", name, measurement.seconds, measurement.peak_rss_mib)
        return result

    subsets = list(inputs.subsets) if inputs.subsets else None
    ingested = step(
        "ingest_ratings", lambda: ingest_ratings(inputs.imagerewarddb, split=inputs.split, root=root)
    )
    benchmark = step("ingest_benchmark", lambda: ingest_benchmark(inputs.mjbench, subsets=subsets, root=root))
    deduped = step("dedup", lambda: dedup(ingested.path, benchmark.path, root=root))
    scored = step("ratings", lambda: ratings(deduped.path, perspective="alignment", root=root))
    paired = step("pairs", lambda: pairs(scored.path, root=root))
    if inputs.synthetic_embeddings is None:
        embedded = step("embed", lambda: embed(scored.path, clip=clip, root=root))
        images_path, texts_path = embedded.path, Path(embedded.paths["text"])
    else:
        images_path, texts_path = synthesize_embed_output(
            scored.path, inputs, load_clip(clip), clip.batch_size, root / "synthetic-embed"
        )
    mined = step(
        "negatives",
        lambda: negatives(
            scored.path, images_path, texts_path, index=negatives_index, probes=probes, root=root
        ),
    )
    step("assemble", lambda: assemble_pairs([paired.path, mined.path], root=root))
    return run


# ------------------------------------------------------------------------ synthesized embed output


def source_image_ids(source: Path) -> list[str]:
    """Ids of the rendered corpus' train images in the order :mod:`benchmarks.scale_corpus` cycles
    their bytes (sorted zips, archive order)."""
    archives = sorted((source / "imagerewarddb" / "images" / "train").glob("*.zip"))
    ids = []
    for archive in archives:
        with zipfile.ZipFile(archive) as handle:
            ids += [Path(name).stem for name in handle.namelist()]
    return ids


def synthesize_embed_output(
    scored_path: Path, inputs: PipelineInputs, encoder: ClipEncoder, batch_size: int, out: Path
) -> tuple[Path, Path]:
    """The embed stage's two tables for a synthesized corpus: image k of ``metadata-train`` reuses the
    bytes of source image ``k mod n``, so it gets that image's embedding; prompts are encoded."""
    assert inputs.synthetic_embeddings is not None
    source_ids = source_image_ids(inputs.synthetic_embeddings.source)
    metadata = pl.read_parquet(
        inputs.imagerewarddb / f"metadata-{inputs.split}.parquet", columns=["image_path"]
    )
    mapping = pl.DataFrame(
        {
            "image_id": metadata["image_path"].str.split("/").list.last().str.replace(r"\.webp$", ""),
            "source_id": [source_ids[k % len(source_ids)] for k in range(metadata.height)],
        }
    )
    source = pl.read_parquet(inputs.synthetic_embeddings.source_images).select(
        pl.col("image_id").alias("source_id"), "embedding"
    )
    scored = pl.read_parquet(scored_path, columns=["image_id", "prompt_id", "prompt"])
    images = (
        scored.select("image_id", "prompt_id")
        .join(mapping, on="image_id", how="left")
        .join(source, on="source_id", how="left")
        .drop("source_id")
    )
    prompts = scored.select("prompt_id", "prompt").unique("prompt_id", keep="first", maintain_order=True)
    texts = prompts["prompt"].to_list()
    vectors = np.concatenate(
        [encoder.encode_text(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    )
    text = prompts.with_columns(pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])))
    out.mkdir(parents=True, exist_ok=True)
    images.write_parquet(out / "images.parquet")
    text.write_parquet(out / "text.parquet")
    return out / "images.parquet", out / "text.parquet"


def source_embeddings(source: Path, clip: ClipSpec, work: Path) -> Path:
    """The embed stage's output for every train image of the rendered corpus ``source`` (computed once:
    the stage cache under ``work`` keeps it)."""
    root = work / "source-artifacts"
    ingested = ingest_ratings(source / "imagerewarddb", split="train", image_check="none", root=root)
    scored = ratings(ingested.path, perspective="alignment", root=root)
    return embed(scored.path, clip=clip, root=root).path


# ----------------------------------------------------------------------------- naive reference


def run_naive(inputs: PipelineInputs, fast: PipelineRun, out: Path) -> dict[str, Measurement]:
    """The naive reference of each non-embedding stage on the same inputs as the stage had."""
    stage_path = {name: result.path for name, result in fast.results.items()}
    shards = sorted(inputs.mjbench.rglob("*.parquet"))
    if inputs.subsets:
        shards = [shard for shard in shards if shard.name.split("-", 1)[0] in inputs.subsets]
    negatives_inputs = fast.results["negatives"]
    manifest = negatives_inputs.manifest_path
    images_path, texts_path = _negatives_inputs(manifest)
    steps: dict[str, Callable[[], Any]] = {
        "ingest_ratings": lambda: naive.ingest_ratings(inputs.imagerewarddb, inputs.split, out),
        "ingest_benchmark": lambda: [naive.ingest_benchmark(shard, out) for shard in shards],
        "dedup": lambda: naive.dedup(stage_path["ingest_ratings"], stage_path["ingest_benchmark"], out),
        "ratings": lambda: naive.ratings(stage_path["dedup"], out),
        "pairs": lambda: naive.pairs(stage_path["ratings"], out),
        "negatives": lambda: naive.negatives(stage_path["ratings"], images_path, texts_path, out),
        "assemble": lambda: naive.assemble([stage_path["pairs"], stage_path["negatives"]], out),
    }
    measurements = {}
    for name, function in steps.items():
        _, measurements[name] = measure(function)
        logger.info("naive %-16s %7.2f s", name, measurements[name].seconds)
    return measurements


def _negatives_inputs(manifest_path: str) -> tuple[Path, Path]:
    import json

    manifest = json.loads(Path(manifest_path).read_text())
    return Path(manifest["inputs"]["images"]["path"]), Path(manifest["inputs"]["texts"]["path"])


def compare_outputs(fast: PipelineRun, out: Path) -> dict[str, bool]:
    """Whether the naive reference's outputs hold the same rows as the stages' (by id)."""

    def ids(path: Path, column: str) -> set:
        return set(pl.read_parquet(path, columns=[column])[column].to_list())

    result = fast.results
    return {
        "ingest_ratings": ids(result["ingest_ratings"].path, "image_id")
        == ids(out / "ingest_ratings.parquet", "image_id"),
        "dedup": ids(result["dedup"].paths["removed"], "prompt_id")
        == ids(out / "dedup.removed.parquet", "prompt_id"),
        "ratings": ids(result["ratings"].path, "image_id") == ids(out / "ratings.parquet", "image_id"),
        "pairs": ids(result["pairs"].path, "pair_id") == ids(out / "pairs.parquet", "pair_id"),
        "negatives_anchors": ids(result["negatives"].path, "chosen_image_id")
        == ids(out / "negatives.parquet", "chosen_image_id"),
        "assemble": pl.read_parquet(result["assemble"].path, columns=["pair_id"])["pair_id"].to_list()
        == pl.read_parquet(out / "assemble.parquet", columns=["pair_id"])["pair_id"].to_list(),
    }


# ------------------------------------------------------------------------------------- reporting


def stage_rows(
    runs: list[PipelineRun], naive_runs: list[dict[str, Measurement]] | None
) -> list[dict[str, Any]]:
    """One row per stage: median seconds, CPU seconds, peak memory, rows, and the naive ratio."""
    rows = []
    for stage in STAGES:
        measured = [run.measurements[stage] for run in runs if stage in run.measurements]
        if not measured:
            continue
        summary = summarize(measured)
        last = runs[-1].results[stage]
        row: dict[str, Any] = {
            "stage": stage,
            "seconds": summary.seconds,
            "cpu_seconds": summary.cpu_seconds,
            "peak_rss_mib": summary.peak_rss_mib,
            "rss_growth_mib": summary.rss_growth_mib,
            "rows_in": last.rows_in,
            "rows_out": last.rows_out.get("main", 0),
            "load": round(float(np.median([m.load_1min for m in measured])), 2),
            "runs_seconds": [round(m.seconds, 3) for m in measured],
        }
        if naive_runs and stage in naive_runs[0]:
            naive_summary = summarize(run[stage] for run in naive_runs)
            row["naive_seconds"] = naive_summary.seconds
            row["naive_peak_rss_mib"] = naive_summary.peak_rss_mib
            row["speedup"] = ratio(naive_summary.seconds, summary.seconds)
        rows.append(row)
    return rows


def totals(rows: list[dict[str, Any]], forward: float) -> dict[str, Any]:
    """Totals over the non-embedding stages, the embed stage less the bare model forward on its
    batches (``forward`` seconds), and the ratio to the naive reference."""
    by_stage = {row["stage"]: row for row in rows}
    non_embedding = sum(by_stage[stage]["seconds"] for stage in NON_EMBEDDING if stage in by_stage)
    embed_overhead = max(by_stage["embed"]["seconds"] - forward, 0.0) if "embed" in by_stage else 0.0
    summary: dict[str, Any] = {
        "non_embedding_seconds": non_embedding,
        "embed_forward_seconds": forward,
        "embed_without_forward_seconds": embed_overhead,
        "all_but_forward_seconds": non_embedding + embed_overhead,
        "peak_rss_mib_non_embedding": max(
            by_stage[stage]["peak_rss_mib"] for stage in NON_EMBEDDING if stage in by_stage
        ),
    }
    naive_total = sum(
        by_stage[stage].get("naive_seconds", 0.0) for stage in NON_EMBEDDING if stage in by_stage
    )
    if naive_total:
        summary["naive_non_embedding_seconds"] = naive_total
        summary["speedup_non_embedding"] = ratio(naive_total, non_embedding)
    return summary


def benchmark(
    inputs: PipelineInputs,
    *,
    runs: int,
    clip: ClipSpec,
    work: Path,
    with_naive: bool,
    negatives_index: str = "flat",
    probes: int = 16,
) -> dict[str, Any]:
    """``runs`` first runs of every stage (and of the naive reference); medians and ratios. After the
    last run, the bare model forward on the embed stage's batches (see :mod:`benchmarks.embedding`)."""
    load_seconds = measure(lambda: load_clip(clip))[1].seconds
    pipeline_runs: list[PipelineRun] = []
    naive_runs: list[dict[str, Measurement]] = []
    equal: dict[str, bool] = {}
    forward = {"image_seconds": 0.0, "text_seconds": 0.0, "images": 0}
    for index in range(runs):
        root = Path(tempfile.mkdtemp(prefix=f"run{index}-", dir=work))
        try:
            run = run_stages(inputs, root, clip, negatives_index=negatives_index, probes=probes)
            pipeline_runs.append(run)
            if with_naive:
                naive_out = root / "naive"
                naive_runs.append(run_naive(inputs, run, naive_out))
                equal = compare_outputs(run, naive_out)
            if index == runs - 1 and "embed" in run.results:
                image_seconds, text_seconds, images = bare_forward_seconds(run.results["ratings"].path, clip)
                forward = {"image_seconds": image_seconds, "text_seconds": text_seconds, "images": images}
        finally:
            shutil.rmtree(root, ignore_errors=True)
    rows = stage_rows(pipeline_runs, naive_runs or None)
    last = pipeline_runs[-1]
    return {
        "machine": machine_facts(),
        "inputs": {
            "imagerewarddb": str(inputs.imagerewarddb),
            "mjbench": str(inputs.mjbench),
            "subsets": inputs.subsets,
            "synthetic_embeddings": inputs.synthetic_embeddings is not None,
        },
        "runs": runs,
        "clip": {"model": clip.model_name, "batch_size": clip.batch_size},
        "negatives_index": negatives_index if negatives_index == "flat" else f"ivf, {probes} probes",
        "embed_model_load_seconds": load_seconds,
        "bare_forward": forward,
        "counts": {
            "train_images": last.results["ingest_ratings"].rows_kept,
            "prompts": last.results["ingest_ratings"].stats.get("prompts"),
            "captions": last.results["ingest_benchmark"].stats.get("captions"),
            "rating_pairs": last.results["pairs"].stats.get("pairs"),
            "negative_pairs": last.results["negatives"].rows_kept,
            "assembled_pairs": last.results["assemble"].rows_kept,
        },
        "stages": rows,
        "totals": totals(rows, forward["image_seconds"] + forward["text_seconds"]),
        "naive_outputs_equal": equal,
        "process_peak_rss_mib": lifetime_peak_rss() / 2**20,
    }


def print_report(report: dict[str, Any]) -> None:
    columns = ["stage", "seconds", "cpu_seconds", "peak_rss_mib", "rows_in", "rows_out", "load"]
    if any("speedup" in row for row in report["stages"]):
        columns += ["naive_seconds", "speedup"]
    print(markdown_table(report["stages"], columns))
    print(
        {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in report["totals"].items()
        }
    )
    print("counts", report["counts"], "| model load", round(report["embed_model_load_seconds"], 2), "s")
    if report["naive_outputs_equal"]:
        print("naive outputs equal:", report["naive_outputs_equal"])


def _log_to_stderr() -> None:
    """Progress lines on stderr (Prefect, imported by the stages, owns the root logger)."""
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _smoke_inputs(work: Path) -> PipelineInputs:
    corpus = smoke_corpus(work)
    return PipelineInputs(corpus.imagerewarddb, corpus.mjbench)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="a rendered demo corpus (imagerewarddb/, mjbench/)")
    source.add_argument(
        "--synthesize", metavar="PROMPTS:CAPTIONS", help="synthesize a corpus of this many train prompts"
    )
    source.add_argument("--smoke", action="store_true", help="a 30-prompt corpus, one run (tests)")
    parser.add_argument("--source", type=Path, help="rendered corpus whose images --synthesize reuses")
    parser.add_argument("--subsets", default="alignment", help="MJ-Bench subsets, comma-separated ('' = all)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also run the naive reference")
    parser.add_argument("--clip-model", default="demo-tiny-clip")
    parser.add_argument("--negatives-index", choices=("flat", "ivf"), default="flat")
    parser.add_argument("--probes", type=int, default=16, help="IVF lists searched per query")
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    _log_to_stderr()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    clip = ClipSpec(model_name=args.clip_model)
    subsets = tuple(name for name in args.subsets.split(",") if name) or None
    if args.smoke:
        inputs = _smoke_inputs(args.work)
        args.runs = 1
    elif args.corpus:
        inputs = PipelineInputs(args.corpus / "imagerewarddb", args.corpus / "mjbench", subsets)
    else:
        if args.source is None:
            parser.error("--synthesize needs --source (a rendered demo corpus)")
        prompts, captions = (int(part) for part in args.synthesize.split(":"))
        spec = ScaleSpec(prompts, captions, str(args.source.resolve()))
        corpus = synthesize(args.work / f"scaled-{prompts}-{captions}", spec)
        logger.info("synthesized corpus ready (%.1f s): %s", corpus.seconds, corpus.counts)
        synthetic = SyntheticEmbeddings(args.source, source_embeddings(args.source, clip, args.work))
        inputs = PipelineInputs(corpus.imagerewarddb, corpus.mjbench, ("alignment",), "train", synthetic)
    report = benchmark(
        inputs,
        runs=args.runs,
        clip=clip,
        work=args.work,
        with_naive=args.naive,
        negatives_index=args.negatives_index,
        probes=args.probes,
    )
    report["command"] = command_line("benchmarks.data_pipeline", argv)
    print_report(report)
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
