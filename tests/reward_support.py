"""Helpers shared by the reward training / checkpoint / scoring / CLI tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from reward.backbones import load_backbone
from reward.checkpoint import RewardModelConfig, save_reward_model
from reward.config import BackboneConfig, HeadConfig, LoraSettings, LossConfig
from reward.model import RewardModel
from reward.training import TrainingConfig, TrainingJob


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assembled_tables(corpus: Path, artifacts: Path) -> dict[str, str]:
    """The pipeline's own stages on the demo corpus: fidelity pairs (train / validation) and the
    UnsafeBench-layout safety rows (train / validation)."""
    from tasks.assemble import assemble_pairs, assemble_unpaired
    from tasks.ingest import ingest_ratings, ingest_safety
    from tasks.pairs import pairs
    from tasks.ratings import ratings

    ingested = ingest_ratings(corpus / "imagerewarddb", split="train", root=artifacts)
    scored = ratings(ingested.path, perspective="fidelity", root=artifacts)
    fidelity = assemble_pairs(
        [pairs(scored.path, root=artifacts).path], validation_fraction=0.2, root=artifacts
    )
    safety = assemble_unpaired(
        ingest_safety(corpus / "unsafebench", split="train", root=artifacts).path,
        validation_fraction=0.2,
        root=artifacts,
    )
    return {
        "pairs": str(fidelity.path),
        "pairs_validation": fidelity.paths["validation"],
        "rows": str(safety.path),
        "rows_validation": safety.paths["validation"],
    }


def quick_job(
    backbone: str | Path,
    train_data: str,
    *,
    perspective: str = "fidelity",
    eval_data: str | None = None,
    head: HeadConfig | None = None,
    loss: LossConfig | None = None,
    lora_rank: int | None = 2,
    **training: Any,
) -> TrainingJob:
    """A short training job on the tiny backbone (``training`` sets TrainingConfig fields;
    ``lora_rank=None`` trains without LoRA)."""
    settings: dict[str, Any] = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1}
    return TrainingJob(
        perspective=perspective,
        backbone=BackboneConfig(str(backbone)),
        train_data=train_data,
        eval_data=eval_data,
        head=head or HeadConfig(),
        loss=loss or LossConfig(),
        lora=None if lora_rank is None else LoraSettings(rank=lora_rank, dropout=0.0),
        training=TrainingConfig(**{**settings, **training}),
    )


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a perspective folder, keyed by file and name."""
    tensors = {}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        for name, tensor in load_file(path).items():
            tensors[f"{path.relative_to(folder)}:{name}"] = tensor
    return tensors


PROMPTS = ["two red circles", "a blue square above a star", "three yellow crosses", "one green triangle"]


def pictures(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


def trained_model(
    backbone_dir: Path, *, perspective: str, head: HeadConfig, lora: LoraSettings | None, seed: int
) -> RewardModel:
    """A model whose trainable tensors hold random values (as if trained), seeded."""
    model = RewardModel(load_backbone(str(backbone_dir)), head, lora, adapter_name=perspective)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.trainable_parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def save(model: RewardModel, folder: Path, backbone_dir: Path, loss: LossConfig | None = None) -> Path:
    config = RewardModelConfig(
        perspective=model.adapter_name,
        backbone=BackboneConfig(str(backbone_dir)),
        head=model.head_config,
        loss=loss or LossConfig(),
        lora=model.lora,
        trainable_fraction=model.parameter_report()["trainable"] / model.parameter_report()["total"],
        parameters=model.parameter_report(),
        training_data={"key": "stage:assemble_pairs:abc:main"},
    )
    return save_reward_model(model, folder, config)


def scores(model: RewardModel, images: list[Image.Image]) -> torch.Tensor:
    with torch.no_grad():
        return model.score(images, PROMPTS[: len(images)])


def same_scores(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Equal up to float rounding: equal weights in two separately allocated models can round
    differently in the CPU kernels (memory alignment); the weights themselves are compared exactly."""
    return torch.allclose(first, second, rtol=0.0, atol=1e-6)


def projector_output(backbone: Any, inputs: Any) -> tuple[torch.Tensor, Any]:
    """The projector's own output (a forward hook) and the backbone's output, from one forward."""
    captured: dict[str, torch.Tensor] = {}
    handle = backbone.projector.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
    try:
        with torch.no_grad():
            output = backbone(inputs)
    finally:
        handle.remove()
    return captured["out"], output
