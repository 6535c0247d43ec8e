"""The evaluation harness: one scorer protocol, and batched, size-sorted scoring of benchmark tables.

Any object with a ``name`` and ``score(images, prompts) -> (N,)`` is a :class:`Scorer`: the trained
reward model (one :class:`RewardModelScorer` per perspective, over :class:`reward.scoring.RewardScorer`)
and the baselines (:class:`reward.baselines.ClipScoreScorer`), so that one harness scores them all on
the same items.

:func:`score_items` decodes the images itself (a bad image fails its item, with the reason, instead of
the whole batch), scores each distinct (image, prompt) once, and sorts the items by image size and
prompt length so that each batch holds images of one size and prompts of similar length (less
padding, and one resolution per batch for dynamic-resolution models). The scores come back in the
input order. :func:`score_table` applies it to a benchmark table (MJ-Bench pairs, TIFA ratings or
safety rows). Nothing here imports Prefect.

GPM perspectives are not scored: their "reward" is a 2k-dimensional embedding and a preference exists
only between two images (``s(a, b)``), so no scalar reward exists without picking a reference image;
:func:`reward_model_scorers` lists them as skipped, with that reason.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl
from PIL import Image
from tqdm.auto import tqdm

from data.images import ImageError, open_image, read_image_bytes

if TYPE_CHECKING:
    from reward.scoring import RewardScorer

BenchmarkKind = Literal["pairs", "ratings", "safety"]
PAIRS: BenchmarkKind = "pairs"
RATINGS: BenchmarkKind = "ratings"
SAFETY: BenchmarkKind = "safety"
#: (image column(s), prompt column) of each kind of benchmark table.
KIND_COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {
    PAIRS: (("image0_uri", "image1_uri"), "caption"),
    RATINGS: (("image_uri",), "prompt"),
    SAFETY: (("image_uri",), "prompt"),
}
#: Score column(s) that :func:`score_table` adds, matching the image columns.
SCORE_COLUMNS: dict[str, tuple[str, ...]] = {
    PAIRS: ("score0", "score1"),
    RATINGS: ("score",),
    SAFETY: ("score",),
}
GPM_SKIP_REASON = (
    "a GPM perspective scores an image with a 2k-dimensional embedding and defines preferences only "
    "between two images, so it has no scalar reward for this harness"
)


@runtime_checkable
class Scorer(Protocol):
    """Scores (image, prompt) pairs: higher is better. ``score`` returns float scores of shape (N,)."""

    name: str

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray: ...


class EvaluationError(ValueError):
    """Bad input to the harness or a scorer that broke the protocol; the message names which."""


# --------------------------------------------------------------------------------------------
# The reward model as a scorer


class LazyRewardScorer:
    """A :class:`reward.scoring.RewardScorer` over ``{adapter name: folder}`` that loads on first use
    (all folders on one base model), so that cached evaluations never load the model."""

    def __init__(
        self,
        folders: Mapping[str, str | Path],
        *,
        device: str | None = None,
        batch_size: int = 16,
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.folders = {name: Path(folder) for name, folder in folders.items()}
        self.device, self.batch_size, self.dtype = device, batch_size, dtype
        self.trust_remote_code = trust_remote_code
        self._scorer: RewardScorer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    def get(self) -> RewardScorer:
        """The loaded scorer (loaded now if it is the first call; transformers is imported here)."""
        with self._lock:
            if self._scorer is None:
                from reward.scoring import RewardScorer

                self._scorer = RewardScorer.from_pretrained(
                    self.folders,
                    device=self.device,
                    batch_size=self.batch_size,
                    dtype=self.dtype,
                    trust_remote_code=self.trust_remote_code,
                )
            return self._scorer


@dataclass
class RewardModelScorer:
    """One perspective of a (lazily loaded) reward model as a :class:`Scorer`: its scalar reward."""

    name: str
    source: LazyRewardScorer
    perspective: str

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        rewards = self.source.get().score(list(images), list(prompts), perspective=self.perspective)
        return np.asarray(rewards, dtype=np.float64)


def _adapter_name(name: str, index: int) -> str:
    from reward.checkpoint import check_perspective_name
    from reward.config import ConfigError

    try:
        return check_perspective_name(name)
    except ConfigError:
        return f"model_{index}"


def reward_model_scorers(
    models: Mapping[str, str | Path],
    *,
    device: str | None = None,
    batch_size: int = 16,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[list[RewardModelScorer], dict[str, str]]:
    """(one scorer per ``{name: model folder}``, ``{name: reason}`` of the skipped GPM folders).

    Folders on the same base model (and the same choice of LoRA or not) share one lazily loaded
    base model; reading the configs here loads no weights. A folder that asks for remote code the
    caller did not allow (``trust_remote_code``) is refused here, before anything is scored."""
    from reward.checkpoint import check_remote_code_allowed, read_reward_config

    groups: dict[str, dict[str, Path]] = {}
    members: list[tuple[str, str, str]] = []  # (display name, group key, adapter name)
    skipped: dict[str, str] = {}
    for index, (name, folder) in enumerate(models.items()):
        config = read_reward_config(folder)
        check_remote_code_allowed(folder, config.backbone, trust_remote_code)
        if config.loss.kind == "gpm" or config.head.gpm_dim is not None:
            skipped[name] = f"{folder}: {GPM_SKIP_REASON}"
            continue
        backbone = {key: value for key, value in config.backbone.to_dict().items() if key != "dtype"}
        group = repr((sorted(backbone.items()), config.lora is None))
        adapter = _adapter_name(name, index)
        if adapter in groups.get(group, {}):
            adapter = f"model_{index}"
        groups.setdefault(group, {})[adapter] = Path(folder)
        members.append((name, group, adapter))
    loaders = {
        group: LazyRewardScorer(
            folders, device=device, batch_size=batch_size, dtype=dtype, trust_remote_code=trust_remote_code
        )
        for group, folders in groups.items()
    }
    scorers = [RewardModelScorer(name, loaders[group], adapter) for name, group, adapter in members]
    return scorers, skipped


# --------------------------------------------------------------------------------------------
# Batched, size-sorted scoring


@dataclass(frozen=True)
class ItemScores:
    """Scores of the input items in input order (NaN where an item failed) and why items failed."""

    scores: np.ndarray
    failures: dict[int, str]
    distinct_items: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.distinct_items / self.seconds if self.seconds > 0 else float("nan")


def image_size(uri: str) -> tuple[int, int]:
    """(width, height) of the image behind ``uri`` from its header; :class:`ImageError` when unreadable."""
    data = read_image_bytes(uri)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as error:
        raise ImageError(f"{uri}: not an image ({error})") from error
    if width == 0 or height == 0:
        raise ImageError(f"{uri}: empty image ({width}x{height})")
    return width, height


def _probe(uri: str) -> tuple[int, int] | str:
    try:
        return image_size(uri)
    except ImageError as error:
        return str(error)


def _decode(uri: str) -> Image.Image | str:
    try:
        return open_image(uri)
    except ImageError as error:
        return str(error)


def batch_order(sizes: Sequence[tuple[int, int]], prompt_lengths: Sequence[int]) -> np.ndarray:
    """Positions sorted by image area, then width, then prompt length (stable: ties keep input order)."""
    sizes_array = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    lengths = np.asarray(prompt_lengths, dtype=np.int64)
    return np.lexsort((lengths, sizes_array[:, 0], sizes_array[:, 0] * sizes_array[:, 1]))


def _checked_scores(values: object, expected: int, scorer: Scorer) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (expected,):
        raise EvaluationError(
            f"scorer {scorer.name!r} returned shape {array.shape} for {expected} items, "
            f"expected ({expected},)"
        )
    return array


def _distinct(image_uris: Sequence[str], prompts: Sequence[str]) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(the distinct (image, prompt) items in first-seen order, each input's index among them)."""
    positions: dict[tuple[str, str], int] = {}
    inverse = [positions.setdefault(item, len(positions)) for item in zip(image_uris, prompts, strict=True)]
    return list(positions), np.asarray(inverse, dtype=np.int64)


class _Batches:
    """Scores batches of distinct items into ``scores``, recording why failed items failed."""

    def __init__(self, scorer: Scorer, items: list[tuple[str, str]]) -> None:
        self.scorer, self.items = scorer, items
        self.scores = np.full(len(items), np.nan)
        self.reasons: dict[int, str] = {}

    def run(self, indices: list[int], images: list[Image.Image | str]) -> None:
        decoded = []
        for index, image in zip(indices, images, strict=True):
            if isinstance(image, str):
                self.reasons[index] = image
            else:
                decoded.append((index, image))
        if not decoded:
            return
        positions = [index for index, _ in decoded]
        values = self.scorer.score([image for _, image in decoded], [self.items[i][1] for i in positions])
        values = _checked_scores(values, len(decoded), self.scorer)
        for index, value in zip(positions, values, strict=True):
            if np.isfinite(value):
                self.scores[index] = value
            else:
                self.reasons[index] = f"{self.scorer.name} gave a non-finite score ({value})"


def score_items(
    scorer: Scorer,
    image_uris: Sequence[str],
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    sort: bool = True,
    progress: bool = False,
    workers: int = 2,
) -> ItemScores:
    """Score each (image, prompt) item with ``scorer``; the result is in input order.

    Each distinct (image, prompt) is scored once. With ``sort`` the items are batched in the order of
    :func:`batch_order` (their image sizes come from the headers, read up front); images are decoded by
    ``workers`` threads a batch ahead of the scorer. An unreadable image, or a non-finite score, fails
    its item (NaN score, reason in ``failures``). ``progress`` shows a tqdm bar in items per second.
    """
    if len(image_uris) != len(prompts):
        raise EvaluationError(f"got {len(image_uris)} images but {len(prompts)} prompts")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    items, inverse = _distinct(image_uris, prompts)
    batches = _Batches(scorer, items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probed = list(pool.map(_probe, [uri for uri, _ in items]))
        readable = [index for index, size in enumerate(probed) if not isinstance(size, str)]
        batches.reasons |= {index: size for index, size in enumerate(probed) if isinstance(size, str)}
        order = np.asarray(readable, dtype=np.int64)
        if sort and readable:
            order = order[batch_order([probed[i] for i in readable], [len(items[i][1]) for i in readable])]
        chunks = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
        bar = tqdm(total=len(items), desc=scorer.name, unit="item", disable=not progress, file=sys.stderr)
        with bar:
            bar.update(len(items) - len(readable))
            for indices, images in _decoded_batches(pool, chunks, items, lookahead=max(1, workers)):
                batches.run(indices, images)
                bar.update(len(indices))
    failures = {
        position: batches.reasons[item]
        for position, item in enumerate(inverse.tolist())
        if item in batches.reasons
    }
    seconds = time.perf_counter() - started
    return ItemScores(batches.scores[inverse], failures, len(items), seconds)


def _decoded_batches(
    pool: ThreadPoolExecutor, batches: list[list[int]], items: list[tuple[str, str]], *, lookahead: int
) -> Iterator[tuple[list[int], list[Image.Image | str]]]:
    """(item indices, decoded images or failure reasons) per batch, decoded ``lookahead`` batches ahead."""

    def decode(indices: list[int]) -> tuple[list[int], list[Image.Image | str]]:
        return indices, [_decode(items[i][0]) for i in indices]

    pending: deque = deque()
    for batch in batches:
        pending.append(pool.submit(decode, batch))
        if len(pending) > lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --------------------------------------------------------------------------------------------
# Benchmark tables


@dataclass(frozen=True)
class ScoredTable:
    """A benchmark table's scored rows (with score columns) and its failed rows.

    ``failures`` has the failed rows' position in the input table (``row``), the ``field`` (image
    column) and the ``reason``."""

    scored: pl.DataFrame
    failures: pl.DataFrame
    distinct_items: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.distinct_items / self.seconds if self.seconds > 0 else float("nan")


def score_table(
    scorer: Scorer,
    table: pl.DataFrame,
    kind: BenchmarkKind,
    *,
    batch_size: int = 16,
    sort: bool = True,
    progress: bool = False,
) -> ScoredTable:
    """Score every row of a benchmark ``table`` of ``kind`` (MJ-Bench pairs: both images with the
    caption, into ``score0`` / ``score1``; TIFA ratings and safety rows: ``score``)."""
    if kind not in KIND_COLUMNS:
        raise EvaluationError(f"unknown benchmark kind {kind!r}; expected one of {sorted(KIND_COLUMNS)}")
    image_columns, prompt_column = KIND_COLUMNS[kind]
    missing = [name for name in (*image_columns, prompt_column) if name not in table.columns]
    if missing:
        raise EvaluationError(f"a {kind} benchmark table needs column(s) {', '.join(missing)}")
    null_prompts = table[prompt_column].is_null()
    if null_prompts.any():
        row = int(null_prompts.arg_true()[0])
        raise EvaluationError(f"{prompt_column} is missing in row {row} ({null_prompts.sum()} rows)")
    prompts = table[prompt_column].to_list()
    uris = [uri for column in image_columns for uri in table[column].to_list()]
    result = score_items(
        scorer, uris, prompts * len(image_columns), batch_size=batch_size, sort=sort, progress=progress
    )
    height = table.height
    failed: dict[int, tuple[str, str]] = {}
    for position in sorted(result.failures):
        row, side = position % height, position // height
        failed.setdefault(row, (image_columns[side], result.failures[position]))
    columns = {
        name: result.scores[side * height : (side + 1) * height]
        for side, name in enumerate(SCORE_COLUMNS[kind])
    }
    ok = np.ones(height, dtype=bool)
    ok[list(failed)] = False
    scored = table.with_columns(pl.Series(name, values, dtype=pl.Float64) for name, values in columns.items())
    failures = pl.DataFrame(
        {
            "row": list(failed),
            "field": [field for field, _ in failed.values()],
            "reason": [reason for _, reason in failed.values()],
        },
        schema={"row": pl.Int64, "field": pl.String, "reason": pl.String},
    )
    return ScoredTable(scored.filter(pl.Series(ok)), failures, result.distinct_items, result.seconds)


__all__ = [
    "BenchmarkKind",
    "EvaluationError",
    "GPM_SKIP_REASON",
    "ItemScores",
    "KIND_COLUMNS",
    "LazyRewardScorer",
    "PAIRS",
    "RATINGS",
    "RewardModelScorer",
    "SAFETY",
    "SCORE_COLUMNS",
    "ScoredTable",
    "Scorer",
    "batch_order",
    "image_size",
    "reward_model_scorers",
    "score_items",
    "score_table",
]
