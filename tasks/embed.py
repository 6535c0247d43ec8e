"""Embed stage: open_clip text embeddings of the prompts and image embeddings of the images.

The model is a parameter: an open_clip model name (``ViT-B-32``, ``local-dir:/path``, or the bundled
``demo-tiny-clip`` config) and ``pretrained`` (an open_clip tag such as ``laion2b_s34b_b79k``, a local
checkpoint file, or None for random weights drawn from ``seed``). Offline, only local checkpoints and
random weights work; set ``HF_HUB_OFFLINE=1`` so open_clip fails fast instead of retrying a hub.
Embeddings are L2-normalized float32, stored as fixed-size arrays.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import data.images
import data.schemas
import data.validate
import reward.clip
from data.images import ImageError, open_image
from data.validate import reject_rows
from reward.clip import ClipEncoder, ClipSpec, load_clip
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task
from tasks.progress import ProgressLog

logger = logging.getLogger(__name__)

EMBED = Stage("embed", 2, (sys.modules[__name__], reward.clip, data.validate, data.images, data.schemas))


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_pixels(uri: str, preprocess: Callable) -> Any:
    try:
        return preprocess(open_image(uri))
    except ImageError as error:
        return error


@dataclass(frozen=True)
class SplitTransform:
    """An open_clip image transform cut before its ``ToTensor``: the PIL steps (resize, crop, RGB) run
    per image in the decode threads, and ``ToTensor`` + ``Normalize`` run once per batch on the stacked
    uint8 pixels. Both are element-wise, so the batch tensor is bitwise the per-image one; per image
    they cost ~4x the PIL steps in Python overhead."""

    pil_steps: Callable
    tail: Callable  # ToTensor + Normalize of one image (the reference, and the fallback)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def finish(self, images: Sequence[Any]) -> Any:
        """The model input of ``images`` (outputs of :attr:`pil_steps`): one vectorized conversion when
        they are equal-sized RGB, else the per-image tail."""
        import torch
        from torchvision.transforms.functional import normalize

        arrays = [np.asarray(image) for image in images]
        first = arrays[0]
        uniform = first.ndim == 3 and first.shape[2] == 3 and first.dtype == np.uint8
        if not uniform or any(array.shape != first.shape or array.dtype != first.dtype for array in arrays):
            return torch.stack([self.tail(image) for image in images])
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return normalize(pixels.to(torch.get_default_dtype()).div(255), self.mean, self.std)


def split_transform(preprocess: Callable) -> SplitTransform | None:
    """The :class:`SplitTransform` of a torchvision ``Compose`` ending in ``ToTensor``, ``Normalize``
    (open_clip's transforms do), else None."""
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = list(getattr(preprocess, "transforms", ()))
    if len(steps) < 2 or not isinstance(preprocess, Compose):
        return None
    *prefix, to_tensor, normalize = steps
    if not isinstance(to_tensor, ToTensor) or not isinstance(normalize, Normalize) or normalize.inplace:
        return None
    return SplitTransform(
        Compose(prefix), Compose([to_tensor, normalize]), tuple(normalize.mean), tuple(normalize.std)
    )


def default_decode_workers() -> int:
    """Decode threads: one core is left to the model's own threads, at most two (the decoding is
    mostly Python, so more threads only contend for the GIL; on 2 cores one thread was ~10% faster)."""
    return min(2, max(1, (os.cpu_count() or 2) - 1))


def embed_images(
    encoder: ClipEncoder, uris: Sequence[str], *, batch_size: int, workers: int | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """(embeddings of the decodable images in order, {index: reason} for the others). Batches are
    decoded in a thread pool (``workers``, default :func:`default_decode_workers`) that many batches
    ahead of the model, so memory stays bounded. With an
    open_clip transform, the tensor conversion runs per batch (:class:`SplitTransform`), after checking
    on the first image that it gives exactly the per-image tensor."""
    import torch

    workers = workers or default_decode_workers()
    split = split_transform(encoder.preprocess)
    per_image = split.pil_steps if split is not None else encoder.preprocess
    vectorized = split is not None

    def decode(batch: Sequence[tuple[int, str]]) -> list[tuple[int, Any]]:
        return [(index, _load_pixels(uri, per_image)) for index, uri in batch]

    embeddings: list[np.ndarray] = []
    failures: dict[int, str] = {}
    progress = ProgressLog(logger, "embed images", len(uris))

    def consume(decoded: list[tuple[int, Any]]) -> None:
        nonlocal vectorized
        progress.advance(len(decoded))
        images = []
        for index, pixels in decoded:
            if isinstance(pixels, ImageError):
                failures[index] = str(pixels)
            else:
                images.append(pixels)
        if not images:
            return
        if split is None:
            pixels = torch.stack(images)
        elif vectorized:
            pixels = split.finish(images)
            if not embeddings and not torch.equal(pixels[0], split.tail(images[0])):
                vectorized = False  # a transform whose batch form differs: per image from now on
        if split is not None and not vectorized:
            pixels = torch.stack([split.tail(image) for image in images])
        embeddings.append(encoder.encode_images(pixels))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: deque = deque()
        for batch in _batches(list(enumerate(uris)), batch_size):
            in_flight.append(pool.submit(decode, batch))
            if len(in_flight) > workers:
                consume(in_flight.popleft().result())
        while in_flight:
            consume(in_flight.popleft().result())
    dimension = int(encoder.model.visual.output_dim)
    stacked = np.concatenate(embeddings) if embeddings else np.zeros((0, dimension), dtype=np.float32)
    return stacked, failures


#: The ratings columns the embed stage reads.
COLUMNS = ["image_id", "prompt_id", "prompt", "image_uri", "source_file", "source_row"]
#: The table of prompt embeddings (the main table holds the image embeddings).
TEXT = "text"


def clip_params(clip: ClipSpec) -> dict[str, Any]:
    """The embed stage's key parameters: the model spec without the device (same vectors anywhere)."""
    return {key: value for key, value in asdict(clip).items() if key != "device"}


def embed_key(ratings_path: str | Path, clip: ClipSpec) -> dict[str, Any]:
    """The embed stage's parameters and inputs: what keys its output (sharded or not)."""
    return {"params": clip_params(clip), "inputs": {"ratings": ratings_path}}


def distinct_prompts(ratings: pl.DataFrame) -> pl.DataFrame:
    """``prompt_id``, ``prompt`` of every distinct prompt, in first-appearance order."""
    return ratings.select("prompt_id", "prompt").unique("prompt_id", keep="first", maintain_order=True)


def encode_texts(encoder: ClipEncoder, texts: list[str], *, batch_size: int, width: int) -> np.ndarray:
    """Text embeddings of ``texts`` in batches of ``batch_size``; ``(0, width)`` when there are none."""
    batches = [encoder.encode_text(batch) for batch in _batches(texts, batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, width), dtype=np.float32)


def embed_rows(
    encoder: ClipEncoder, rows: pl.DataFrame, *, batch_size: int
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Image embeddings of ``rows`` (``image_id``, ``prompt_id``, ``embedding``; rows in order), the
    rows whose image could not be read as rejects with the reason, and the embedding width (0 when
    nothing was embedded)."""
    image_vectors, failures = embed_images(encoder, rows["image_uri"].to_list(), batch_size=batch_size)
    failed = pl.Series([index in failures for index in range(rows.height)], dtype=pl.Boolean)
    images = (
        rows.filter(~failed)
        .select("image_id", "prompt_id")
        .with_columns(vector_column("embedding", image_vectors))
    )
    rejects = reject_rows(
        rows.filter(failed).with_columns(
            pl.Series("reason", [failures[i] for i in sorted(failures)], dtype=pl.String)
        ),
        stage="embed",
        field="image_uri",
        reason=pl.col("reason"),
    )
    return images, rejects, int(image_vectors.shape[1]) if image_vectors.size else 0


def embed_output(
    encoder: ClipEncoder,
    rows: pl.DataFrame,
    prompts: pl.DataFrame,
    *,
    batch_size: int,
    text_width: int,
    stats: dict[str, Any],
) -> StageOutput:
    """The embed stage's tables for the images of ``rows`` (main table, undecodable ones as rejects)
    and ``prompts`` (table ``text``, ``(0, text_width)`` vectors when empty), with ``stats`` plus the
    embedding width."""
    text_vectors = encode_texts(encoder, prompts["prompt"].to_list(), batch_size=batch_size, width=text_width)
    images, rejects, dimension = embed_rows(encoder, rows, batch_size=batch_size)
    return StageOutput(
        tables={
            MAIN: images,
            TEXT: prompts.with_columns(vector_column("embedding", text_vectors)),
            REJECTS: rejects,
        },
        rows_in=rows.height,
        rows_kept=images.height,
        stats={**stats, "dimension": dimension},
    )


def embed(
    ratings_path: str | Path,
    *,
    clip: ClipSpec = ClipSpec(),
    root: str | Path | None = None,
) -> StageResult:
    """Stage: embed every distinct prompt (table ``text``) and every image (main table)."""

    def compute() -> StageOutput:
        ratings = pl.read_parquet(ratings_path, columns=COLUMNS)
        prompts = distinct_prompts(ratings)
        return embed_output(
            load_clip(clip),
            ratings,
            prompts,
            batch_size=clip.batch_size,
            text_width=0,
            stats={"prompts": prompts.height},
        )

    return run_stage(EMBED, **embed_key(ratings_path, clip), compute=compute, root=root)


def vector_column(name: str, matrix: np.ndarray) -> pl.Series:
    """A float32 fixed-size-array column of the rows of ``matrix``."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pl.Series(name, matrix, dtype=pl.Array(pl.Float32, matrix.shape[1] if matrix.ndim == 2 else 0))


embed_task = stage_task(embed, name="embed")
