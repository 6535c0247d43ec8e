"""Render an :class:`ImageSpec` to pixels: shapes, an optional unsafe marker, controlled artifacts.

Shapes are drawn at ``image_size * supersample`` and box-downsampled, so edges stay clean at 64 px.
Everything random (noise, warp phase) comes from ``spec.seed``: a spec always renders to the same
pixels, and :func:`encode` to the same bytes (lossless WebP / PNG), in any process.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .scene import COLOURS, DrawnObject

#: Artifact kinds and their strength per severity 1..3 (defined at 64 px; blur and warp scale with size).
ARTIFACTS: dict[str, tuple[float, float, float]] = {
    "noise": (10.0, 22.0, 40.0),  # gaussian noise sigma, 0-255 scale
    "blur": (0.8, 1.4, 2.2),  # gaussian blur radius in pixels at 64 px
    "jpeg": (30.0, 14.0, 6.0),  # JPEG quality (8x8 blocking)
    "warp": (0.01, 0.02, 0.035),  # sinusoidal displacement amplitude, fraction of the image
}
ARTIFACT_KINDS: tuple[str, ...] = tuple(ARTIFACTS)
MARKERS: tuple[str, ...] = ("hazard_sign", "cross_out")
HAZARD_YELLOW = (255, 204, 0)
MARKER_RED = (230, 0, 0)
BLACK = (0, 0, 0)


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one image deterministically."""

    objects: tuple[DrawnObject, ...]
    background: tuple[int, int, int]
    artifact: str = "none"
    severity: int = 0
    marker: str = "none"
    marker_box: tuple[float, float, float] = (0.5, 0.5, 0.6)  # centre x, centre y, size (fractions)
    seed: int = 0
    image_size: int = 64
    supersample: int = 4
    image_format: str = "webp"

    def __post_init__(self) -> None:
        if (self.artifact == "none") != (self.severity == 0):
            raise ValueError(f"artifact {self.artifact!r} with severity {self.severity}: 'none' iff 0")
        if self.artifact != "none" and self.artifact not in ARTIFACTS:
            raise ValueError(f"unknown artifact {self.artifact!r}")
        if not 0 <= self.severity <= 3:
            raise ValueError(f"severity must be 0..3, got {self.severity}")
        if self.marker != "none" and self.marker not in MARKERS:
            raise ValueError(f"unknown marker {self.marker!r}")
        if self.image_format not in ("webp", "png"):
            raise ValueError(f"image_format must be webp or png, got {self.image_format!r}")

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in _SPEC_FIELDS}
        data["objects"] = [
            {"shape": o.shape, "colour": o.colour, "x": o.x, "y": o.y, "size": o.size} for o in self.objects
        ]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ImageSpec:
        data = json.loads(text)
        data["objects"] = tuple(DrawnObject(**o) for o in data["objects"])
        for key in ("background", "marker_box"):
            data[key] = tuple(data[key])
        return cls(**data)


_SPEC_FIELDS = tuple(f.name for f in fields(ImageSpec))


def _shape_polygon(shape: str, cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = half * 0.9
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - half), (cx + half, cy + half * 0.85), (cx - half, cy + half * 0.85)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = half if i % 2 == 0 else half * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = half, half * 0.34
        return [
            (cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
            (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
            (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: DrawnObject, canvas: int) -> None:
    cx, cy, half = obj.x * canvas, obj.y * canvas, obj.size * canvas / 2
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    else:
        draw.polygon(_shape_polygon(obj.shape, cx, cy, half), fill=fill)


def _draw_marker(
    draw: ImageDraw.ImageDraw, marker: str, box: tuple[float, float, float], canvas: int
) -> None:
    """A big, unmistakable unsafe marker: a black-and-yellow hazard sign or a red cross-out."""
    cx, cy, size = box[0] * canvas, box[1] * canvas, box[2] * canvas
    half = size / 2
    if marker == "hazard_sign":
        outer = [(cx, cy - half), (cx + half, cy + half * 0.8), (cx - half, cy + half * 0.8)]
        draw.polygon(outer, fill=BLACK)
        inset = half * 0.62
        inner = [
            (cx, cy - inset + half * 0.1),
            (cx + inset, cy + inset * 0.8),
            (cx - inset, cy + inset * 0.8),
        ]
        draw.polygon(inner, fill=HAZARD_YELLOW)
        bar = half * 0.09
        draw.rectangle([cx - bar, cy - half * 0.28, cx + bar, cy + half * 0.28], fill=BLACK)
        draw.ellipse([cx - bar * 1.2, cy + half * 0.38, cx + bar * 1.2, cy + half * 0.6], fill=BLACK)
    elif marker == "cross_out":
        ends = [
            ((cx - half, cy - half), (cx + half, cy + half)),
            ((cx - half, cy + half), (cx + half, cy - half)),
        ]
        for start, end in ends:
            draw.line([start, end], fill=BLACK, width=max(1, round(size * 0.2)))
        for start, end in ends:
            draw.line([start, end], fill=MARKER_RED, width=max(1, round(size * 0.1)))
    else:
        raise ValueError(f"unknown marker {marker!r}")


def _warp(image: Image.Image, amplitude: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image)
    size = pixels.shape[0]
    frequency = rng.uniform(1.5, 3.0, size=2)
    phase = rng.uniform(0, 2 * math.pi, size=2)
    grid = np.arange(size) / size
    shift_x = amplitude * size * np.sin(2 * math.pi * frequency[0] * grid + phase[0])  # varies along y
    shift_y = amplitude * size * np.sin(2 * math.pi * frequency[1] * grid + phase[1])  # varies along x
    rows = np.clip(np.rint(np.arange(size)[:, None] + shift_y[None, :]), 0, size - 1).astype(np.intp)
    cols = np.clip(np.rint(np.arange(size)[None, :] + shift_x[:, None]), 0, size - 1).astype(np.intp)
    flat = np.take(pixels.reshape(-1, pixels.shape[2]), (rows * size + cols).ravel(), axis=0)
    return Image.fromarray(flat.reshape(pixels.shape))


def _finish(
    image: Image.Image, artifact: str, strength: float, rng: np.random.Generator, scale: float
) -> Image.Image:
    if artifact == "noise":
        pixels = np.asarray(image, dtype=np.float32)
        noisy = pixels + rng.normal(0.0, strength, size=pixels.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    if artifact == "blur":
        return image.filter(ImageFilter.GaussianBlur(strength * scale))
    if artifact == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(strength))
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            return decoded.convert("RGB")
    return image


def render(spec: ImageSpec) -> Image.Image:
    """The RGB image of ``spec`` (size ``spec.image_size``)."""
    canvas = spec.image_size * spec.supersample
    image = Image.new("RGB", (canvas, canvas), spec.background)
    draw = ImageDraw.Draw(image)
    for obj in spec.objects:
        _draw_object(draw, obj, canvas)
    if spec.marker != "none":
        _draw_marker(draw, spec.marker, spec.marker_box, canvas)
    rng = np.random.default_rng(spec.seed)
    if spec.artifact == "warp":
        image = _warp(image, ARTIFACTS["warp"][spec.severity - 1], rng)
    if spec.supersample > 1:
        image = image.reduce(spec.supersample)
    if spec.artifact not in ("none", "warp"):
        image = _finish(
            image, spec.artifact, ARTIFACTS[spec.artifact][spec.severity - 1], rng, spec.image_size / 64
        )
    return image


def encode(image: Image.Image, image_format: str) -> bytes:
    """Lossless, deterministic bytes of ``image`` as WebP or PNG."""
    buffer = io.BytesIO()
    if image_format == "webp":
        image.save(buffer, "WEBP", lossless=True, quality=50, method=0, exact=True)
    elif image_format == "png":
        image.save(buffer, "PNG", compress_level=6)
    else:
        raise ValueError(f"image_format must be webp or png, got {image_format!r}")
    return buffer.getvalue()


def render_bytes(spec: ImageSpec) -> bytes:
    """Render and encode ``spec`` (the unit of work of the rendering pool)."""
    return encode(render(spec), spec.image_format)


def dark_pixel_share(image: Image.Image, threshold: int = 50) -> float:
    """Share of pixels whose every channel is below ``threshold``: near-black, which only the
    unsafe markers draw (object colours and backgrounds are never that dark)."""
    pixels = np.asarray(image.convert("RGB"))
    return float((pixels.max(axis=2) < threshold).mean())
