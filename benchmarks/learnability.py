"""Does the reward model learn? Train the tiny random-weight backbone on the demo corpus, on the CPU.

For each perspective (alignment, fidelity: preference pairs with Bradley-Terry; safety: unpaired rows
with cross-entropy) and each head (SkipCA, linear), train for a fixed wall-time budget and report the
held-out metrics: pairwise accuracy, per-attribute accuracy for alignment (pairs joined with the
corpus' ``ground_truth.parquet`` by image id: which mistake the rejected image has that the chosen one
lacks), per-artifact accuracy for fidelity (clean vs each artifact, or two degraded images), and
accuracy / F1 (unsafe = positive) for safety.

Data: the demo corpus in its published layouts, through the pipeline's own stages (ingest → ratings
→ pairs → assemble, optionally + FAISS hard negatives); held out = the assembled validation split (by
prompt) for pairs, UnsafeBench's test split for safety.

    python -m benchmarks.learnability --minutes 15              # the full benchmark (~6 runs x 15 min)
    python -m benchmarks.learnability --quick                   # smoke test: tiny corpus, 10 steps a run
    python -m benchmarks.learnability --perspectives alignment --heads skipca --minutes 3

Defaults: the tiny LLaVA of :mod:`reward.tiny` (64 px, hidden 64, 2 layers, random and frozen vision
tower), LoRA rank 32 on every projection of the language model's layers (attention and MLP; the
random tiny LM has little to offer otherwise), projector and head trained, AdamW at a constant 1e-3,
32 pairs per step, 1 torch thread for the model plus 1 data-loading process, a 4,000-prompt corpus.
Results go to ``--out`` (default ``artifacts/learnability``) as ``results.json`` and are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from data.demo import DemoCorpusConfig, generate_demo_corpus
from data.demo.scene import MISTAKE_CATEGORIES
from reward.config import BackboneConfig, HeadConfig, LoraSettings, LossConfig
from reward.data import PairDataset, UnpairedDataset
from reward.metrics import safety_binary_metrics
from reward.tiny import build_tiny_backbone
from reward.training import TrainingConfig, TrainingJob, train_reward_model

logger = logging.getLogger("benchmarks.learnability")

PERSPECTIVES = ("alignment", "fidelity", "safety")
HEADS = ("skipca", "linear")
#: LoRA target projections inside the language model's layers (Llama naming, as in the tiny LLaVA).
LORA_TARGETS = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
#: The aims of issue 3 (held-out, within 15 CPU minutes per run).
AIMS = {"alignment": 0.85, "fidelity": 0.90, "safety": 0.90}


@dataclass
class BenchmarkConfig:
    """What to run."""

    out: Path = field(default=Path("artifacts/learnability"), metadata={"help": "Output folder."})
    prompts: int = field(default=4000, metadata={"help": "Demo corpus prompts (80% train)."})
    minutes: float = field(default=15.0, metadata={"help": "Training wall time per run."})
    max_steps: int = field(default=-1, metadata={"help": "Step limit per run (-1: only the time budget)."})
    perspectives: tuple[str, ...] = field(default=PERSPECTIVES, metadata={"help": "Perspectives to train."})
    heads: tuple[str, ...] = field(default=HEADS, metadata={"help": "Heads to compare."})
    batch_size: int = field(default=32, metadata={"help": "Pairs (or rows) per step."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW learning rate (constant after warm-up)."}
    )
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank on the language model."})
    lora_targets: str = field(
        default="all",
        metadata={"help": "'attention' (q/k/v/o projections) or 'all' (attention + MLP) LM projections."},
    )
    hard_negatives: bool = field(default=False, metadata={"help": "Add FAISS hard negatives to alignment."})
    threads: int = field(default=1, metadata={"help": "torch threads for the model."})
    workers: int = field(default=1, metadata={"help": "Data-loading processes (decode + processor)."})
    seed: int = field(default=0, metadata={"help": "Corpus, initialization and data-order seed."})

    @classmethod
    def quick(cls, out: Path) -> BenchmarkConfig:
        """A smoke test: a small corpus and 10 steps per run."""
        return cls(out=out, prompts=60, minutes=2.0, max_steps=10, batch_size=8)


# --------------------------------------------------------------------------------------------------
# Data


def build_corpus(config: BenchmarkConfig) -> Path:
    corpus_config = DemoCorpusConfig.with_prompts(config.prompts, config.seed)
    root = config.out / f"corpus-{config.prompts}p-seed{config.seed}"
    return generate_demo_corpus(root, corpus_config).root


def pair_tables(
    corpus: Path, perspective: str, artifacts: Path, *, hard_negatives: bool, seed: int
) -> tuple[str, str]:
    """(train, held-out) assembled pair tables of ``perspective`` from the corpus' train split."""
    from tasks.assemble import assemble_pairs
    from tasks.ingest import ingest_ratings
    from tasks.pairs import pairs
    from tasks.ratings import ratings

    ingested = ingest_ratings(corpus / "imagerewarddb", split="train", root=artifacts)
    scored = ratings(ingested.path, perspective=perspective, root=artifacts)
    tables = [pairs(scored.path, root=artifacts).path]
    if hard_negatives:
        from tasks.embed import ClipSpec, embed
        from tasks.negatives import negatives

        embedded = embed(scored.path, clip=ClipSpec(model_name="demo-tiny-clip", seed=seed), root=artifacts)
        tables.append(negatives(scored.path, embedded.path, embedded.paths["text"], root=artifacts).path)
    assembled = assemble_pairs(tables, seed=seed, validation_fraction=0.1, root=artifacts)
    return str(assembled.path), assembled.paths["validation"]


def safety_tables(corpus: Path, artifacts: Path, *, seed: int) -> tuple[str, str]:
    """(train, held-out): UnsafeBench-layout train rows, and its test split."""
    from tasks.assemble import assemble_unpaired
    from tasks.ingest import ingest_safety

    train = assemble_unpaired(
        ingest_safety(corpus / "unsafebench", split="train", root=artifacts).path,
        seed=seed,
        validation_fraction=0.0,
        root=artifacts,
    )
    test = assemble_unpaired(
        ingest_safety(corpus / "unsafebench", split="test", root=artifacts).path,
        seed=seed,
        validation_fraction=0.0,
        root=artifacts,
    )
    return str(train.path), str(test.path)


def _mistakes(text: str | None) -> set[tuple[str, int]]:
    return {(item["kind"], int(item["group"])) for item in json.loads(text or "[]")}


def pair_attribute(kind: str, chosen_mistakes: str | None, rejected_mistakes: str | None) -> str:
    """What a pair tests: the category (colour, shape, count, spatial, existence) of the mistakes the
    rejected image has and the chosen one lacks; 'multiple' when they span several categories; hard
    negatives by their kind (negative_text / negative_image)."""
    if kind != "rating":
        return kind
    extra = _mistakes(rejected_mistakes) - _mistakes(chosen_mistakes)
    categories = {MISTAKE_CATEGORIES[name] for name, _ in extra}
    if len(categories) == 1:
        return categories.pop()
    return "multiple" if categories else "other"


def pair_artifacts(kind: str, chosen_artifact: str | None, rejected_artifact: str | None) -> str:
    """What a fidelity pair tests: ``clean vs <artifact>`` when the chosen image is clean, else
    ``artifact vs artifact`` (two degraded images of different severity)."""
    if kind != "rating":
        return kind
    if chosen_artifact in (None, "none"):
        return f"clean vs {rejected_artifact}"
    return "artifact vs artifact"


def _with_ground_truth(pairs: pl.DataFrame, ground_truth: pl.DataFrame, column: str) -> pl.DataFrame:
    """``kind`` and the ground truth's ``column`` of the chosen and the rejected image, in pair order."""
    truth = ground_truth.select("image_id", column).unique("image_id")
    return (
        pairs.with_row_index("_row")
        .join(
            truth.rename({"image_id": "chosen_image_id", column: "_chosen"}), on="chosen_image_id", how="left"
        )
        .join(
            truth.rename({"image_id": "rejected_image_id", column: "_rejected"}),
            on="rejected_image_id",
            how="left",
        )
        .sort("_row")
        .select("kind", "_chosen", "_rejected")
    )


def pair_attributes(pairs: pl.DataFrame, ground_truth: pl.DataFrame) -> list[str]:
    """:func:`pair_attribute` of every pair, joining chosen and rejected image ids to the ground truth."""
    return [pair_attribute(*row) for row in _with_ground_truth(pairs, ground_truth, "mistakes").iter_rows()]


def pair_artifact_slices(pairs: pl.DataFrame, ground_truth: pl.DataFrame) -> list[str]:
    """:func:`pair_artifacts` of every (fidelity) pair."""
    return [pair_artifacts(*row) for row in _with_ground_truth(pairs, ground_truth, "artifact").iter_rows()]


#: How held-out pairs are sliced per perspective.
PAIR_SLICES = {"alignment": pair_attributes, "fidelity": pair_artifact_slices}


# --------------------------------------------------------------------------------------------------
# Runs


def evaluate_pairs(margins: np.ndarray, attributes: Sequence[str] | None) -> dict[str, Any]:
    """Held-out pairwise accuracy (margin > 0), overall and per attribute with pair counts."""
    correct = margins > 0
    result: dict[str, Any] = {"accuracy": float(correct.mean()), "pairs": int(correct.size)}
    if attributes is not None:
        frame = pl.DataFrame({"attribute": list(attributes), "correct": correct})
        per = frame.group_by("attribute").agg(
            pl.col("correct").mean().alias("accuracy"), pl.len().alias("pairs")
        )
        result["by_attribute"] = {
            row["attribute"]: {"accuracy": row["accuracy"], "pairs": row["pairs"]}
            for row in per.sort("attribute").iter_rows(named=True)
        }
    return result


def evaluate_safety(logits: np.ndarray, labels: Sequence[int]) -> dict[str, Any]:
    metrics = safety_binary_metrics(logits, np.asarray(labels))
    return {"accuracy": metrics.accuracy, "f1": metrics.f1, "rows": metrics.n_items}


def run_one(
    perspective: str,
    head: str,
    tables: tuple[str, str],
    backbone: Path,
    config: BenchmarkConfig,
    ground_truth: pl.DataFrame,
) -> dict[str, Any]:
    """Train one (perspective, head) for the budget; return its held-out metrics and timings."""
    train_path, heldout_path = tables
    loss = LossConfig("ce") if perspective == "safety" else LossConfig("bt")
    job = TrainingJob(
        perspective=perspective,
        backbone=BackboneConfig(str(backbone)),
        train_data=train_path,
        head=HeadConfig(kind=head),
        loss=loss,
        lora=LoraSettings(
            rank=config.lora_rank,
            alpha=2.0 * config.lora_rank,
            dropout=0.0,
            target_modules=list(LORA_TARGETS[config.lora_targets]),
        ),
        training=TrainingConfig(
            learning_rate=config.learning_rate,
            num_train_epochs=1000.0,
            max_steps=config.max_steps,
            batch_size=config.batch_size,
            eval_batch_size=64,
            lr_scheduler="constant",
            max_minutes=config.minutes,
            logging_steps=100,
            dataloader_num_workers=config.workers,
            seed=config.seed,
        ),
    )
    model_dir = config.out / "models" / f"{perspective}-{head}"
    result = train_reward_model(
        job, model_dir, checkpoint_dir=config.out / "checkpoints" / f"{perspective}-{head}"
    )
    assert result.trainer is not None
    started = time.perf_counter()
    if perspective == "safety":
        dataset = UnpairedDataset(heldout_path)
        logits = result.trainer.predict(dataset).predictions.reshape(-1)
        metrics = evaluate_safety(logits, dataset.labels)
    else:
        dataset = PairDataset(heldout_path)
        margins = result.trainer.predict(dataset).predictions.reshape(-1)
        slicer = PAIR_SLICES.get(perspective)
        attributes = slicer(dataset.table, ground_truth) if slicer else None
        metrics = evaluate_pairs(margins, attributes)
    train_metrics = result.metrics
    return {
        "perspective": perspective,
        "head": head,
        "steps": result.global_step,
        "train_seconds": round(train_metrics.get("train_runtime", 0.0), 1),
        "examples_per_second": round(train_metrics.get("train_samples_per_second", 0.0), 1),
        "train_rows": len(result.trainer.train_dataset),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "aim": AIMS.get(perspective),
        **metrics,
    }


def run_benchmark(config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Build corpus, data and backbone once, then train and evaluate every (perspective, head)."""
    torch.set_num_threads(config.threads)
    config.out.mkdir(parents=True, exist_ok=True)
    artifacts = config.out / "artifacts"
    corpus = build_corpus(config)
    ground_truth = pl.read_parquet(corpus / "ground_truth.parquet")
    backbone = config.out / "tiny-llava"
    if not (backbone / "config.json").is_file():
        build_tiny_backbone(backbone, "llava", seed=config.seed)
    results = []
    for perspective in config.perspectives:
        if perspective == "safety":
            tables = safety_tables(corpus, artifacts, seed=config.seed)
        else:
            tables = pair_tables(
                corpus, perspective, artifacts, hard_negatives=config.hard_negatives, seed=config.seed
            )
        for head in config.heads:
            logger.info("training %s with the %s head", perspective, head)
            results.append(run_one(perspective, head, tables, backbone, config, ground_truth))
            logger.info("%s", json.dumps(results[-1]))
    return results


def format_results(results: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one line per run, then the per-slice accuracies (alignment: attribute;
    fidelity: artifact)."""
    lines = [
        f"{'perspective':12s} {'head':7s} {'steps':>6s} {'ex/s':>6s} {'accuracy':>9s} {'f1':>6s} {'aim':>5s}"
    ]
    for row in results:
        f1 = f"{row['f1']:.3f}" if "f1" in row else "-"
        lines.append(
            f"{row['perspective']:12s} {row['head']:7s} {row['steps']:6d} {row['examples_per_second']:6.0f} "
            f"{row['accuracy']:9.3f} {f1:>6s} {row['aim'] or 0:5.2f}"
        )
    for row in results:
        for attribute, value in row.get("by_attribute", {}).items():
            name = f"{row['perspective']}/{row['head']}"
            lines.append(f"  {name} {attribute:15s} {value['accuracy']:.3f} ({value['pairs']} pairs)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> BenchmarkConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learnability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = BenchmarkConfig()
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--quick", action="store_true", help="smoke test: small corpus, 10 steps per run")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="training wall time per run")
    parser.add_argument("--max-steps", type=int, default=None, help="step limit per run")
    parser.add_argument("--prompts", type=int, default=None, help="demo corpus prompts")
    parser.add_argument("--perspectives", nargs="+", choices=PERSPECTIVES, default=list(PERSPECTIVES))
    parser.add_argument("--heads", nargs="+", choices=HeadConfig.KINDS, default=list(HEADS))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--lora-rank", type=int, default=defaults.lora_rank)
    parser.add_argument("--lora-targets", choices=sorted(LORA_TARGETS), default=defaults.lora_targets)
    parser.add_argument("--hard-negatives", action="store_true", help="add FAISS hard negatives to alignment")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads (default 1)")
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="data-loading processes (default 1)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    base = (
        BenchmarkConfig.quick(args.out) if args.quick else BenchmarkConfig(out=args.out, minutes=args.minutes)
    )
    changes: dict[str, Any] = {
        "perspectives": tuple(args.perspectives),
        "heads": tuple(args.heads),
        "learning_rate": args.learning_rate,
        "lora_rank": args.lora_rank,
        "lora_targets": args.lora_targets,
        "hard_negatives": args.hard_negatives,
        "threads": args.threads,
        "workers": args.workers,
        "seed": args.seed,
    }
    for name, value in (
        ("max_steps", args.max_steps),
        ("prompts", args.prompts),
        ("batch_size", args.batch_size),
    ):
        if value is not None:
            changes[name] = value
    return dataclasses.replace(base, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = parse_args(argv)
    started = time.perf_counter()
    results = run_benchmark(config)
    report = {
        "config": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(config).items()
        },
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (config.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_results(results))
    print(f"results: {config.out / 'results.json'} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
