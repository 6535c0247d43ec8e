"""The oracle judge: reads a demo scene's facts back from pixels and scores a prompt's facts.

A demo prompt ("two red circles to the left of a blue square", in any demo template) is parsed back
into its :class:`~data.demo.scene.Prompt`. The image is white-balanced against its background (the
median border colour, so tinted backgrounds of generated images do not shift hues); saturated pixels
are objects, each classified to the palette colour with the nearest hue; connected pixels of one colour
are one object, whose shape is the demo shape whose rendered template (sized to the object's mass,
placed on its centroid) overlaps the object's anti-aliased coverage most.
Objects of one colour (and shape, when the prompt has two groups of that colour) form a drawn group;
drawn groups are matched to the prompt's groups (the best of all assignments) and each fact of
``Prompt.facts()`` is checked like :func:`data.demo.scene.satisfied_facts` does on the drawn truth.
The score is the share of facts that hold.
"""

from __future__ import annotations

import colorsys
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .render import _shape_polygon
from .scene import COLOURS, COUNT_WORDS, PLURALS, RELATION_PHRASES, SHAPES, TEMPLATES, ObjectGroup, Prompt


class PromptParseError(ValueError):
    """A prompt that is not a demo scene description."""


# ------------------------------------------------------------------ prompts
_NUMBER = {"a": 1, "an": 1, **{word: count for count, word in COUNT_WORDS.items()}}
_NOUNS = {shape: shape for shape in SHAPES} | {PLURALS.get(s, s + "s"): s for s in SHAPES}
_GROUP = rf"({'|'.join(_NUMBER)}) ({'|'.join(COLOURS)}) ({'|'.join(sorted(_NOUNS, key=len, reverse=True))})"
_RELATION = {phrase: relation for relation, phrase in RELATION_PHRASES.items()}
_SCENE = re.compile(rf"{_GROUP}(?: ({'|'.join(_RELATION)}) {_GROUP})?")


def _group(number: str, colour: str, noun: str) -> ObjectGroup:
    return ObjectGroup(_NUMBER[number], colour, _NOUNS[noun])


@lru_cache(maxsize=4096)
def parse_prompt(text: str) -> Prompt:
    """The demo :class:`Prompt` a caption describes (any demo template), or :class:`PromptParseError`."""
    cleaned = " ".join(text.strip().split())
    for index, template in enumerate(TEMPLATES):
        before, after = template.split("{}")
        if not (cleaned.startswith(before) and cleaned.endswith(after)):
            continue
        scene = cleaned[len(before) : len(cleaned) - len(after)]
        match = _SCENE.fullmatch(scene)
        if match is None:
            continue
        first = _group(*match.group(1, 2, 3))
        if match.group(4) is None:
            return Prompt((first,), None, index)
        return Prompt((first, _group(*match.group(5, 6, 7))), _RELATION[match.group(4)], index)
    raise PromptParseError(f"not a demo scene prompt: {text!r}")


# ------------------------------------------------------------------ pixels
def _hue(rgb: Sequence[float]) -> float:
    return colorsys.rgb_to_hsv(*(value / 255 for value in rgb))[0]


_PALETTE_HUES = {name: _hue(rgb) for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class OracleConfig:
    """Thresholds of the pixel reader (fractions of the 0..1 range or of the image area)."""

    min_saturation: float = 0.3
    min_value: float = 0.15
    min_area_fraction: float = 0.006
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES


@dataclass(frozen=True)
class Blob:
    """One object read from pixels: its colour, shape, centre (fractions of the image) and area (px)."""

    colour: str
    shape: str
    x: float
    y: float
    area: int


@cache
def _unit_stats(shape: str) -> tuple[float, float, float]:
    """(area / edge², centroid x offset / half, centroid y offset / half) of a drawn shape."""
    mask = np.asarray(_template(shape, 200.0, 200.0, 100.0, 400, 1), dtype=np.float64)
    rows, cols = np.nonzero(mask > 0.5)
    return len(rows) / 200.0**2, (cols.mean() + 0.5 - 200) / 100, (rows.mean() + 0.5 - 200) / 100


def _template(shape: str, cx: float, cy: float, half: float, size: int, supersample: int) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` drawn as the renderer draws it, centre (cx, cy) in pixels."""
    canvas = size * supersample
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    x, y, h = cx * supersample, cy * supersample, half * supersample
    if shape == "circle":
        draw.ellipse([x - h, y - h, x + h, y + h], fill=255)
    else:
        draw.polygon(_shape_polygon(shape, x, y, h), fill=255)
    if supersample > 1:
        image = image.reduce(supersample)
    return np.asarray(image, dtype=np.float64) / 255


def _best_shape(coverage: np.ndarray, shapes: Sequence[str]) -> str:
    """The shape whose rendered template (sized to the blob's mass, placed on its centroid) overlaps
    the blob's soft coverage most (soft IoU)."""
    size = coverage.shape[0]
    mass = coverage.sum()
    rows, cols = np.indices(coverage.shape)
    my, mx = (rows + 0.5).ravel() @ coverage.ravel() / mass, (cols + 0.5).ravel() @ coverage.ravel() / mass
    best, best_iou = shapes[0], -1.0
    for shape in shapes:
        area, dx, dy = _unit_stats(shape)
        half = float(np.sqrt(mass / area)) / 2
        template = _template(shape, mx - dx * half, my - dy * half, half, size, 4)
        iou = np.minimum(coverage, template).sum() / np.maximum(coverage, template).sum()
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def read_blobs(image: Image.Image | np.ndarray, config: OracleConfig = OracleConfig()) -> list[Blob]:
    """The objects in ``image`` (RGB, square), largest first."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    size_y, size_x = pixels.shape[:2]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.maximum(np.median(border, axis=0), 1.0)
    balanced = np.clip(pixels * (background.mean() / background), 0, 255) / 255
    high, low = balanced.max(axis=2), balanced.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-9), 0.0)
    foreground = (saturation >= config.min_saturation) & (high >= config.min_value)
    hues = _pixel_hues(balanced, high, low)
    names = list(config.colours)
    palette = np.array([_PALETTE_HUES[name] for name in names])
    distance = np.abs(hues[..., None] - palette)
    nearest = np.argmin(np.minimum(distance, 1 - distance), axis=-1)
    min_area = max(3, round(config.min_area_fraction * size_x * size_y))
    blobs = []
    for index, name in enumerate(names):
        labels, count = ndimage.label(foreground & (nearest == index))
        for label in range(1, count + 1):
            mask = labels == label
            area = int(mask.sum())
            if area < min_area:
                continue
            # Soft coverage: the blob and its anti-aliased rim, relative to the blob's core saturation.
            region = ndimage.binary_dilation(mask) & (labels == label) | (
                ndimage.binary_dilation(mask) & ~foreground
            )
            reference = np.percentile(saturation[mask], 75)
            coverage = np.where(region, np.clip(saturation / max(reference, 1e-6), 0, 1), 0.0)
            rows, cols = np.nonzero(mask)
            shape = _best_shape(coverage, config.shapes)
            blobs.append(
                Blob(name, shape, float(cols.mean() + 0.5) / size_x, float(rows.mean() + 0.5) / size_y, area)
            )
    return sorted(blobs, key=lambda blob: -blob.area)


def _pixel_hues(rgb: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    span = np.maximum(high - low, 1e-9)
    hue = np.where(
        high == red,
        ((green - blue) / span) % 6,
        np.where(high == green, (blue - red) / span + 2, (red - green) / span + 4),
    )
    return hue / 6


# ------------------------------------------------------------------ facts
@dataclass(frozen=True)
class DrawnCluster:
    """A drawn group read from pixels: its colour, majority shape and objects."""

    colour: str
    shape: str
    blobs: tuple[Blob, ...]

    @property
    def count(self) -> int:
        return len(self.blobs)


def _split_along(blobs: list[Blob], axis: str, min_gap: float) -> list[list[Blob]]:
    """``blobs`` split at the widest gap along ``axis`` when that gap is at least ``min_gap``."""
    ordered = sorted(blobs, key=lambda blob: getattr(blob, axis))
    if len(ordered) < 2:
        return [ordered]
    gaps = [getattr(b, axis) - getattr(a, axis) for a, b in itertools.pairwise(ordered)]
    widest = int(np.argmax(gaps))
    if gaps[widest] < min_gap:
        return [ordered]
    return [ordered[: widest + 1], ordered[widest + 1 :]]


def clusters(prompt: Prompt, blobs: Sequence[Blob], min_gap: float = 0.3) -> list[DrawnCluster]:
    """Blobs grouped by colour and shape; with a relation, a group is also split where its objects
    fall apart along the relation's axis (two groups drawn alike sit in two regions)."""
    grouped: dict[tuple[str, str], list[Blob]] = {}
    for blob in blobs:
        grouped.setdefault((blob.colour, blob.shape), []).append(blob)
    axis = {"left of": "x", "right of": "x", "above": "y", "below": "y"}.get(str(prompt.relation))
    result = []
    for (colour, shape), members in grouped.items():
        parts = _split_along(members, axis, min_gap) if axis else [members]
        result.extend(DrawnCluster(colour, shape, tuple(part)) for part in parts)
    return result


def _relation_holds(relation: str, first: DrawnCluster, second: DrawnCluster) -> bool:
    xs1, xs2 = [b.x for b in first.blobs], [b.x for b in second.blobs]
    ys1, ys2 = [b.y for b in first.blobs], [b.y for b in second.blobs]
    return {
        "left of": max(xs1) < min(xs2),
        "right of": min(xs1) > max(xs2),
        "above": max(ys1) < min(ys2),
        "below": min(ys1) > max(ys2),
    }[relation]


def _facts_for(prompt: Prompt, assigned: Sequence[DrawnCluster | None]) -> list[bool]:
    results = []
    for kind, index in prompt.facts():
        if kind == "relation":
            first, second = assigned
            results.append(
                first is not None
                and second is not None
                and _relation_holds(str(prompt.relation), first, second)
            )
            continue
        drawn, target = assigned[index], prompt.groups[index]
        if drawn is None:
            results.append(False)
        elif kind == "present":
            results.append(True)
        else:
            results.append(getattr(drawn, kind) == getattr(target, kind))
    return results


def judge_facts(prompt: Prompt, blobs: Sequence[Blob]) -> list[bool]:
    """For each fact of ``prompt.facts()``: does the image (its blobs) satisfy it? The drawn groups are
    matched to the prompt's groups by the assignment that satisfies most facts."""
    options: list[DrawnCluster | None] = [*clusters(prompt, blobs), None]
    best: list[bool] | None = None
    for assigned in itertools.product(options, repeat=len(prompt.groups)):
        chosen = [cluster for cluster in assigned if cluster is not None]
        if len(chosen) != len({id(cluster) for cluster in chosen}):
            continue
        facts = _facts_for(prompt, assigned)
        if best is None or sum(facts) > sum(best):
            best = facts
    assert best is not None
    return best


class OracleJudge:
    """Scores (image, prompt) pairs by the share of the prompt's facts read from the image; a prompt
    that is not a demo scene scores NaN. Images: PIL images or a float tensor (N, 3, H, W) in [0, 1]."""

    name = "oracle"

    def __init__(self, config: OracleConfig = OracleConfig()) -> None:
        self.config = config

    def facts(self, image: Image.Image | np.ndarray, prompt: str) -> list[bool]:
        return judge_facts(parse_prompt(prompt), read_blobs(image, self.config))

    def __call__(self, images, prompts: Sequence[str]) -> np.ndarray:
        arrays = _as_arrays(images)
        if len(arrays) != len(prompts):
            raise ValueError(f"oracle: got {len(arrays)} images but {len(prompts)} prompts")
        scores = []
        for array, prompt in zip(arrays, prompts, strict=True):
            try:
                facts = self.facts(array, prompt)
            except PromptParseError:
                scores.append(float("nan"))
                continue
            scores.append(sum(facts) / len(facts))
        return np.asarray(scores, dtype=np.float64)


def _as_arrays(images) -> list[np.ndarray]:
    if hasattr(images, "detach"):  # a torch tensor (N, 3, H, W) in [0, 1]
        pixels = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return list(pixels)
    return [np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image for image in images]
