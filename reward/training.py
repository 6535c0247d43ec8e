"""Training the reward model with transformers' :class:`~transformers.Trainer`.

What trains: the LoRA adapter on the language model, the projector (a peft ``modules_to_save`` copy)
and the head; the vision tower and every base weight stay frozen (see :mod:`reward.model`). The
Trainer's optimizer receives exactly the parameters with ``requires_grad``, so the head and the
projector are optimized too.

- One batched forward per step: the collator prepares chosen and rejected examples as one batch of 2B
  (:class:`reward.data.PairCollator`); :meth:`RewardTrainer.compute_loss` splits the rewards.
- Losses: Bradley-Terry (temperature), GPM, or cross-entropy on unpaired labelled rows.
- From the Trainer: gradient accumulation, fp32 / bf16, activation checkpointing, checkpoints and
  resume, seeded data order, and multi-GPU through ``accelerate launch`` (``llava-reward train --job``)
  without code changes.
- Checkpoints (``checkpoint-N/``) hold the perspective folder format of :mod:`reward.checkpoint`
  (safetensors + JSON) plus the Trainer's optimizer / scheduler / RNG state, which the Trainer reads
  back with ``torch.load(weights_only=True)``. No ``training_args.bin`` pickle is written.
- Progress: :class:`ProgressLogger` logs step, loss, pairwise accuracy (or CE accuracy) and learning
  rate to the ``reward.training`` logger; :class:`TimeBudget` stops a run after ``max_minutes``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import (
    EvalPrediction,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from reward.backbones import load_backbone_from_config
from reward.checkpoint import (
    RewardModelConfig,
    check_perspective_name,
    load_trainable_weights,
    save_reward_model,
)
from reward.config import (
    BackboneConfig,
    ConfigError,
    HeadConfig,
    JsonConfig,
    LoraSettings,
    LossConfig,
    check_head_loss_compatible,
)
from reward.data import PairDataset, RewardDataError, UnpairedDataset, collator_for, dataset_for_loss
from reward.losses import bt_margin, ce_loss, gpm_score, pair_loss_fn
from reward.metrics import safety_binary_metrics
from reward.model import RewardModel

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
#: The Trainer's state file inside a checkpoint-N folder.
TRAINER_STATE = "trainer_state.json"
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class TrainingConfig(JsonConfig):
    """Optimization settings (the model, data and loss are in :class:`TrainingJob`)."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps to run; overrides num_train_epochs when > 0."}
    )
    batch_size: int = field(
        default=8,
        metadata={"help": "Pairs (or unpaired rows) per device per forward; 2x examples for pairs."},
    )
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Evaluation batch size; None: batch_size."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forwards accumulated per optimizer step."}
    )
    precision: str = field(
        default="fp32", metadata={"help": "'fp32' or 'bf16' (autocast; master weights stay fp32)."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute the backbone's activations in backward (saves memory)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Share of the steps with linear warm-up, in [0, 1)."}
    )
    lr_scheduler: str = field(
        default="linear", metadata={"help": f"Learning-rate schedule: one of {list(SCHEDULERS)}."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: no clipping)."})
    seed: int = field(default=0, metadata={"help": "Seed of initialization, dropout and data order."})
    logging_steps: int = field(
        default=10, metadata={"help": "Log loss and accuracy every N optimizer steps."}
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Write a resumable checkpoint every N steps; None: none."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (older ones deleted)."}
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N steps (with eval data); None: only at the end."}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "Stop training after this many minutes of wall time; None: no limit."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data-loading worker processes."})
    use_cpu: bool | None = field(
        default=None, metadata={"help": "Force the CPU; None: the CPU only when no CUDA device is present."}
    )

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, *, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainingConfig.{name} must be a positive int, got {value!r}")

        for name in ("batch_size", "gradient_accumulation_steps", "logging_steps"):
            positive(name, getattr(self, name))
        for name in ("eval_batch_size", "save_steps", "save_total_limit", "eval_steps"):
            positive(name, getattr(self, name), allow_none=True)
        if not self.learning_rate > 0:
            raise ConfigError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ConfigError("TrainingConfig: set max_steps > 0 or num_train_epochs > 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"TrainingConfig.precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(
                f"TrainingConfig.lr_scheduler must be one of {list(SCHEDULERS)}, got {self.lr_scheduler!r}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"TrainingConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"TrainingConfig.max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if self.dataloader_num_workers < 0:
            raise ConfigError("TrainingConfig.dataloader_num_workers must be >= 0")

    def arguments(self, output_dir: str | Path, *, has_eval: bool) -> TrainingArguments:
        """The transformers :class:`TrainingArguments` for these settings."""
        use_cpu = self.use_cpu if self.use_cpu is not None else not torch.cuda.is_available()
        return TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.eval_batch_size or self.batch_size,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            bf16=self.precision == "bf16",
            seed=self.seed,
            logging_strategy="steps",
            logging_steps=self.logging_steps,
            logging_first_step=True,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            eval_strategy="steps" if (has_eval and self.eval_steps) else "no",
            eval_steps=self.eval_steps,
            dataloader_num_workers=self.dataloader_num_workers,
            dataloader_pin_memory=not use_cpu,
            use_cpu=use_cpu,
            remove_unused_columns=False,
            label_names=["labels"],
            report_to="none",
            disable_tqdm=True,
            ddp_find_unused_parameters=False,
        )


@dataclass
class TrainingJob:
    """One training run: which perspective, base model, data, head, loss, LoRA and optimization.

    Saved as JSON (``to_json``), so ``llava-reward train --job job.json`` can run it under
    ``accelerate launch`` on several GPUs.
    """

    perspective: str
    backbone: BackboneConfig
    train_data: str
    eval_data: str | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    image_root: str | None = None
    data_key: str | None = None

    def __post_init__(self) -> None:
        check_perspective_name(self.perspective)
        check_head_loss_compatible(self.head, self.loss)
        self.train_data = str(self.train_data)
        self.eval_data = None if self.eval_data is None else str(self.eval_data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "perspective": self.perspective,
            "backbone": self.backbone.to_dict(),
            "train_data": self.train_data,
            "eval_data": self.eval_data,
            "head": self.head.to_dict(),
            "loss": self.loss.to_dict(),
            "lora": None if self.lora is None else self.lora.to_dict(),
            "training": self.training.to_dict(),
            "image_root": self.image_root,
            "data_key": self.data_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingJob:
        if not isinstance(data, dict):
            raise ConfigError(f"TrainingJob: expected a JSON object, got {type(data).__name__}")
        known = {
            "perspective",
            "backbone",
            "train_data",
            "eval_data",
            "head",
            "loss",
            "lora",
            "training",
            "image_root",
            "data_key",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TrainingJob: unknown field(s) {unknown}; known fields: {sorted(known)}")
        for required in ("perspective", "backbone", "train_data"):
            if required not in data:
                raise ConfigError(f"TrainingJob: missing field {required!r}")
        return cls(
            perspective=data["perspective"],
            backbone=BackboneConfig.from_dict(data["backbone"]),
            train_data=data["train_data"],
            eval_data=data.get("eval_data"),
            head=HeadConfig.from_dict(data.get("head", {})),
            loss=LossConfig.from_dict(data.get("loss", {})),
            lora=None if data.get("lora") is None else LoraSettings.from_dict(data["lora"]),
            training=TrainingConfig.from_dict(data.get("training", {})),
            image_root=data.get("image_root"),
            data_key=data.get("data_key"),
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TrainingJob:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from error
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{path}: {error}") from error


def preference_margin(loss: LossConfig, a: Tensor, b: Tensor) -> Tensor:
    """The logit of P(a > b): (r_a - r_b) / T for scalar rewards, s(a, b) / T for GPM embeddings."""
    if loss.kind == "gpm":
        return gpm_score(a, b) / loss.temperature
    return bt_margin(a, b, loss.temperature)


# --------------------------------------------------------------------------------------------------
# Callbacks


class ProgressLogger(TrainerCallback):
    """Logs each Trainer log record as one line: step, epoch, loss, accuracy, learning rate."""

    def __init__(self, sink: logging.Logger | None = None) -> None:
        self.sink = sink or logger

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if state.is_world_process_zero:
            self.sink.info(
                "training: %d optimizer steps, batch %d per device x %d accumulation step(s)",
                state.max_steps,
                args.per_device_train_batch_size,
                args.gradient_accumulation_steps,
            )

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        if "epoch" in logs:
            parts.append(f"epoch {logs['epoch']:.2f}")
        for key, value in logs.items():
            if key in ("epoch", "step") or not isinstance(value, int | float):
                continue
            parts.append(f"{key} {value:.4g}")
        self.sink.info("  ".join(parts))


class TimeBudget(TrainerCallback):
    """Stops training once ``minutes`` of wall time have passed since the first step began."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * minutes
        self.started: float | None = None
        self.stopped = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        self.started = time.monotonic()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if self.started is not None and time.monotonic() - self.started >= self.seconds:
            if not self.stopped:
                logger.info(
                    "time budget of %.1f min reached at step %d: stopping",
                    self.seconds / 60,
                    state.global_step,
                )
            self.stopped = True
            control.should_training_stop = True


# --------------------------------------------------------------------------------------------------
# The trainer


class RewardTrainer(Trainer):
    """A :class:`~transformers.Trainer` for :class:`RewardModel` with pairwise or cross-entropy losses.

    Batches come from :mod:`reward.data` collators. Evaluation predictions are preference margins
    (pairs; > 0 means the chosen side wins) or logits of P(label = 1) (unpaired rows).
    """

    def __init__(
        self,
        model: RewardModel,
        args: TrainingArguments,
        *,
        loss_config: LossConfig,
        model_config: RewardModelConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, args=args, compute_metrics=self.evaluation_metrics, **kwargs)
        self.loss_config = loss_config
        self.model_config = model_config
        self.pair_loss = pair_loss_fn(loss_config)
        # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._train_correct: list[Tensor] = []
        self.remove_callback(PrinterCallback)

    def rewards_and_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, predictions, labels) of one collated batch; one forward for both sides of the pairs."""
        rewards = model(inputs["inputs"])
        labels = inputs["labels"]
        if self.loss_config.kind == "ce":
            return ce_loss(rewards, labels), rewards, labels
        count = int(inputs["num_pairs"])
        chosen, rejected = rewards[:count], rewards[count:]
        return self.pair_loss(chosen, rejected), preference_margin(self.loss_config, chosen, rejected), labels

    @staticmethod
    def _correct(predictions: Tensor, labels: Tensor) -> Tensor:
        """1.0 where the prediction is right: margin > 0 for pairs, (logit > 0) == label for rows."""
        return ((predictions > 0).to(labels.dtype) == labels).float()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        loss, predictions, labels = self.rewards_and_loss(model, inputs)
        if model.training:
            self._train_correct.append(self._correct(predictions.detach(), labels).mean())
        return (loss, {"predictions": predictions}) if return_outputs else loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, predictions, labels = self.rewards_and_loss(model, inputs)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), predictions.detach().float(), labels.detach().float()

    def evaluation_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        """Pairs: accuracy (margin > 0) and mean margin. Rows: accuracy and F1 (unsafe = positive)."""
        predictions = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
        labels = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1)
        if self.loss_config.kind == "ce":
            result = safety_binary_metrics(predictions, labels.astype(np.int64))
            return {"accuracy": result.accuracy, "f1": result.f1}
        return {"accuracy": float(np.mean(predictions > 0)), "margin": float(np.mean(predictions))}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._train_correct and "loss" in logs:
            mean = torch.stack(self._train_correct).mean().reshape(1)
            logs = {**logs, "accuracy": float(self.accelerator.gather(mean).mean())}
            self._train_correct.clear()
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints and the final model: the perspective folder format (no pickles)."""
        if not self.args.should_save:
            return
        save_reward_model(self.model, output_dir or self.args.output_dir, self.model_config)

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        load_trainable_weights(model or self.model, resume_from_checkpoint)


# --------------------------------------------------------------------------------------------------
# Entry points


@dataclass
class TrainingResult:
    """What a finished run produced."""

    model_dir: Path
    global_step: int
    metrics: dict[str, float]
    parameters: dict[str, int]
    trainable_fraction: float
    stopped_by_time_budget: bool
    seconds: float
    trainer: RewardTrainer | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "global_step": self.global_step,
            "metrics": dict(self.metrics),
            "parameters": dict(self.parameters),
            "trainable_fraction": self.trainable_fraction,
            "stopped_by_time_budget": self.stopped_by_time_budget,
            "seconds": self.seconds,
        }


def trainable_fraction(report: dict[str, int]) -> float:
    return report["trainable"] / report["total"] if report["total"] else 0.0


def log_parameters(model: RewardModel, sink: logging.Logger | None = None) -> dict[str, int]:
    """Log the trainable parameter counts (LoRA, projector, head) and the trainable fraction."""
    report = model.parameter_report()
    (sink or logger).info(
        "trainable parameters: %d of %d (trainable fraction %.4f%%): lora %d, projector %d, head %d",
        report["trainable"],
        report["total"],
        100.0 * trainable_fraction(report),
        report["lora"],
        report["projector"],
        report["head"],
    )
    return report


def enable_activation_checkpointing(model: RewardModel) -> None:
    """Non-reentrant activation checkpointing in the base model's layers (works with frozen inputs)."""
    base = model.backbone.model
    options = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:  # transformers < 5
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def _open_dataset(job: TrainingJob, path: str, role: str) -> PairDataset | UnpairedDataset:
    try:
        dataset = dataset_for_loss(job.loss.kind, path, image_root=job.image_root)
    except RewardDataError as error:
        need = "unpaired (prompt, image_uri, label) rows" if job.loss.kind == "ce" else "preference pairs"
        raise RewardDataError(f"{role} data for loss {job.loss.kind!r} must be {need}: {error}") from error
    if len(dataset) == 0:
        raise RewardDataError(f"{path}: the {role} table has no rows")
    return dataset


def build_trainer(
    job: TrainingJob, checkpoint_dir: str | Path, *, callbacks: Sequence[TrainerCallback] = ()
) -> RewardTrainer:
    """Seed, load the backbone, build the model and datasets, and wrap them in a :class:`RewardTrainer`."""
    set_seed(job.training.seed)
    backbone = load_backbone_from_config(job.backbone)
    model = RewardModel(backbone, job.head, job.lora, adapter_name=job.perspective)
    if job.training.gradient_checkpointing:
        enable_activation_checkpointing(model)
    train_dataset = _open_dataset(job, job.train_data, "training")
    eval_dataset = None if job.eval_data is None else _open_dataset(job, job.eval_data, "evaluation")
    report = model.parameter_report()
    model_config = RewardModelConfig(
        perspective=job.perspective,
        backbone=job.backbone,
        head=job.head,
        loss=job.loss,
        lora=job.lora,
        trainable_fraction=trainable_fraction(report),
        parameters=report,
        training_data={
            "key": job.data_key,
            "train": job.train_data,
            "eval": job.eval_data,
            "train_rows": len(train_dataset),
            "eval_rows": None if eval_dataset is None else len(eval_dataset),
        },
        training={"config": job.training.to_dict()},
    )
    extra: list[TrainerCallback] = [ProgressLogger()]
    if job.training.max_minutes is not None:
        extra.append(TimeBudget(job.training.max_minutes))
    return RewardTrainer(
        model,
        job.training.arguments(checkpoint_dir, has_eval=eval_dataset is not None),
        loss_config=job.loss,
        model_config=model_config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator_for(train_dataset, backbone),
        callbacks=[*extra, *callbacks],
    )


def resolve_checkpoint(resume: str | Path | bool | None, checkpoint_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: the one given, the latest in ``checkpoint_dir`` for True."""
    if resume is None or resume is False:
        return None
    if resume is True:
        latest = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
        if latest is None:
            raise ValueError(f"{checkpoint_dir}: no checkpoint-N folder to resume from")
        return Path(latest)
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise ValueError(f"{path}: not a training checkpoint (no {TRAINER_STATE})")
    return path


def checkpoint_is_final(checkpoint: Path) -> bool:
    """Whether the checkpoint was written at the last step of its run."""
    state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
    return state.max_steps > 0 and state.global_step >= state.max_steps


def train_reward_model(
    job: TrainingJob,
    output_dir: str | Path,
    *,
    checkpoint_dir: str | Path | None = None,
    resume_from_checkpoint: str | Path | bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainingResult:
    """Train ``job`` and save the perspective folder to ``output_dir``.

    Args:
        checkpoint_dir: where resumable ``checkpoint-N`` folders go (``job.training.save_steps``);
            default ``output_dir/checkpoints``.
        resume_from_checkpoint: a ``checkpoint-N`` folder, or True for the latest one in
            ``checkpoint_dir``; the run then continues at that step with its optimizer and data order.
        callbacks: extra Trainer callbacks (e.g. forwarding progress to another logger).
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else output_dir / "checkpoints"
    trainer = build_trainer(job, checkpoint_dir, callbacks=callbacks)
    report = log_parameters(trainer.model)
    checkpoint = resolve_checkpoint(resume_from_checkpoint, checkpoint_dir)
    if checkpoint is not None and checkpoint_is_final(checkpoint):
        # The run already reached its last step (killed before saving the model): take the checkpoint
        # as it is; Trainer.train would run one step past max_steps here.
        logger.info("checkpoint %s is the run's last step: not training further", checkpoint)
        load_trainable_weights(trainer.model, checkpoint)
        trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
        metrics: dict[str, float] = {}
    else:
        output = trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
        metrics = {
            key: float(value) for key, value in output.metrics.items() if isinstance(value, int | float)
        }
    if trainer.eval_dataset is not None:
        metrics.update({key: float(value) for key, value in trainer.evaluate().items()})
    budget = next(
        (callback for callback in trainer.callback_handler.callbacks if isinstance(callback, TimeBudget)),
        None,
    )
    stopped = bool(budget and budget.stopped)
    trainer.model_config.training.update(
        {"global_step": trainer.state.global_step, "metrics": metrics, "stopped_by_time_budget": stopped}
    )
    trainer.save_model(str(output_dir))
    return TrainingResult(
        model_dir=output_dir,
        global_step=trainer.state.global_step,
        metrics=metrics,
        parameters=report,
        trainable_fraction=trainable_fraction(report),
        stopped_by_time_budget=stopped,
        seconds=time.perf_counter() - started,
        trainer=trainer,
    )


__all__ = [
    "ProgressLogger",
    "RewardTrainer",
    "TimeBudget",
    "TrainingConfig",
    "TrainingJob",
    "TrainingResult",
    "build_trainer",
    "enable_activation_checkpointing",
    "log_parameters",
    "preference_margin",
    "train_reward_model",
    "trainable_fraction",
]
