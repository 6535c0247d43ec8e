"""``llava-reward``: score, compare and rank images with trained perspectives, or run a training job.

Every scoring command prints JSON lines on stdout::

    llava-reward score   --model DIR [--model DIR ...] --prompt "two red circles" IMG [IMG ...]
    llava-reward compare --model DIR --prompt "two red circles" IMG_A IMG_B
    llava-reward rank    --model DIR --prompt "two red circles" IMG [IMG ...]
    llava-reward train   --job job.json --output DIR [--resume [CHECKPOINT]]
    llava-reward import-checkpoint CKPT_DIR --base BASE_DIR --out OUT_DIR [--num-crops N|base]

Images are paths or image URIs (``archive.zip::member``, ``shard.parquet::column[row]``). With several
``--model`` folders (perspectives on one base model) each command runs for every perspective unless
``--perspective`` picks some. ``train`` runs a :class:`reward.training.TrainingJob` JSON file; under
``accelerate launch -m reward.cli train ...`` it trains on several GPUs. ``import-checkpoint`` converts a
checkpoint published by the LLaVA-Reward authors into a model folder that the other commands read.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from reward.backbones.templates import PAPER_NUM_CROPS
from reward.checkpoint import CheckpointError
from reward.config import ConfigError

PROGRAM = "llava-reward"


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help=(
            "a trained perspective folder, or a registry perspective folder (its champion:"
            " artifacts/registry/<perspective>); repeat for several perspectives on one base model"
        ),
    )
    parser.add_argument(
        "--perspective",
        action="append",
        metavar="NAME",
        help="use only this perspective (repeatable); default: every loaded one",
    )
    parser.add_argument("--prompt", required=True, help="the text prompt the images were generated for")
    parser.add_argument("--backbone", help="another location of the base model (overrides the saved one)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="base model dtype (default: as saved)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward (default 16)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow modelling code shipped with the base model (e.g. Phi-3.5-vision); a model folder's "
        "saved config never turns it on. Only for folders and base models you trust",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="LLaVA-Reward reward models: score, compare, rank, train."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="reward of each image for the prompt (JSON line per image)")
    _add_model_options(score)
    score.add_argument("images", nargs="+", metavar="IMG")

    compare = commands.add_parser("compare", help="P(IMG_A preferred to IMG_B) for the prompt")
    _add_model_options(compare)
    compare.add_argument("--prompt-b", help="the prompt paired with IMG_B (default: --prompt)")
    compare.add_argument("images", nargs=2, metavar="IMG")

    rank = commands.add_parser("rank", help="the images best first (JSON line per image)")
    _add_model_options(rank)
    rank.add_argument("images", nargs="+", metavar="IMG")

    train = commands.add_parser("train", help="run a training job (JSON) and save the perspective folder")
    train.add_argument("--job", required=True, help="TrainingJob JSON file")
    train.add_argument("--output", required=True, help="folder for the trained perspective")
    train.add_argument(
        "--checkpoint-dir", help="folder for resumable checkpoints (default OUTPUT/checkpoints)"
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the latest checkpoint when given alone",
    )

    imported = commands.add_parser(
        "import-checkpoint",
        help="convert a published LLaVA-Reward checkpoint into a model folder (then: score --model OUT_DIR)",
    )
    imported.add_argument(
        "checkpoint", metavar="CKPT_DIR", help="the published folder (reward_config.yaml, ...)"
    )
    imported.add_argument("--base", required=True, help="the Phi-3.5-vision base model folder or hub id")
    imported.add_argument("--out", required=True, help="the model folder to write")
    imported.add_argument("--perspective", help="perspective name (default: the checkpoint folder's name)")
    imported.add_argument(
        "--num-crops",
        default=str(PAPER_NUM_CROPS),
        metavar="N|base",
        help=f"HD crops per image: {PAPER_NUM_CROPS} (default) scores as the paper's loader does; "
        "'base' takes the base folder's preprocessor_config.json",
    )
    imported.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="base model dtype recorded for scoring (default: as stored)",
    )
    imported.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    return parser


def _num_crops(value: str) -> int | None:
    if value == "base":
        return None
    try:
        crops = int(value)
    except ValueError:
        crops = 0
    if crops < 1:
        raise ConfigError(f"--num-crops must be a positive integer or 'base', got {value!r}")
    return crops


def _run_import(args: argparse.Namespace, out: TextIO) -> None:
    from reward.checkpoint import read_reward_config
    from reward.import_checkpoint import import_checkpoint

    folder = import_checkpoint(
        args.checkpoint,
        args.base,
        args.out,
        perspective=args.perspective,
        num_crops=_num_crops(args.num_crops),
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    config = read_reward_config(folder)
    _emit(
        {
            "imported": args.checkpoint,
            "model": str(folder),
            "perspective": config.perspective,
            "base": config.backbone.name_or_path,
            "head": config.head.kind,
            "loss": config.loss.kind,
            "temperature": config.loss.temperature,
            "num_crops": config.backbone.num_crops,
        },
        out,
    )


def _emit(record: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))


def _check_prompts(args: argparse.Namespace) -> None:
    """An empty or blank prompt scores nothing meaningful: refuse it (``--prompt``, ``--prompt-b``)."""
    from reward.scoring import ScoringError

    for option, value in (("--prompt", args.prompt), ("--prompt-b", getattr(args, "prompt_b", None))):
        if value is not None and not value.strip():
            raise ScoringError(f"{option} is empty: give the text prompt the images were generated for")


def _load_images(images: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``({path: RGB image}, {path: error})``: each image decoded on its own, so one unreadable file
    does not stop the others from being scored."""
    from reward.scoring import ScoringError, as_image

    loaded: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for image in images:
        try:
            loaded[image] = as_image(image)
        except ScoringError as error:
            failed[image] = str(error)
    return loaded, failed


def _run_scoring(args: argparse.Namespace, out: TextIO) -> int:
    """Run a scoring command; returns 2 when some images could not be scored (``score`` reports each
    one in its JSON line, with ``error``, and scores the others), else 0."""
    from transformers.utils import logging as hf_logging

    from reward.scoring import RewardScorer, describe

    _check_prompts(args)
    hf_logging.disable_progress_bar()
    scorer = RewardScorer.from_pretrained(
        args.model,
        backbone=args.backbone,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        trust_remote_code=args.trust_remote_code,
    )
    loaded, failed = _load_images(args.images) if args.command == "score" else ({}, {})
    for error in failed.values():
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
    for perspective in args.perspective or scorer.perspectives:
        config = scorer.config(perspective)
        if args.command == "score":
            good = [image for image in args.images if image in loaded]
            rewards = {}
            if good:
                scored = scorer.score([loaded[image] for image in good], args.prompt, perspective=perspective)
                rewards = dict(zip(good, scored, strict=True))
            for image in args.images:
                record: dict[str, Any] = {
                    "perspective": perspective,
                    "image": describe(image),
                    "prompt": args.prompt,
                }
                if image in failed:
                    record["error"] = failed[image]
                    _emit(record, out)
                    continue
                reward = rewards[image]
                if config.head.gpm_dim is None:
                    record["score"] = float(reward)
                    if config.loss.kind == "ce":
                        record["probability"] = _sigmoid(float(reward))  # P(label 1), e.g. P(safe)
                else:
                    record["embedding"] = [float(value) for value in reward]
                _emit(record, out)
        elif args.command == "compare":
            image_a, image_b = args.images
            probability = scorer.compare(
                args.prompt, image_a, image_b, prompt_b=args.prompt_b, perspective=perspective
            )
            _emit(
                {
                    "perspective": perspective,
                    "prompt": args.prompt,
                    "image_a": image_a,
                    "image_b": image_b,
                    "p_a_over_b": probability,
                },
                out,
            )
        else:
            for ranked in scorer.rank(args.prompt, args.images, perspective=perspective):
                _emit(
                    {
                        "perspective": perspective,
                        "rank": ranked.rank,
                        "image": ranked.image,
                        "score": ranked.score,
                        "win_rate": ranked.win_rate,
                    },
                    out,
                )
    return 2 if failed else 0


def _run_training(args: argparse.Namespace, out: TextIO) -> None:
    from reward.training import TrainingJob, train_reward_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    job = TrainingJob.from_json(args.job)
    result = train_reward_model(
        job, args.output, checkpoint_dir=args.checkpoint_dir, resume_from_checkpoint=args.resume
    )
    _emit(result.to_dict(), out)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, or some images of ``score``
    could not be read: their JSON lines carry ``error`` and the other images are scored)."""
    from data.images import ImageError
    from reward.backbones import BackboneError
    from reward.data import RewardDataError
    from reward.scoring import ScoringError

    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        if args.command == "train":
            _run_training(args, out)
        elif args.command == "import-checkpoint":
            _run_import(args, out)
        else:
            if args.batch_size < 1:
                raise ScoringError(f"--batch-size must be >= 1, got {args.batch_size}")
            return _run_scoring(args, out)
    except (ScoringError, CheckpointError, ConfigError, RewardDataError, ImageError, BackboneError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
