"""Is colour in the tiny backbone's features? A diagnostic for the learnability benchmark.

The learnability run leaves colour (and spatial) mistakes at chance while existence and count are
learned. This script asks whether colour is lost before the language model ever sees it: it draws one
filled shape per image in a random demo colour (the corpus' palette, random size, place and light
background), runs the tiny random-weight LLaVA of :mod:`reward.tiny` once, frozen, and fits a
logistic-regression probe (scikit-learn, 5-fold cross-validation) that predicts the colour from

- the pixels, downsampled to 8×8 (a floor: how easy the task is from raw input),
- ``e_v`` mean-pooled over the visual tokens (after the frozen random vision tower and projector),
- ``e_h``, the EOS hidden state (after the random language model, same prompt for every image).

    python -m benchmarks.colour_probe --images 640
    python -m benchmarks.colour_probe --smoke
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from benchmarks.common import machine_facts, write_json
from data.demo.scene import COLOURS
from reward.backbones import load_backbone
from reward.tiny import build_tiny_backbone

PROMPT = "a picture of a shape"
CANVAS = 256


def draw_shape(colour: str, rng: np.random.Generator) -> Image.Image:
    """One filled circle or square of ``colour`` on a random light background."""
    background = tuple(int(value) for value in rng.integers(200, 250, 3))
    image = Image.new("RGB", (CANVAS, CANVAS), background)
    size = int(rng.integers(40, 90))
    x, y = (int(value) for value in rng.integers(10, CANVAS - size - 10, 2))
    draw = ImageDraw.Draw(image)
    paint = draw.ellipse if rng.integers(0, 2) else draw.rectangle
    paint([x, y, x + size, y + size], fill=COLOURS[colour])
    return image


def features(images: int, batch_size: int, seed: int, work: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pixel, ``e_v`` and ``e_h`` features of ``images`` drawn shapes, and their colour labels."""
    rng = np.random.default_rng(seed)
    backbone = load_backbone(str(build_tiny_backbone(work / "tiny-llava", "llava", seed=seed)))
    names = list(COLOURS)
    pixels, visual, text, labels = [], [], [], []
    with torch.no_grad():
        for start in range(0, images, batch_size):
            colours = [names[int(i)] for i in rng.integers(0, len(names), min(batch_size, images - start))]
            drawn = [draw_shape(colour, rng) for colour in colours]
            output = backbone.encode(drawn, [PROMPT] * len(drawn))
            mask = output.e_v_mask[..., None].to(output.e_v.dtype)
            visual.append(((output.e_v * mask).sum(1) / mask.sum(1)).float().numpy())
            text.append(output.e_h.float().numpy())
            pixels.append(np.stack([np.asarray(image.resize((8, 8))).reshape(-1) / 255.0 for image in drawn]))
            labels += colours
    table = {"pixels 8x8": pixels, "e_v mean-pooled": visual, "e_h (EOS)": text}
    return {name: np.concatenate(parts) for name, parts in table.items()}, np.array(labels)


def probe_accuracy(matrix: np.ndarray, labels: np.ndarray, folds: int) -> float:
    """Mean cross-validated accuracy of a logistic-regression probe on standardized features."""
    standardized = (matrix - matrix.mean(0)) / (matrix.std(0) + 1e-6)
    probe = LogisticRegression(max_iter=3000)
    return float(cross_val_score(probe, standardized, labels, cv=folds).mean())


def run(images: int, *, batch_size: int = 32, seed: int = 0, folds: int = 5) -> dict[str, Any]:
    """Probe accuracies per feature, with chance level."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="colour-probe-") as work:
        table, labels = features(images, batch_size, seed, Path(work))
    return {
        "machine": machine_facts(("torch", "transformers", "scikit-learn")),
        "images": images,
        "colours": len(COLOURS),
        "chance": 1.0 / len(COLOURS),
        "accuracy": {name: probe_accuracy(matrix, labels, folds) for name, matrix in table.items()},
        "dimensions": {name: int(matrix.shape[1]) for name, matrix in table.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="80 images, 2 folds (the test suite runs this)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(80, folds=2, seed=args.seed) if args.smoke else run(args.images, seed=args.seed)
    for name, accuracy in report["accuracy"].items():
        print(f"{name:18s} colour probe accuracy {accuracy:.3f} (chance {report['chance']:.3f})")
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
