"""Inference-time scaling on the demo: does FK steering with a reward raise what an independent judge
sees, over plain sampling and best-of-N at the same number of model evaluations?

Fresh demo benchmark prompts (templates never used in training; single-group scenes by default, what
the 32 px demo generator learns first; ``--two-group-fraction`` adds two groups and their relation),
the same seeds for every method. Methods: plain sampling (k = 1), best-of-k
and FK steering with k particles (potentials and a λ sweep), each with every steering reward: the demo
alignment reward model (``--reward-model``), CLIPScore with the demo's random-weight CLIP (a **noise
control**: it knows nothing) and the oracle (an upper bound: it is the judge). Every chosen image is
judged by every reward (cross-judging: each method is also judged by rewards it did not steer with).
Reported: mean and 95% interval per judge × method, seconds per prompt, NFE.

    python -m benchmarks.steering --generator artifacts/demo-generator --reward-model artifacts/train/<key> \
        --prompts 100 --out steering.json
    python -m benchmarks.steering --smoke      # tiny random generator, 2 prompts (the test suite runs it)
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import load_average, machine_facts, write_json
from reward.metrics import wilson_interval
from reward.steering import SteeringConfig, sample
from reward.steering.prompts import demo_benchmark_prompts
from reward.steering.registry import load_generator, load_reward
from tasks.steer import mean_interval


@dataclass(frozen=True)
class Settings:
    prompts: int = 100
    offset: int = 0
    seed: int = 1000
    num_particles: int = 4
    steps: int = 20
    resample_frequency: int = 4
    #: First step that may resample: x0 predictions of the first steps say little about the final image.
    resample_start: int = 0
    potentials: tuple[str, ...] = ("max", "diff")
    lambdas: tuple[float, ...] = (10.0, 50.0)
    rewards: tuple[str, ...] = ("alignment", "clipscore", "oracle")
    judges: tuple[str, ...] = ("alignment", "clipscore", "oracle")
    #: Rewards that get the whole potential × λ grid; the others FK with the first potential and λ only.
    sweep_rewards: tuple[str, ...] = ("alignment",)
    guidance_scale: float = 1.0
    #: DDIM noise (0: deterministic); FK's resampled copies diverge only through it.
    eta: float = 1.0
    #: Share of two-group prompts (count, colour and shape of two groups and their relation).
    two_group_fraction: float = 0.0
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def method_configs(settings: Settings) -> list[tuple[str, str | None, SteeringConfig]]:
    """(label, steering reward, config) of every compared method."""
    shared = {
        "num_inference_steps": settings.steps,
        "resample_frequency": settings.resample_frequency,
        "resample_start": settings.resample_start,
        "guidance_scale": settings.guidance_scale,
        "eta": settings.eta,
    }
    k = settings.num_particles
    methods: list[tuple[str, str | None, SteeringConfig]] = [
        ("none", None, SteeringConfig(method="none", num_particles=1, **shared))
    ]
    for reward_name in settings.rewards:
        methods.append(
            (
                f"best-of-{k} {reward_name}",
                reward_name,
                SteeringConfig(method="best_of_n", num_particles=k, **shared),
            )
        )
        swept = reward_name in settings.sweep_rewards
        for potential in settings.potentials if swept else settings.potentials[:1]:
            for lmbda in settings.lambdas if swept else settings.lambdas[:1]:
                config = SteeringConfig(
                    method="fk", num_particles=k, potential=potential, lmbda=lmbda, **shared
                )
                methods.append((f"fk-{k} {reward_name} {potential} λ={lmbda:g}", reward_name, config))
    return methods


def run(
    settings: Settings, generator: str, reward_models: dict[str, str], out: Path | None = None
) -> dict[str, Any]:
    """Every method on every prompt; with ``out``, the report so far is rewritten after each prompt, so
    a run cut short (a time limit) keeps what it measured."""
    torch.set_num_threads(settings.threads)
    denoiser = load_generator(generator)
    rewards = {name: load_reward(name, reward_models) for name in {*settings.rewards, *settings.judges}}
    prompts = demo_benchmark_prompts(
        settings.offset + settings.prompts, seed=settings.seed, two_group_fraction=settings.two_group_fraction
    )[settings.offset :]
    methods = method_configs(settings)
    scores: dict[str, dict[str, list[float]]] = {
        label: {j: [] for j in settings.judges} for label, _, _ in methods
    }
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in methods}
    reward_seconds: dict[str, list[float]] = {label: [] for label, _, _ in methods}
    nfe: dict[str, int] = {}
    loads = [load_average()]
    for index, row in enumerate(prompts, start=settings.offset):
        seed = settings.seed + index
        for label, reward_name, config in methods:
            started = time.perf_counter()
            result = sample(denoiser, row.prompt, config, reward=rewards.get(reward_name or ""), seed=seed)
            seconds[label].append(time.perf_counter() - started)
            reward_seconds[label].append(result.reward_seconds)
            nfe[label] = result.nfe
            chosen = result.images[result.selected : result.selected + 1]
            for judge in settings.judges:
                scores[label][judge].append(float(np.asarray(rewards[judge](chosen, [row.prompt]))[0]))
        if out is not None:
            write_json(
                out, _report(settings, generator, reward_models, scores, seconds, reward_seconds, nfe, loads)
            )
    loads.append(load_average())
    return _report(settings, generator, reward_models, scores, seconds, reward_seconds, nfe, loads)


def _report(
    settings: Settings,
    generator: str,
    reward_models: dict[str, str],
    scores: dict[str, dict[str, list[float]]],
    seconds: dict[str, list[float]],
    reward_seconds: dict[str, list[float]],
    nfe: dict[str, int],
    loads: list[float],
) -> dict[str, Any]:
    done = len(next(iter(seconds.values())))
    return {
        "settings": {
            **settings.__dict__,
            "prompts": done,
            "generator": generator,
            "reward_models": reward_models,
        },
        "machine": machine_facts(("torch", "diffusers", "transformers")).__dict__,
        "load_1min": loads,
        "table": summary_table(scores, seconds, reward_seconds, nfe, settings.judges),
        "scores": scores,
        "seconds": seconds,
        "reward_seconds": reward_seconds,
    }


def summary_table(
    scores: dict[str, dict[str, list[float]]],
    seconds: dict[str, list[float]],
    reward_seconds: dict[str, list[float]],
    nfe: dict[str, int],
    judges: tuple[str, ...] | list[str],
) -> list[dict[str, Any]]:
    """Per method: NFE, mean seconds per prompt, the reward's share of them, and per judge the mean and
    95% interval of the chosen image's score."""
    table = []
    baseline = next(iter(scores))  # plain sampling comes first
    for label in scores:
        entry: dict[str, Any] = {
            "method": label,
            "nfe": nfe[label],
            "seconds_per_prompt": float(np.mean(seconds[label])),
        }
        entry["reward_share"] = float(np.sum(reward_seconds[label]) / max(np.sum(seconds[label]), 1e-9))
        for judge in judges:
            mean, half, n = mean_interval(scores[label][judge])
            # Same prompts and seeds for every method: the paired difference to plain sampling.
            paired = np.asarray(scores[label][judge]) - np.asarray(scores[baseline][judge])
            delta, delta_half, _ = mean_interval(paired.tolist())
            entry[judge] = {
                "mean": mean,
                "ci95": half,
                "n": n,
                "delta_vs_none": delta,
                "delta_ci95": delta_half,
            }
        if "oracle" in judges:  # the share of chosen images whose every fact holds, with its Wilson interval
            right = [value >= 1.0 - 1e-9 for value in scores[label]["oracle"] if np.isfinite(value)]
            low, high = wilson_interval(sum(right), len(right))
            entry["oracle_all_right"] = {
                "share": float(np.mean(right)) if right else math.nan,
                "low": low,
                "high": high,
            }
        table.append(entry)
    return table


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs over consecutive prompt ranges (``--offset``) as one result (same methods and judges)."""
    first = results[0]
    judges = first["settings"]["judges"]
    scores = {
        label: {j: [v for r in results for v in r["scores"][label][j]] for j in judges}
        for label in first["scores"]
    }
    seconds = {label: [v for r in results for v in r["seconds"][label]] for label in first["scores"]}
    rewards = {label: [v for r in results for v in r["reward_seconds"][label]] for label in first["scores"]}
    nfe = {entry["method"]: entry["nfe"] for entry in first["table"]}
    settings = {**first["settings"], "prompts": sum(r["settings"]["prompts"] for r in results)}
    table = summary_table(scores, seconds, rewards, nfe, judges)
    loads = [value for r in results for value in r["load_1min"]]
    return {
        **first,
        "settings": settings,
        "table": table,
        "scores": scores,
        "seconds": seconds,
        "reward_seconds": rewards,
        "load_1min": loads,
        "merged_from": len(results),
    }


def markdown(result: dict[str, Any]) -> str:
    judges = result["settings"]["judges"]
    all_right = "oracle" in judges
    extra = " oracle: every fact right |" if all_right else ""
    lines = ["| method | NFE | s / prompt | reward share | " + " | ".join(judges) + " |" + extra]
    lines.append("|---|---|---|---|" + "---|" * (len(judges) + all_right))
    for entry in result["table"]:
        cells = [f"{entry[j]['mean']:.3f} ± {entry[j]['ci95']:.3f}" for j in judges]
        if all_right:
            share = entry["oracle_all_right"]
            cells.append(f"{share['share']:.0%} [{share['low']:.0%}, {share['high']:.0%}]")
        lines.append(
            f"| {entry['method']} | {entry['nfe']} | {entry['seconds_per_prompt']:.2f} | "
            f"{entry['reward_share']:.0%} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Paired difference to plain sampling (same prompts and seeds), mean ± 95% interval:", ""]
    lines.append("| method | " + " | ".join(judges) + " |")
    lines.append("|---|" + "---|" * len(judges))
    for entry in result["table"][1:]:
        cells = [f"{entry[j]['delta_vs_none']:+.3f} ± {entry[j]['delta_ci95']:.3f}" for j in judges]
        lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steering", description=__doc__)
    parser.add_argument("--generator", default=None, help="demo generator folder (or a registry spec)")
    parser.add_argument("--reward-model", default=None, help="the demo alignment reward model folder")
    parser.add_argument("--prompts", type=int, default=Settings.prompts)
    parser.add_argument("--offset", type=int, default=0, help="skip this many prompts (split a long run)")
    parser.add_argument("--merge", nargs="+", type=Path, help="merge the JSON reports of split runs")
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--particles", type=int, default=Settings.num_particles)
    parser.add_argument("--resample-frequency", type=int, default=Settings.resample_frequency)
    parser.add_argument("--resample-start", type=int, default=Settings.resample_start)
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(Settings.lambdas))
    parser.add_argument("--potentials", nargs="+", default=list(Settings.potentials))
    parser.add_argument("--rewards", nargs="+", default=None)
    parser.add_argument("--sweep-rewards", nargs="+", default=list(Settings.sweep_rewards))
    parser.add_argument("--guidance-scale", type=float, default=Settings.guidance_scale)
    parser.add_argument(
        "--two-group-fraction",
        type=float,
        default=Settings.two_group_fraction,
        help="share of two-group prompts (for a generator trained on them too)",
    )
    parser.add_argument("--eta", type=float, default=Settings.eta, help="DDIM noise (0: deterministic)")
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--smoke", action="store_true", help="tiny random generator, 2 prompts (tests)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.merge:
        import json

        result = merge([json.loads(path.read_text()) for path in args.merge])
        print(markdown(result))
        if args.out:
            write_json(args.out, result)
        return result
    models = {"alignment": args.reward_model} if args.reward_model else {}
    default_rewards = ("alignment", "clipscore", "oracle") if models else ("clipscore", "oracle")
    rewards = tuple(args.rewards) if args.rewards else default_rewards
    if args.smoke:
        settings = Settings(
            sweep_rewards=("clipscore", "oracle"),
            prompts=2,
            num_particles=2,
            steps=2,
            resample_frequency=1,
            lambdas=(10.0,),
            rewards=rewards,
            judges=default_rewards,
        )
        generator = args.generator or "tiny-pixel"
    else:
        if args.generator is None:
            parser.error("--generator is required (a trained demo generator folder), or use --smoke")
        settings = Settings(
            prompts=args.prompts,
            offset=args.offset,
            num_particles=args.particles,
            steps=args.steps,
            resample_frequency=args.resample_frequency,
            resample_start=args.resample_start,
            potentials=tuple(args.potentials),
            lambdas=tuple(args.lambdas),
            rewards=rewards,
            judges=default_rewards,
            guidance_scale=args.guidance_scale,
            eta=args.eta,
            two_group_fraction=args.two_group_fraction,
            threads=args.threads,
            sweep_rewards=tuple(args.sweep_rewards),
        )
        generator = args.generator
    result = run(settings, generator, models, args.out)
    print(markdown(result))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
