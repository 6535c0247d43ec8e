"""``python -m data.demo --out DIR [--prompts N] [--seed S] [--scale imagerewarddb]``."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from .config import DemoCorpusConfig
from .corpus import generate_demo_corpus

SCALES = ("default", "imagerewarddb")


def build_config(scale: str, prompts: int | None, seed: int) -> DemoCorpusConfig:
    """The configuration the command line asks for (``--prompts`` overrides the scale's count)."""
    if scale == "imagerewarddb":
        config = DemoCorpusConfig.imagerewarddb_scale(seed)
        return config if prompts is None else dataclasses.replace(config, n_prompts=prompts)
    return DemoCorpusConfig(seed=seed) if prompts is None else DemoCorpusConfig.with_prompts(prompts, seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m data.demo", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the corpus into")
    parser.add_argument("--prompts", type=int, default=None, help="ImageRewardDB-layout prompts (all splits)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument(
        "--scale", choices=SCALES, default="default", help="preset size (default: ~1k prompts)"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="render processes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args.scale, args.prompts, args.seed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    corpus = generate_demo_corpus(args.out, config, workers=args.workers)
    print(corpus.summary())
    return 0
