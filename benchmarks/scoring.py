"""Reward-model throughput on the CPU: batched scoring vs one pair per forward, and training with
chosen + rejected in one forward vs two.

Both sides of each comparison use the same tiny backbone (:mod:`reward.tiny`, random weights, LoRA on
the language model, SkipCA head), the same in-memory images and prompts, and run alternately in the
same process, so the ratio is measured in the same run.

- scoring: ``RewardScorer.score`` on N (image, prompt) items with ``batch_size=B`` vs ``batch_size=1``
  (a loop of one forward per item); items per second.
- training: optimizer steps on batches of P pairs: the chosen and rejected sides through ONE batched
  forward (``RewardModel.pair_rewards``, what ``reward.training`` does) vs TWO forwards (chosen, then
  rejected); Bradley-Terry loss, backward, AdamW step; pairs per second.

    python -m benchmarks.scoring --items 256 --batch-size 32 --runs 3 --out scoring.json
    python -m benchmarks.scoring --smoke            # tiny sizes, one run (the test suite runs this)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import load_average, machine_facts, ratio, write_json
from reward.backbones import load_backbone
from reward.checkpoint import RewardModelConfig, save_reward_model
from reward.config import BackboneConfig, HeadConfig, LoraSettings, LossConfig
from reward.losses import bt_loss
from reward.model import RewardModel
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone

COLOURS = ((220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40))
PROMPTS = ("two red circles", "a blue square above a green triangle", "three yellow stars", "one circle")


@dataclass(frozen=True)
class Settings:
    items: int = 256
    batch_size: int = 32
    train_pairs: int = 16
    train_steps: int = 10
    runs: int = 3
    threads: int = 1
    image_size: int = 64


def pictures(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    """``count`` simple coloured images (a disc on a background), deterministic."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        array = np.full((size, size, 3), 245, dtype=np.uint8)
        y, x = np.ogrid[:size, :size]
        cy, cx, radius = rng.integers(size // 4, 3 * size // 4, size=2).tolist() + [size // 5]
        array[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = COLOURS[index % len(COLOURS)]
        images.append(Image.fromarray(array))
    return images


def prompts_for(count: int) -> list[str]:
    return [PROMPTS[index % len(PROMPTS)] for index in range(count)]


def build_model(folder: Path) -> tuple[RewardModel, Path]:
    """A tiny backbone on disk, a LoRA + SkipCA reward model on it, and its saved perspective folder."""
    backbone_dir = build_tiny_backbone(folder / "backbone", "llava", seed=0)
    model = RewardModel(
        load_backbone(str(backbone_dir)), HeadConfig(), LoraSettings(rank=8), adapter_name="bench"
    )
    config = RewardModelConfig(
        "bench", BackboneConfig(str(backbone_dir)), head=HeadConfig(), loss=LossConfig()
    )
    return model, save_reward_model(model, folder / "model", config)


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def scoring_run(folder: Path, settings: Settings) -> dict[str, float]:
    """Items per second, batched and one by one, on the same items."""
    images, prompts = pictures(settings.items, settings.image_size), prompts_for(settings.items)
    batched = RewardScorer.from_pretrained(folder, device="cpu", batch_size=settings.batch_size)
    single = RewardScorer.from_pretrained(folder, device="cpu", batch_size=1)
    batched.score(images[:4], prompts[:4])  # warm-up: first-call allocations
    single.score(images[:4], prompts[:4])
    scores: dict[str, np.ndarray] = {}
    batched_s = timed(lambda: scores.__setitem__("batched", batched.score(images, prompts)))
    single_s = timed(lambda: scores.__setitem__("single", single.score(images, prompts)))
    difference = float(np.max(np.abs(scores["batched"] - scores["single"])))
    return {
        "batched_items_per_s": settings.items / batched_s,
        "single_items_per_s": settings.items / single_s,
        "max_score_difference": difference,
    }


def training_steps(model: RewardModel, settings: Settings, *, one_forward: bool) -> float:
    """Seconds for ``train_steps`` optimizer steps on batches of ``train_pairs`` pairs."""
    pairs = settings.train_pairs
    chosen = pictures(pairs, settings.image_size, seed=1)
    rejected = pictures(pairs, settings.image_size, seed=2)
    prompts = prompts_for(pairs)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        if one_forward:
            chosen_rewards, rejected_rewards = model.pair_rewards(chosen, prompts, rejected, prompts)
        else:
            chosen_rewards = model.score(chosen, prompts)
            rejected_rewards = model.score(rejected, prompts)
        loss = bt_loss(chosen_rewards, rejected_rewards)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    return timed(lambda: [step() for _ in range(settings.train_steps)])


def training_run(model: RewardModel, settings: Settings) -> dict[str, float]:
    total_pairs = settings.train_pairs * settings.train_steps
    one = training_steps(model, settings, one_forward=True)
    two = training_steps(model, settings, one_forward=False)
    return {"one_forward_pairs_per_s": total_pairs / one, "two_forwards_pairs_per_s": total_pairs / two}


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def run(settings: Settings, work: Path) -> dict[str, Any]:
    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    model, folder = build_model(work)
    scoring, training, loads = [], [], []
    for _ in range(settings.runs):
        loads.append(load_average())
        scoring.append(scoring_run(folder, settings))
        training.append(training_run(model, settings))
    batched, single = median(scoring, "batched_items_per_s"), median(scoring, "single_items_per_s")
    one, two = median(training, "one_forward_pairs_per_s"), median(training, "two_forwards_pairs_per_s")
    return {
        "settings": settings.__dict__,
        "machine": machine_facts(("torch", "transformers", "peft")).__dict__,
        "load_1min": loads,
        "scoring": {
            "batched_items_per_s": round(batched, 1),
            "single_items_per_s": round(single, 1),
            "speed_up": round(ratio(batched, single), 2),
            "max_score_difference": max(run["max_score_difference"] for run in scoring),
            "runs": scoring,
        },
        "training": {
            "one_forward_pairs_per_s": round(one, 1),
            "two_forwards_pairs_per_s": round(two, 1),
            "speed_up": round(ratio(one, two), 2),
            "runs": training,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scoring", description=__doc__)
    parser.add_argument("--items", type=int, default=Settings.items)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--train-pairs", type=int, default=Settings.train_pairs)
    parser.add_argument("--train-steps", type=int, default=Settings.train_steps)
    parser.add_argument("--runs", type=int, default=Settings.runs)
    parser.add_argument("--threads", type=int, default=Settings.threads, help="torch threads")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run (tests)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        settings = Settings(items=8, batch_size=4, train_pairs=2, train_steps=2, runs=1, threads=args.threads)
    else:
        settings = Settings(
            args.items, args.batch_size, args.train_pairs, args.train_steps, args.runs, args.threads
        )
    with tempfile.TemporaryDirectory(prefix="llava-reward-scoring-") as work:
        result = run(settings, Path(work))
    scoring, training = result["scoring"], result["training"]
    print(
        f"scoring: {scoring['batched_items_per_s']} items/s batched (batch {settings.batch_size}) vs "
        f"{scoring['single_items_per_s']} one by one: {scoring['speed_up']}x "
        f"(max |difference| {scoring['max_score_difference']:.2e})"
    )
    print(
        f"training: {training['one_forward_pairs_per_s']} pairs/s with one forward vs "
        f"{training['two_forwards_pairs_per_s']} with two: {training['speed_up']}x"
    )
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
