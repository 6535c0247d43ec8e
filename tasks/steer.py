"""Stages of the steer-generation flow: prompts, the demo generator, one prompt's samples, the summary.

- ``steer_prompts``: a prompt file (or fresh demo prompts) → a prompts table + rejects (line numbers).
- ``train_demo_generator``: the demo's tiny 32 px generator (a folder), keyed like every stage.
- ``steer_generate``: ONE prompt × every method × seed: PNGs of every final particle under
  ``<key>.images/``, one row per particle (seed, judges' scores, reward trajectory, ESS and resampling
  per weighting step) and an image grid. One stage per prompt, so prompts map over Prefect tasks.
- ``steer_summary``: every prompt's rows → the results table and a Table-4-shaped summary (rows =
  judges, columns = methods, mean and 95% interval of the chosen image's score).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from PIL import Image, ImageDraw

import data.demo.oracle
import reward.steering.config
import reward.steering.demo_generator
import reward.steering.denoisers
import reward.steering.prompts
import reward.steering.registry
import reward.steering.rewards
import reward.steering.sampler
import reward.steering.smc
from data.schemas import REJECTS_SCHEMA
from reward.steering.config import SteeringConfig, SteeringError
from reward.steering.demo_generator import DemoGeneratorConfig, train_demo_generator
from reward.steering.prompts import demo_benchmark_prompts, read_prompt_file
from reward.steering.registry import load_generator, load_reward
from reward.steering.rewards import to_pil
from reward.steering.sampler import sample
from tasks.cache import MAIN, Produced, Stage, StageOutput, StageResult, run_keyed, run_stage
from tasks.prefect_stage import stage_task

_MODULE = sys.modules[__name__]
PROMPTS = Stage("steer_prompts", 1, (_MODULE, reward.steering.prompts))
GENERATOR = Stage("train_demo_generator", 1, (_MODULE, reward.steering.demo_generator))
GENERATE = Stage(
    "steer_generate",
    1,
    (
        _MODULE,
        reward.steering.config,
        reward.steering.denoisers,
        reward.steering.registry,
        reward.steering.rewards,
        reward.steering.sampler,
        reward.steering.smc,
        data.demo.oracle,
    ),
)
SUMMARY = Stage("steer_summary", 1, (_MODULE,))
#: z of a two-sided 95% normal interval.
Z95 = 1.959964


# ------------------------------------------------------------------ prompts
def steer_prompts(
    source: str | None, *, demo_count: int = 100, seed: int = 0, root: str | None = None
) -> StageResult:
    """Stage: the prompts of ``source`` (a .jsonl / .csv / .txt file; None or "demo": fresh demo prompts)."""
    demo = source in (None, "demo")

    def compute() -> StageOutput:
        if demo:
            rows, rejected = demo_benchmark_prompts(demo_count, seed=seed), []
        else:
            rows, rejected = read_prompt_file(str(source))
        table = pl.DataFrame([asdict(row) for row in rows], schema=PROMPT_SCHEMA)
        rejects = pl.DataFrame(
            [
                {
                    "stage": PROMPTS.name,
                    "source_file": r.source_file,
                    "source_row": r.line,
                    "record_id": f"line {r.line}",
                    "field": r.field,
                    "reason": r.reason,
                }
                for r in rejected
            ],
            schema=REJECTS_SCHEMA,
        )
        if table.is_empty():
            raise ValueError(f"{source}: no usable prompt ({len(rejected)} rejected lines)")
        return StageOutput({MAIN: table, "rejects": rejects}, len(rows) + len(rejected), len(rows))

    params = {"demo_count": demo_count if demo else None, "seed": seed if demo else None}
    return run_stage(
        PROMPTS, params=params, inputs={"prompts": None if demo else source}, compute=compute, root=root
    )


PROMPT_SCHEMA = {
    "prompt_id": pl.String(),
    "prompt": pl.String(),
    "tag": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}


# ------------------------------------------------------------------ generator
def demo_generator(config: DemoGeneratorConfig, *, root: str | None = None) -> StageResult:
    """Stage: train the demo generator unless a finished one with the same key exists (a folder)."""

    def produce(directory: Path, key: str, _fingerprints: dict[str, Any]) -> Produced:
        final, staging = directory / key, directory / f"{key}.tmp-{uuid.uuid4().hex}"
        try:
            stats = train_demo_generator(config, staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Produced({MAIN: {"path": str(final), "rows": stats["steps"]}}, 0, 0, 0, stats)

    return run_keyed(GENERATOR, params=config.to_dict(), inputs={}, produce=produce, root=root)


# ------------------------------------------------------------------ one prompt
@dataclass(frozen=True)
class MethodSpec:
    """One column of the results: a method with its reward, potential, λ and particle count."""

    label: str
    method: str
    reward: str | None
    potential: str
    lmbda: float
    num_particles: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_grid(
    methods: list[str], rewards: list[str], *, num_particles: int, potentials: list[str], lambdas: list[float]
) -> list[MethodSpec]:
    """Every method × reward (× potential × λ for FK), checked now (bad names / λ fail before sampling)."""
    specs: list[MethodSpec] = []
    for method in methods:
        if method == "none":
            specs.append(MethodSpec("none", "none", None, "max", 0.0, 1))
        elif method == "best_of_n":
            specs += [
                MethodSpec(f"best-of-{num_particles} {r}", method, r, "max", 0.0, num_particles)
                for r in rewards
            ]
        elif method == "fk":
            for reward_name, potential, lmbda in (
                (r, p, x) for r in rewards for p in potentials for x in lambdas
            ):
                label = f"fk {reward_name} {potential} λ={lmbda:g}"
                specs.append(MethodSpec(label, method, reward_name, potential, float(lmbda), num_particles))
        else:
            raise SteeringError(f"unknown method {method!r} (known: none, best_of_n, fk)")
    for spec in specs:
        SteeringConfig(
            method=spec.method, num_particles=spec.num_particles, potential=spec.potential, lmbda=spec.lmbda
        )
    return specs


def _grid(rows: list[list[Image.Image]], selected: list[int], scale: int = 2) -> Image.Image:
    """Rows of particle images side by side, the chosen one of each row framed in green."""
    size = rows[0][0].width * scale
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * (size + 4), len(rows) * (size + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (row, chosen) in enumerate(zip(rows, selected, strict=True)):
        for c, image in enumerate(row):
            x, y = c * (size + 4), r * (size + 4)
            grid.paste(image.resize((size, size), Image.NEAREST), (x + 2, y + 2))
            if c == chosen:
                draw.rectangle([x, y, x + size + 3, y + size + 3], outline=(0, 170, 0), width=2)
    return grid


def steer_generate(
    prompt: dict[str, Any],
    *,
    generator: str,
    methods: list[dict[str, Any]],
    judges: list[str],
    seeds: list[int],
    reward_models: dict[str, str] | None = None,
    sampler: dict[str, Any] | None = None,
    clip: tuple[str, str | None] = ("demo-tiny-clip", None),
    device: str = "cpu",
    root: str | None = None,
) -> StageResult:
    """Stage: one prompt, every method × seed. ``sampler`` holds the SteeringConfig fields shared by
    all methods (steps, schedule, adaptive, guidance, eta). ``generator`` is a registry spec or folder."""
    specs = [MethodSpec(**method) for method in methods]
    shared = dict(sampler or {})
    generator_path = generator if Path(generator).exists() else None
    models = dict(reward_models or {})
    inputs: dict[str, Any] = {"generator": generator_path}
    inputs |= {f"reward_model_{name}": folder for name, folder in sorted(models.items())}
    params = {
        "prompt": {key: prompt[key] for key in ("prompt_id", "prompt")},
        "generator": None if generator_path else generator,
        "methods": [spec.to_dict() for spec in specs],
        "judges": judges,
        "seeds": seeds,
        "sampler": shared,
        "clip": list(clip),
    }

    def produce(directory: Path, key: str, _fingerprints: dict[str, Any]) -> Produced:
        denoiser = load_generator(generator, device)

        def reward(name: str) -> Any:
            return load_reward(name, models, clip_model=clip[0], clip_pretrained=clip[1], device=device)

        judge_fns = {name: reward(name) for name in judges}
        images_dir = directory / f"{key}.images"
        staging = directory / f"{key}.images.tmp-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        rows: list[dict[str, Any]] = []
        grid_rows: list[list[Image.Image]] = []
        grid_selected: list[int] = []
        try:
            for seed in seeds:
                for spec in specs:
                    config = SteeringConfig(
                        method=spec.method,
                        num_particles=spec.num_particles,
                        potential=spec.potential,
                        lmbda=spec.lmbda,
                        **shared,
                    )
                    reward_fn = None if spec.reward is None else reward(spec.reward)
                    result = sample(denoiser, str(prompt["prompt"]), config, reward=reward_fn, seed=seed)
                    rows += _particle_rows(prompt, spec, seed, result, judge_fns, staging, images_dir)
                    if seed == seeds[0]:
                        grid_rows.append(to_pil(result.images))
                        grid_selected.append(result.selected)
            _grid(grid_rows, grid_selected).save(staging / "grid.png")
            if images_dir.exists():
                shutil.rmtree(images_dir)
            os.replace(staging, images_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        table = pl.DataFrame(rows)
        path = directory / f"{key}.parquet"
        from tasks.cache import atomic_write_parquet

        atomic_write_parquet(table, path)
        stats = {"grid": str(images_dir / "grid.png"), "labels": [spec.label for spec in specs]}
        return Produced(
            {
                MAIN: {"path": str(path), "rows": table.height},
                "images": {"path": str(images_dir), "rows": table.height},
            },
            1,
            1,
            0,
            stats,
        )

    return run_keyed(GENERATE, params=params, inputs=inputs, produce=produce, root=root)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _particle_rows(
    prompt: dict[str, Any],
    spec: MethodSpec,
    seed: int,
    result: Any,
    judges: dict[str, Any],
    staging: Path,
    images_dir: Path,
) -> list[dict[str, Any]]:
    count = len(result.images)
    scores = {
        name: np.asarray(
            torch.as_tensor(np.asarray(judge(result.images, [prompt["prompt"]] * count), dtype=np.float64))
        )
        for name, judge in judges.items()
    }
    folder = f"{_slug(spec.label)}/seed{seed}"
    (staging / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for particle, image in enumerate(to_pil(result.images)):
        relative = f"{folder}/p{particle}.png"
        image.save(staging / relative)
        rows.append(
            {
                "prompt_id": prompt["prompt_id"],
                "prompt": prompt["prompt"],
                "tag": prompt.get("tag", ""),
                "method": spec.label,
                "method_kind": spec.method,
                "reward": spec.reward,
                "potential": spec.potential if spec.method == "fk" else None,
                "lmbda": spec.lmbda if spec.method == "fk" else None,
                "num_particles": spec.num_particles,
                "seed": seed,
                "particle": particle,
                "selected": particle == result.selected,
                "image_path": str(images_dir / relative),
                "final_reward": None
                if result.final_rewards is None
                else _finite(float(result.final_rewards[particle])),
                **{f"judge_{name}": _finite(float(values[particle])) for name, values in scores.items()},
                "trajectory_steps": [record.step for record in result.records],
                "trajectory_rewards": [_finite(record.rewards[particle]) for record in result.records],
                "ess": [record.ess for record in result.records],
                "resampled": [record.resampled for record in result.records],
                "nfe": result.nfe,
                "seconds": result.seconds,
                "reward_seconds": result.reward_seconds,
            }
        )
    return rows


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in label.replace("λ=", "l"))


# ------------------------------------------------------------------ summary
def mean_interval(values: list[float]) -> tuple[float, float, int]:
    """(mean, half-width of the normal 95% interval, n) of the finite values (NaN mean when none)."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(finite) == 0:
        return math.nan, math.nan, 0
    half = Z95 * finite.std(ddof=1) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    return float(finite.mean()), float(half), len(finite)


def summary_tables(results: pl.DataFrame, labels: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(long: judge × method → mean, ci95, n, seconds per prompt; wide: Table-4 shape, 'mean ± ci')."""
    chosen = results.filter(pl.col("selected"))
    judges = [column.removeprefix("judge_") for column in results.columns if column.startswith("judge_")]
    long_rows = []
    for judge in judges:
        for label in labels:
            part = chosen.filter(pl.col("method") == label)
            mean, half, n = mean_interval(part[f"judge_{judge}"].to_list())
            seconds = part["seconds"].mean() if part.height else None
            long_rows.append(
                {
                    "judge": judge,
                    "method": label,
                    "mean": mean,
                    "ci95": half,
                    "n": n,
                    "seconds_per_sample": seconds,
                }
            )
    long = pl.DataFrame(long_rows)
    wide_rows = []
    for judge in judges:
        row: dict[str, Any] = {"judge": judge}
        for entry in long.filter(pl.col("judge") == judge).iter_rows(named=True):
            row[entry["method"]] = _cell(entry["mean"], entry["ci95"])
        wide_rows.append(row)
    return long, pl.DataFrame(wide_rows)


def _cell(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f}" if not math.isfinite(half) else f"{mean:.3f} ± {half:.3f}"


def steer_summary(paths: list[str], labels: list[str], *, root: str | None = None) -> StageResult:
    """Stage: every prompt's particle rows → ``main`` (all rows), ``long`` and ``wide`` summaries."""

    def compute() -> StageOutput:
        results = pl.concat([pl.read_parquet(path) for path in paths], how="diagonal_relaxed")
        long, wide = summary_tables(results, labels)
        prompts = results["prompt_id"].n_unique()
        return StageOutput({MAIN: results, "long": long, "wide": wide}, prompts, prompts)

    return run_stage(
        SUMMARY, params={"labels": labels}, inputs={"results": paths}, compute=compute, root=root
    )


steer_prompts_task = stage_task(steer_prompts, name="steer_prompts")
demo_generator_task = stage_task(demo_generator, name="train_demo_generator")
steer_generate_task = stage_task(steer_generate, name="steer_generate")
steer_summary_task = stage_task(steer_summary, name="steer_summary")

__all__ = [
    "MethodSpec",
    "method_grid",
    "summary_tables",
    "steer_generate",
    "steer_prompts",
    "steer_summary",
]
