"""steer-generation: prompts → images by plain sampling, best-of-N and FK steering, judged by rewards.

Recipe: prompts (a GenEval ``evaluation_metadata.jsonl``, a DrawBench-style list, or fresh demo
benchmark prompts) → the generator (the demo's tiny 32 px model trained as a cached stage, a diffusers
pipeline folder / hub id, or a tiny random one) → (a demo alignment reward model, trained by the
train-reward-model flow, when a reward or judge named ``alignment`` has no folder) → one
``steer_generate`` task per prompt (mapped, so a work pool or Dask spreads them) → the summary.
Artifacts: ``steer-generation-table`` (rows = judges, columns = methods, mean ± 95% interval of the chosen
image's score, as the paper's Table 4 / 9), an image grid per prompt (``steer-generation-grid-<n>``)
and the stage / output tables every flow publishes.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import publish_run_artifacts
from reward.steering.config import SteeringConfig
from reward.steering.demo_generator import DemoGeneratorConfig
from reward.steering.registry import BUILT_IN_REWARDS
from tasks.cache import StageResult
from tasks.steer import (
    demo_generator_task,
    method_grid,
    steer_generate_task,
    steer_prompts_task,
    steer_summary_task,
)

FLOW_NAME = "steer-generation"
TABLE_ARTIFACT = f"{FLOW_NAME}-table"
GRID_EMBED_LIMIT = 400_000


def _reward_models(
    names: set[str],
    given: dict[str, str] | None,
    *,
    demo_reward_steps: int,
    seed: int,
    artifacts_dir: str | None,
) -> dict[str, str]:
    models = dict(given or {})
    missing = sorted(names - set(BUILT_IN_REWARDS) - set(models))
    if missing and missing != ["alignment"]:
        raise ValueError(f"reward(s) {missing} have no folder: pass reward_models={{name: folder}}")
    if missing:
        from flows.train_reward_model import train_reward_model

        models["alignment"] = train_reward_model(
            perspective="alignment", max_steps=demo_reward_steps, seed=seed, artifacts_dir=artifacts_dir
        )["model"]
    return models


def _grid_markdown(prompt: str, labels: list[str], grid: str) -> str:
    lines = [
        f"# {prompt}",
        "",
        "Rows, top to bottom: " + "; ".join(labels),
        "(the chosen image is framed)",
        "",
    ]
    png = Path(grid).read_bytes()
    lines.append(f"`{grid}`")
    if len(png) <= GRID_EMBED_LIMIT:
        lines += ["", f"![grid](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)


@flow(name=FLOW_NAME, log_prints=True)
def steer_generation(
    prompts_path: str | None = None,
    demo_prompts: int = 8,
    methods: list[str] | None = None,
    rewards: list[str] | None = None,
    judges: list[str] | None = None,
    reward_models: dict[str, str] | None = None,
    seeds: list[int] | None = None,
    num_particles: int = 4,
    potentials: list[str] | None = None,
    lambdas: list[float] | None = None,
    num_inference_steps: int = 25,
    resample_start: int = 0,
    resample_end: int | None = None,
    resample_frequency: int = 5,
    adaptive: bool = True,
    guidance_scale: float = 1.0,
    eta: float = 1.0,
    clip_model: str = "demo-tiny-clip",
    clip_pretrained: str | None = None,
    generator: str = "demo",
    generator_steps: int = 300,
    generator_minutes: float = 10.0,
    demo_reward_steps: int = 300,
    device: str | None = None,
    grid_artifacts: int = 8,
    seed: int = 0,
    artifacts_dir: str | None = None,
) -> dict[str, Any]:
    """Generate for every prompt with ``methods`` (none, best_of_n, fk) × ``rewards`` (steering rewards:
    oracle, clipscore or reward model names) × ``seeds``; judge every final image with ``judges``
    (default: the rewards plus oracle and clipscore). ``eta`` is the DDIM step noise shared by every
    method (1 by default: FK's resampled copies diverge only through it; 0 makes sampling deterministic).
    Returns the paths of the tables and images."""
    logger = get_run_logger()
    methods = methods or ["none", "best_of_n", "fk"]
    rewards = rewards or ["oracle"]
    judges = judges or list(dict.fromkeys([*rewards, "oracle", "clipscore"]))
    seeds = seeds or [0]
    sampler = {
        "num_inference_steps": num_inference_steps,
        "resample_start": resample_start,
        "resample_end": resample_end,
        "resample_frequency": resample_frequency,
        "adaptive": adaptive,
        "guidance_scale": guidance_scale,
        "eta": eta,
    }
    SteeringConfig(**sampler)  # bad schedule / guidance: fail before anything runs
    specs = method_grid(
        methods,
        rewards,
        num_particles=num_particles,
        potentials=potentials or ["max"],
        lambdas=lambdas or [10.0],
    )
    device = device or ("cuda" if _cuda() else "cpu")
    models = _reward_models(
        set(rewards) | set(judges),
        reward_models,
        demo_reward_steps=demo_reward_steps,
        seed=seed,
        artifacts_dir=artifacts_dir,
    )
    stages: dict[str, StageResult] = {}
    prompts = steer_prompts_task(prompts_path, demo_count=demo_prompts, seed=seed, root=artifacts_dir)
    stages["prompts"] = prompts
    if prompts.rows_rejected:
        for row in prompts.read("rejects").iter_rows(named=True):
            logger.warning(
                "prompt file %s line %d rejected: %s", row["source_file"], row["source_row"], row["reason"]
            )
    if generator == "demo":
        trained = demo_generator_task(
            DemoGeneratorConfig(steps=generator_steps, max_minutes=generator_minutes, seed=seed),
            root=artifacts_dir,
        )
        stages["generator"] = trained
        generator = str(trained.path)
    rows = prompts.read().to_dicts()
    futures = steer_generate_task.map(
        rows,
        generator=unmapped(generator),
        methods=unmapped([spec.to_dict() for spec in specs]),
        judges=unmapped(judges),
        seeds=unmapped(seeds),
        reward_models=unmapped(models),
        sampler=unmapped(sampler),
        clip=unmapped((clip_model, clip_pretrained)),
        device=unmapped(device),
        root=unmapped(artifacts_dir),
    )
    results = [future.result() for future in futures]
    labels = [spec.label for spec in specs]
    summary = steer_summary_task([str(result.path) for result in results], labels, root=artifacts_dir)
    stages |= {f"generate {row['prompt_id']}": result for row, result in zip(rows, results, strict=True)}
    stages["summary"] = summary
    create_table_artifact(
        key=TABLE_ARTIFACT,
        table=summary.read("wide").to_dicts(),
        description="Judges (rows) × methods (columns): mean ± 95% interval of the chosen image's score",
    )
    for index, (row, result) in enumerate(zip(rows[:grid_artifacts], results, strict=False)):
        create_markdown_artifact(
            key=f"{FLOW_NAME}-grid-{index}",
            markdown=_grid_markdown(row["prompt"], labels, result.stats["grid"]),
            description=f"Images for {row['prompt_id']}: methods (rows) × particles",
        )
    outputs = {
        "results": str(summary.path),
        "table": summary.paths["wide"],
        "table_long": summary.paths["long"],
    }
    publish_run_artifacts(FLOW_NAME, stages, outputs)
    return {
        **outputs,
        "images": [result.paths["images"] for result in results],
        "prompts": str(prompts.path),
        "rejects": prompts.paths["rejects"],
        "generator": generator,
        "reward_models": models,
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    steer_generation()
