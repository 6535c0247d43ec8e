"""The user-facing scoring API: load trained perspectives and score, compare and rank images.

>>> scorer = RewardScorer.from_pretrained(["models/alignment", "models/fidelity"])
>>> scorer.score(["a.png", "b.png"], "two red circles", perspective="alignment")   # rewards, batched
>>> scorer.compare("two red circles", "a.png", "b.png")                            # P(a > b)
>>> scorer.rank("two red circles", ["a.png", "b.png", "c.png"])                    # best first

Several perspective folders trained on the same base model share ONE loaded base model: each
perspective is a named peft adapter (LoRA + projector copy) plus its own head, and switching is
``peft.set_adapter`` plus a head swap, without reloading anything. Images may be paths or image URIs
(``archive.zip::member``, ``shard.parquet::column[row]``), PIL images or encoded bytes.

Preference probabilities follow the loss the perspective was trained with: Bradley-Terry
``sigmoid((r_a - r_b) / T)``; GPM ``sigmoid(s(a, b) / T)`` with the skew-symmetric form ``s``
(so for GPM perspectives :meth:`RewardScorer.score` returns 2k-dimensional embeddings).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data.images import ImageError, open_image
from reward.backbones.adapters import BackboneError
from reward.backbones.backbone import check_pixel_tensor
from reward.checkpoint import (
    CheckpointError,
    RewardModelConfig,
    load_adapter_weights,
    load_head,
    load_lora_config,
    load_projector_state,
    load_reward_model,
    read_reward_config,
)
from reward.config import LossConfig
from reward.heads import RewardHead
from reward.losses import preference_probability
from reward.model import RewardModel
from reward.prefetch import prefetched
from reward.registry import resolve_model_folder

#: A path / URI, encoded bytes, a PIL image, or a uint8 (3, H, W) tensor (a sampler's output).
ImageInput = str | Path | bytes | bytearray | Image.Image | torch.Tensor


class ScoringError(ValueError):
    """Bad input to the scoring API (an unreadable image, mismatched lengths, an unknown perspective)."""


def describe(image: ImageInput) -> str:
    """A short printable name of an image input (its path, or its kind)."""
    if isinstance(image, str | Path):
        return str(image)
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height}>"
    if isinstance(image, torch.Tensor):
        return f"<{str(image.dtype).removeprefix('torch.')} tensor {tuple(image.shape)}>"
    return f"<{len(image)} bytes>"


def as_image(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a path / URI, a PIL image or encoded bytes."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, bytes | bytearray):
        try:
            with Image.open(io.BytesIO(bytes(image))) as opened:
                opened.load()
                return opened.convert("RGB")
        except (OSError, Image.DecompressionBombError, ValueError) as error:
            raise ScoringError(f"{describe(image)}: cannot decode image ({error})") from error
    if isinstance(image, str | Path):
        try:
            return open_image(str(image))
        except ImageError as error:
            raise ScoringError(str(error)) from error
    raise ScoringError(f"an image must be a path, URI, PIL image or bytes, got {type(image).__name__}")


def as_model_image(image: ImageInput) -> Image.Image | torch.Tensor:
    """What the backbone takes: a uint8 (3, H, W) tensor as it is (checked), anything else as
    :func:`as_image` reads it."""
    if isinstance(image, torch.Tensor):
        try:
            check_pixel_tensor(image, describe(image))
        except BackboneError as error:
            raise ScoringError(str(error)) from error
        return image
    return as_image(image)


@dataclass
class Perspective:
    """One loaded perspective: its config, its head and (without LoRA) its projector weights."""

    name: str
    folder: Path
    config: RewardModelConfig
    head: RewardHead
    projector_state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class RankedImage:
    """One image of :meth:`RewardScorer.rank`: its input position, reward (None for GPM) and mean
    probability of beating each other image."""

    rank: int
    index: int
    image: str
    score: float | None
    win_rate: float


def _folders(source: str | Path | Sequence[str | Path] | Mapping[str, str | Path]) -> list[tuple[str, Path]]:
    """(adapter name, folder) pairs; names default to each folder's perspective. A registry
    perspective folder (or its ``champion.json``) stands for its champion's model folder."""
    if isinstance(source, Mapping):
        pairs = [(str(name), resolve_model_folder(folder)) for name, folder in source.items()]
    else:
        folders = [
            resolve_model_folder(folder)
            for folder in ([source] if isinstance(source, str | Path) else source)
        ]
        pairs = [(read_reward_config(folder).perspective, folder) for folder in folders]
    if not pairs:
        raise ScoringError("no model folder given")
    seen: dict[str, Path] = {}
    for name, folder in pairs:
        if name in seen:
            raise ScoringError(
                f"perspective {name!r} is in both {seen[name]} and {folder}; pass a mapping {{name: folder}} "
                "to load both under different names"
            )
        seen[name] = folder
    return pairs


def _backbone_differences(
    first: RewardModelConfig, other: RewardModelConfig, *, ignore: set[str]
) -> list[str]:
    a, b = first.backbone.to_dict(), other.backbone.to_dict()
    return [f"{key}: {a[key]!r} vs {b[key]!r}" for key in sorted(a) if key not in ignore and a[key] != b[key]]


class RewardScorer:
    """Scores (image, prompt) pairs with one or several perspectives on one shared base model."""

    def __init__(
        self, model: RewardModel, perspectives: Sequence[Perspective], *, batch_size: int = 16
    ) -> None:
        if not perspectives:
            raise ScoringError("a scorer needs at least one perspective")
        if batch_size < 1:
            raise ScoringError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self._perspectives = {perspective.name: perspective for perspective in perspectives}
        self.batch_size = batch_size
        self._active = ""
        self.use(perspectives[0].name)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        folders: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
        *,
        backbone: str | None = None,
        dtype: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        trust_remote_code: bool = False,
    ) -> RewardScorer:
        """Load perspective folders (one, a list, or ``{name: folder}``) onto one base model.

        All folders must name the same base model and feature settings. ``backbone`` points at another
        copy of the base model; ``device`` defaults to CUDA when available; ``trust_remote_code``
        allows modelling code shipped with the base model (a folder's saved config never does).
        """
        pairs = _folders(folders)
        device = torch.device(device) if device is not None else _default_device()
        first_name, first_folder = pairs[0]
        model, first_config = load_reward_model(
            first_folder,
            backbone=backbone,
            dtype=dtype,
            adapter_name=first_name,
            trust_remote_code=trust_remote_code,
        )
        perspectives = [
            Perspective(
                first_name,
                first_folder,
                first_config,
                model.head,
                None if first_config.lora is not None else load_projector_state(first_folder),
            )
        ]
        ignore = {"dtype"} | ({"name_or_path"} if backbone is not None else set())
        for name, folder in pairs[1:]:
            config = read_reward_config(folder)
            differences = _backbone_differences(first_config, config, ignore=ignore)
            if differences:
                raise CheckpointError(
                    f"{folder}: its base model settings differ from {first_folder}'s "
                    f"({'; '.join(differences)}); perspectives on one scorer must share the base model"
                )
            if (config.lora is None) != (first_config.lora is None):
                how = "without" if config.lora is None else "with"
                raise CheckpointError(
                    f"{folder}: trained {how} LoRA, unlike {first_folder}; load them in separate scorers"
                )
            projector_state = None
            if model.peft_model is not None:
                model.peft_model.add_adapter(name, load_lora_config(folder))
                load_adapter_weights(model.peft_model, folder, name)
            else:
                projector_state = load_projector_state(folder)
            head = load_head(folder, config, model.backbone.hidden_size)
            perspectives.append(Perspective(name, folder, config, head, projector_state))
        model.to(device)
        for perspective in perspectives:
            perspective.head.to(device)
        model.eval().requires_grad_(False)
        return cls(model, perspectives, batch_size=batch_size)

    # ------------------------------------------------------------------ perspectives
    @property
    def perspectives(self) -> list[str]:
        return list(self._perspectives)

    @property
    def active(self) -> str:
        return self._active

    def config(self, perspective: str | None = None) -> RewardModelConfig:
        return self._get(perspective or self._active).config

    def _get(self, name: str) -> Perspective:
        if name not in self._perspectives:
            raise ScoringError(f"unknown perspective {name!r}; loaded: {self.perspectives}")
        return self._perspectives[name]

    def use(self, perspective: str) -> RewardScorer:
        """Make ``perspective`` active: its adapter (or projector weights) and its head."""
        chosen = self._get(perspective)
        if perspective == self._active:
            return self
        if self.model.peft_model is not None:
            self.model.peft_model.set_adapter(perspective)
        elif chosen.projector_state is not None:
            self.model.backbone.projector.load_state_dict(chosen.projector_state)
        self.model.head = chosen.head
        self.model.head_config = chosen.config.head
        self.model.eval().requires_grad_(False)
        self._active = perspective
        return self

    @contextmanager
    def _using(self, perspective: str | None) -> Iterator[Perspective]:
        previous = self._active
        self.use(perspective or previous)
        try:
            yield self._perspectives[self._active]
        finally:
            self.use(previous)

    # ------------------------------------------------------------------ scoring
    def _rewards(self, images: Sequence[ImageInput], prompts: Sequence[str]) -> torch.Tensor:
        """Rewards of the active perspective, in batches, as a CPU float tensor (N,) or (N, 2k). The next
        batch is decoded and run through the processor while the model scores the current one."""

        def prepare(start: int) -> Mapping[str, torch.Tensor]:
            end = start + self.batch_size
            batch = [as_model_image(image) for image in images[start:end]]
            return self.model.backbone.prepare(batch, list(prompts[start:end]))

        chunks = []
        with torch.no_grad():
            for inputs in prefetched(prepare, range(0, len(images), self.batch_size)):
                chunks.append(self.model(inputs).float().cpu())
        return torch.cat(chunks)

    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Sequence[str],
        *,
        perspective: str | None = None,
    ) -> np.ndarray:
        """Rewards of (image, prompt) pairs: shape (N,), or (N, 2k) for a GPM perspective.

        One prompt is used for every image; a list gives one prompt per image.
        """
        images = _image_list(images)
        if isinstance(prompts, str):
            prompts = [prompts] * len(images)
        prompts = list(prompts)
        if len(prompts) != len(images):
            raise ScoringError(f"got {len(images)} images but {len(prompts)} prompts")
        if not images:
            raise ScoringError("no images to score")
        with self._using(perspective):
            return self._rewards(images, prompts).numpy()

    def compare(
        self,
        prompt: str,
        image_a: ImageInput,
        image_b: ImageInput,
        *,
        prompt_b: str | None = None,
        perspective: str | None = None,
    ) -> float:
        """P(a > b): the probability that ``image_a`` is preferred to ``image_b`` for ``prompt``
        (``prompt_b``, when given, is the prompt paired with ``image_b``)."""
        with self._using(perspective) as active:
            rewards = self._rewards([image_a, image_b], [prompt, prompt if prompt_b is None else prompt_b])
            return float(preference_probability(active.config.loss, rewards[:1], rewards[1:])[0])

    def rank(
        self, prompt: str, images: Sequence[ImageInput], *, perspective: str | None = None
    ) -> list[RankedImage]:
        """The images best first. Scalar rewards rank by reward; GPM perspectives (which may be
        intransitive) rank by win rate, the mean P(image > other) over the other images."""
        images = _image_list(images)
        if not images:
            raise ScoringError("no images to rank")
        with self._using(perspective) as active:
            rewards = self._rewards(images, [prompt] * len(images))
            count = len(images)
            probability = pairwise_probability(active.config.loss, rewards)
            probability.fill_diagonal_(0.0)
            win_rate = probability.sum(dim=1) / (count - 1) if count > 1 else torch.full((1,), 0.5)
            scalar = active.config.head.gpm_dim is None
            key = rewards if scalar else win_rate
            order = sorted(range(count), key=lambda index: (-float(key[index]), index))
            return [
                RankedImage(
                    rank=position + 1,
                    index=index,
                    image=describe(images[index]),
                    score=float(rewards[index]) if scalar else None,
                    win_rate=float(win_rate[index]),
                )
                for position, index in enumerate(order)
            ]


def pairwise_probability(loss: LossConfig, rewards: torch.Tensor) -> torch.Tensor:
    """(N, N) matrix of P(i > j) from rewards (N,) or GPM embeddings (N, 2k)."""
    count = rewards.shape[0]
    rows = rewards.repeat_interleave(count, dim=0)
    cols = rewards.repeat(count, *([1] * (rewards.dim() - 1)))
    return preference_probability(loss, rows, cols).reshape(count, count)


def _image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, str | Path | bytes | bytearray | Image.Image | torch.Tensor):
        return [images]
    return list(images)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = [
    "ImageInput",
    "Perspective",
    "RankedImage",
    "RewardScorer",
    "ScoringError",
    "as_image",
    "as_model_image",
    "describe",
    "pairwise_probability",
]
