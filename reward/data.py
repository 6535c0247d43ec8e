"""Training data of the reward model: the assembled Parquet tables as datasets, and their collators.

- :class:`PairDataset` reads ``TRAINING_PAIRS_SCHEMA`` rows (chosen and rejected prompt + image; the
  two prompts may differ, as in hard negatives) for Bradley-Terry / GPM training.
- :class:`UnpairedDataset` reads ``TRAINING_UNPAIRED_SCHEMA`` rows (prompt, image, label 1 = safe,
  0 = unsafe) for cross-entropy training.

Tables are checked when they are opened (columns, nulls, labels) and images are decoded lazily with
:func:`data.images.open_image`; every error names the file, the row and the field.

The collators call :meth:`reward.backbones.Backbone.prepare` once per batch. A pair batch of B pairs
becomes one prepared batch of 2B examples, chosen first, so the model scores both sides in one forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.images import ImageError, open_image
from reward.backbones import Backbone

PAIR_COLUMNS: tuple[str, ...] = ("chosen_prompt", "chosen_image_uri", "rejected_prompt", "rejected_image_uri")
UNPAIRED_COLUMNS: tuple[str, ...] = ("prompt", "image_uri", "label")


class RewardDataError(ValueError):
    """A training table or one of its images is unusable. The message names file, row and field."""


def _read_table(
    source: str | Path | pl.DataFrame, columns: Sequence[str], *, kind: str
) -> tuple[pl.DataFrame, str]:
    """(the table with at least ``columns``, its name for messages); checks columns and nulls."""
    if isinstance(source, pl.DataFrame):
        frame, name = source, f"<{kind} frame>"
    else:
        name = str(source)
        try:
            frame = pl.read_parquet(source)
        except (OSError, pl.exceptions.ComputeError) as error:
            raise RewardDataError(f"{name}: cannot read the {kind} table ({error})") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise RewardDataError(
            f"{name}: not a {kind} table: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(frame.columns) or 'no columns'})"
        )
    for column in columns:
        nulls = frame[column].is_null()
        if bool(nulls.any()):
            row = int(nulls.arg_true()[0])
            raise RewardDataError(f"{name}: row {row}, field {column!r}: null value")
    return frame, name


def load_image(
    uri: str, *, table: str, row: int, field: str, image_root: str | Path | None = None
) -> Image.Image:
    """The RGB image behind ``uri`` (relative URIs are resolved against ``image_root``)."""
    if image_root is not None and not Path(uri.split("::", 1)[0]).is_absolute():
        uri = str(Path(image_root) / uri)
    try:
        return open_image(uri)
    except ImageError as error:
        raise RewardDataError(f"{table}: row {row}, field {field!r}: {error}") from error


class PairDataset(Dataset):
    """Preference pairs from an assembled pairs table (a Parquet path or a polars frame).

    Item ``i`` is a dict with ``chosen_image``, ``chosen_prompt``, ``rejected_image`` and
    ``rejected_prompt`` (images decoded on access).
    """

    def __init__(self, source: str | Path | pl.DataFrame, *, image_root: str | Path | None = None) -> None:
        self.table, self.name = _read_table(source, PAIR_COLUMNS, kind="pairs")
        self.image_root = image_root
        self._rows = self.table.select(PAIR_COLUMNS).rows()

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        chosen_prompt, chosen_uri, rejected_prompt, rejected_uri = self._rows[index]
        return {
            "chosen_image": self._image(chosen_uri, index, "chosen_image_uri"),
            "chosen_prompt": chosen_prompt,
            "rejected_image": self._image(rejected_uri, index, "rejected_image_uri"),
            "rejected_prompt": rejected_prompt,
        }

    def _image(self, uri: str, row: int, field: str) -> Image.Image:
        return load_image(uri, table=self.name, row=row, field=field, image_root=self.image_root)


class UnpairedDataset(Dataset):
    """Labelled (prompt, image) rows from an assembled unpaired table; labels are 1 (safe) or 0.

    Item ``i`` is a dict with ``image``, ``prompt`` and ``label`` (float 0.0 / 1.0).
    """

    def __init__(self, source: str | Path | pl.DataFrame, *, image_root: str | Path | None = None) -> None:
        self.table, self.name = _read_table(source, UNPAIRED_COLUMNS, kind="unpaired")
        bad = ~self.table["label"].cast(pl.Int64, strict=False).is_in([0, 1])
        if bool(bad.any()):
            row = int(bad.arg_true()[0])
            value = self.table["label"][row]
            raise RewardDataError(f"{self.name}: row {row}, field 'label': expected 0 or 1, got {value!r}")
        self.image_root = image_root
        self._rows = self.table.select(UNPAIRED_COLUMNS).rows()

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        prompt, uri, label = self._rows[index]
        image = load_image(uri, table=self.name, row=index, field="image_uri", image_root=self.image_root)
        return {"image": image, "prompt": prompt, "label": float(label)}

    @property
    def labels(self) -> list[int]:
        return [int(row[2]) for row in self._rows]


class PairCollator:
    """Pairs → ``{"labels": ones(B), "num_pairs": B, "inputs": prepare(chosen + rejected)}``.

    ``labels`` (all ones: the chosen side wins) comes first so that Trainer's batch-size detection
    counts pairs, not examples.
    """

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        images = [row["chosen_image"] for row in rows] + [row["rejected_image"] for row in rows]
        prompts = [row["chosen_prompt"] for row in rows] + [row["rejected_prompt"] for row in rows]
        return {
            "labels": torch.ones(len(rows)),
            "num_pairs": len(rows),
            "inputs": dict(self.backbone.prepare(images, prompts)),
        }


class UnpairedCollator:
    """Labelled rows → ``{"labels": (B,) float, "inputs": prepare(images, prompts)}``."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "labels": torch.tensor([float(row["label"]) for row in rows]),
            "inputs": dict(
                self.backbone.prepare([row["image"] for row in rows], [row["prompt"] for row in rows])
            ),
        }


def dataset_for_loss(
    loss_kind: str, source: str | Path | pl.DataFrame, *, image_root: str | Path | None = None
) -> PairDataset | UnpairedDataset:
    """The dataset a loss trains on: pairs for 'bt' / 'gpm', unpaired rows for 'ce'."""
    if loss_kind == "ce":
        return UnpairedDataset(source, image_root=image_root)
    return PairDataset(source, image_root=image_root)


def collator_for(
    dataset: PairDataset | UnpairedDataset, backbone: Backbone
) -> PairCollator | UnpairedCollator:
    return UnpairedCollator(backbone) if isinstance(dataset, UnpairedDataset) else PairCollator(backbone)


__all__ = [
    "PAIR_COLUMNS",
    "UNPAIRED_COLUMNS",
    "PairCollator",
    "PairDataset",
    "RewardDataError",
    "UnpairedCollator",
    "UnpairedDataset",
    "collator_for",
    "dataset_for_loss",
    "load_image",
]
