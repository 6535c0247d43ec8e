"""train-reward-model: assembled training data of one perspective → a trained perspective folder.

Recipe: (build-<perspective>-data on the demo corpus, unless ``train_path`` is given) → (the tiny
random-weight demo backbone, unless ``backbone`` is given) → train (LoRA on the language model,
projector and head; BT for preference pairs, cross-entropy for the unpaired safety rows). One run per
perspective; the model folder loads with ``reward.scoring.RewardScorer.from_pretrained`` and
``llava-reward score --model <folder> ...``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.build_alignment_data import build_alignment_data
from flows.build_fidelity_data import build_fidelity_data
from flows.build_ranking_data import build_ranking_data
from flows.build_safety_data import build_safety_data
from flows.common import publish_run_artifacts
from reward.config import BackboneConfig, HeadConfig, LoraSettings, LossConfig
from reward.training import TrainingConfig, TrainingJob
from tasks.train import tiny_backbone_task, train_task

FLOW_NAME = "train-reward-model"
BUILD_DATA = {
    "alignment": build_alignment_data,
    "fidelity": build_fidelity_data,
    "ranking": build_ranking_data,
    "safety": build_safety_data,
}
#: Unpaired perspectives train with cross-entropy; the others on preference pairs with Bradley-Terry.
DEFAULT_LOSS = {"safety": "ce"}
#: Learning rates: LoRA on a pre-trained model (the paper's 2e-4) and the tiny random demo backbone.
PRETRAINED_LR, TINY_LR = 2e-4, 1e-3


def build_job(
    perspective: str,
    train_path: str,
    validation_path: str | None,
    backbone: str,
    *,
    tiny: bool,
    trust_remote_code: bool = False,
    hidden_layer: int = -1,
    head_kind: str = "skipca",
    loss_kind: str | None = None,
    temperature: float = 1.0,
    gpm_dim: int | None = None,
    lora_rank: int = 8,
    learning_rate: float | None = None,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    max_minutes: float | None = None,
    precision: str = "fp32",
    save_steps: int | None = 100,
    seed: int = 0,
    training: dict[str, Any] | None = None,
) -> TrainingJob:
    """The :class:`TrainingJob` the flow's parameters describe (``training`` overrides any field)."""
    settings = {
        "learning_rate": learning_rate or (TINY_LR if tiny else PRETRAINED_LR),
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "max_minutes": max_minutes,
        "precision": precision,
        "save_steps": save_steps,
        "seed": seed,
        **(training or {}),
    }
    kind = loss_kind or DEFAULT_LOSS.get(perspective, "bt")
    return TrainingJob(
        perspective=perspective,
        backbone=BackboneConfig(backbone, trust_remote_code=trust_remote_code, hidden_layer=hidden_layer),
        train_data=train_path,
        eval_data=validation_path,
        head=HeadConfig(kind=head_kind, gpm_dim=gpm_dim),
        loss=LossConfig(kind=kind, temperature=temperature),
        lora=LoraSettings(rank=lora_rank, alpha=2.0 * lora_rank) if lora_rank > 0 else None,
        training=TrainingConfig.from_dict(settings),
    )


@flow(name=FLOW_NAME, log_prints=True)
def train_reward_model(
    perspective: str = "alignment",
    train_path: str | None = None,
    validation_path: str | None = None,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    hidden_layer: int = -1,
    head_kind: str = "skipca",
    loss_kind: str | None = None,
    temperature: float = 1.0,
    gpm_dim: int | None = None,
    lora_rank: int = 8,
    learning_rate: float | None = None,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    max_minutes: float | None = None,
    precision: str = "fp32",
    save_steps: int | None = 100,
    training: dict[str, Any] | None = None,
    num_processes: int = 1,
    seed: int = 0,
    artifacts_dir: str | None = None,
    demo_prompts: int | None = None,
) -> dict[str, str]:
    """Train one perspective (alignment, fidelity, ranking or safety).

    Without ``train_path`` the perspective's build-data flow runs first (on the demo corpus unless its
    own defaults are changed); without ``backbone`` a tiny random-weight LLaVA is built and used.
    ``lora_rank=0`` trains projector and head only. ``training`` sets any other
    :class:`reward.training.TrainingConfig` field; ``num_processes > 1`` trains under
    ``accelerate launch``. Returns the model folder and the data paths.
    """
    if perspective not in BUILD_DATA:
        raise ValueError(f"unknown perspective {perspective!r}; choose one of {sorted(BUILD_DATA)}")
    if train_path is None:
        data = BUILD_DATA[perspective](artifacts_dir=artifacts_dir, demo_prompts=demo_prompts, seed=seed)
        train_path, validation_path = data["train"], validation_path or data["validation"]
    tiny = backbone is None
    if tiny:
        backbone = tiny_backbone_task(seed=seed, root=artifacts_dir)
    job = build_job(
        perspective,
        train_path,
        validation_path,
        backbone,
        tiny=tiny,
        trust_remote_code=trust_remote_code,
        hidden_layer=hidden_layer,
        head_kind=head_kind,
        loss_kind=loss_kind,
        temperature=temperature,
        gpm_dim=gpm_dim,
        lora_rank=lora_rank,
        learning_rate=learning_rate,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        max_minutes=max_minutes,
        precision=precision,
        save_steps=save_steps,
        seed=seed,
        training=training,
    )
    trained = train_task(job, num_processes=num_processes, root=artifacts_dir)
    outputs = {"model": str(trained.path), "train": train_path, "validation": validation_path or ""}
    publish_run_artifacts(f"{FLOW_NAME}-{perspective}", {"train": trained}, outputs)
    _publish_model_card(perspective, trained.stats, str(trained.path))
    return {**outputs, "perspective": perspective}


def _publish_model_card(perspective: str, stats: dict[str, Any], folder: str) -> None:
    metrics = stats.get("metrics", {})
    lines = [
        f"# {perspective} reward model",
        "",
        f"- folder: `{folder}`",
        f"- optimizer steps: {stats.get('global_step')}"
        + (" (stopped by the time budget)" if stats.get("stopped_by_time_budget") else ""),
        f"- trainable fraction: {100 * (stats.get('trainable_fraction') or 0):.3f}%",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value:.4g} |" for name, value in sorted(metrics.items())],
        "",
        f'Score images: `llava-reward score --model {folder} --prompt "..." IMAGE...`',
    ]
    create_markdown_artifact(
        key=f"{FLOW_NAME}-{perspective}-model",
        markdown="\n".join(lines),
        description=f"{perspective} reward model: folder and metrics",
    )
    get_run_logger().info("model folder: %s (metrics %s)", folder, metrics)


if __name__ == "__main__":
    train_reward_model()
