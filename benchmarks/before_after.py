"""Before / after the performance changes, in the same process: each changed function of a baseline
commit (loaded from ``git show <commit>:<file>``, read-only) against the working tree's, alternating
runs, medians and the ratio.

Compared on a rendered corpus (train split):

- ``image_problems`` (header checks of every image; the baseline with its own ``data.images``),
- ``open_image`` (full decode, what the embed stage does per image),
- ``embed_images`` (the embed stage's decode + preprocess + forward; the baseline with its own
  ``data.images``; embeddings checked bitwise equal),
- ``nearest_within`` (dedup: every prompt against the benchmark captions),
- ``mine_negatives`` (FAISS hard negatives on the embed stage's output),
- ``path_fingerprint`` (hashing the dataset folder with an empty memo, then with the memo filled).

    python -m benchmarks.before_after --corpus /tmp/bench/irdb --baseline 142ced4 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import (
    add_work_and_out,
    command_line,
    machine_facts,
    markdown_table,
    measure,
    ratio,
    write_json,
)
from benchmarks.data_pipeline import PipelineInputs
from benchmarks.negatives_index import prepare

REPOSITORY = Path(__file__).resolve().parents[1]


def baseline_module(
    commit: str, path: str, name: str, replace: dict[str, str] | None = None
) -> types.ModuleType:
    """The module at ``path`` as of ``commit``, imported under ``name`` (``replace`` rewrites its
    source first, e.g. to point an import at another baseline module)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPOSITORY, check=True, capture_output=True, text=True
    ).stdout
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = f"<{commit}:{path}>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own file at a commit
    return module


def alternate(before: Callable[[], Any], after: Callable[[], Any], runs: int) -> dict[str, Any]:
    """Median seconds of ``before`` and ``after`` over ``runs`` alternating calls each."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    loads = []
    for _ in range(runs):
        for label, function in (("before", before), ("after", after)):
            _, measurement = measure(function)
            times[label].append(measurement.seconds)
            loads.append(measurement.load_1min)
    before_s, after_s = statistics.median(times["before"]), statistics.median(times["after"])
    return {
        "before_seconds": before_s,
        "after_seconds": after_s,
        "speedup": ratio(before_s, after_s),
        "runs": times,
        "load": round(statistics.median(loads), 2),
    }


def compare(corpus: Path, commit: str, *, runs: int, work: Path) -> list[dict[str, Any]]:
    import data.images
    import data.validate
    import tasks.dedup
    import tasks.embed
    import tasks.fingerprint
    import tasks.negatives

    old_images = baseline_module(commit, "data/images.py", "baseline_images")
    old_validate = baseline_module(
        commit,
        "data/validate.py",
        "baseline_validate",
        {"from data.images import": "from baseline_images import"},
    )
    old_embed = baseline_module(
        commit, "tasks/embed.py", "baseline_embed", {"from data.images import": "from baseline_images import"}
    )
    old_dedup = baseline_module(commit, "tasks/dedup.py", "baseline_dedup")
    old_negatives = baseline_module(commit, "tasks/negatives.py", "baseline_negatives")
    old_fingerprint = baseline_module(commit, "tasks/fingerprint.py", "baseline_fingerprint")

    root = Path(tempfile.mkdtemp(prefix="before-after-", dir=work))
    inputs = PipelineInputs(corpus / "imagerewarddb", corpus / "mjbench")
    scored_path, images_path, texts_path = prepare(inputs, _clip(), root)
    scored = pl.read_parquet(scored_path)
    uris = scored["image_uri"].to_list()
    sample = uris[:: max(1, len(uris) // 4096)]
    prompts = [
        tasks.dedup.normalize_prompt(text)
        for text in scored.unique("prompt_id", keep="first", maintain_order=True)["prompt"].to_list()
    ]
    captions = pl.read_parquet(
        corpus / "mjbench" / "data" / "alignment-00000-of-00001.parquet", columns=["caption"]
    )
    choices = sorted({tasks.dedup.normalize_prompt(text) for text in captions["caption"].to_list()})
    images, texts = pl.read_parquet(images_path), pl.read_parquet(texts_path)
    encoder = tasks.embed.load_clip(_clip())
    old_vectors, _ = old_embed.embed_images(encoder, sample, batch_size=256)
    if not np.array_equal(old_vectors, tasks.embed.embed_images(encoder, sample, batch_size=256)[0]):
        raise AssertionError("embed_images: embeddings differ from the baseline")
    dataset = corpus / "imagerewarddb"

    def fresh_memo(module: types.ModuleType) -> Callable[[], Any]:
        return lambda: module.path_fingerprint(
            dataset, module.FingerprintMemo(Path(tempfile.mkdtemp(dir=root)) / "memo.sqlite")
        )

    old_memo = old_fingerprint.FingerprintMemo(root / "old-memo.sqlite")
    new_memo = tasks.fingerprint.FingerprintMemo(root / "new-memo.sqlite")
    old_fingerprint.path_fingerprint(dataset, old_memo)
    tasks.fingerprint.path_fingerprint(dataset, new_memo)

    cases: list[tuple[str, str, Callable[[], Any], Callable[[], Any]]] = [
        (
            "image_problems (header)",
            f"{len(set(uris))} images",
            lambda: _cold(old_images, lambda: old_validate.image_problems(uris, "header")),
            lambda: _cold(data.images, lambda: data.validate.image_problems(uris, "header")),
        ),
        (
            "open_image (decode)",
            f"{len(sample)} images",
            lambda: [old_images.open_image(uri) for uri in sample],
            lambda: [data.images.open_image(uri) for uri in sample],
        ),
        (
            "embed_images (decode + forward)",
            f"{len(sample)} images",
            lambda: old_embed.embed_images(encoder, sample, batch_size=256),
            lambda: tasks.embed.embed_images(encoder, sample, batch_size=256),
        ),
        (
            "nearest_within (dedup)",
            f"{len(prompts)} prompts x {len(choices)} captions",
            lambda: old_dedup.nearest_within(prompts, choices, cutoff=tasks.dedup.DEFAULT_THRESHOLD),
            lambda: tasks.dedup.nearest_within(prompts, choices, cutoff=tasks.dedup.DEFAULT_THRESHOLD),
        ),
        (
            "mine_negatives (flat)",
            f"{images.height} images",
            lambda: old_negatives.mine_negatives(scored, images, texts),
            lambda: tasks.negatives.mine_negatives(scored, images, texts),
        ),
        (
            "path_fingerprint (no memo)",
            "dataset folder",
            fresh_memo(old_fingerprint),
            fresh_memo(tasks.fingerprint),
        ),
        (
            "path_fingerprint (memo)",
            "dataset folder",
            lambda: old_fingerprint.path_fingerprint(dataset, old_memo),
            lambda: tasks.fingerprint.path_fingerprint(dataset, new_memo),
        ),
    ]
    _check_same_results(old_dedup, old_negatives, prompts, choices, scored, images, texts)
    rows = []
    for name, size, before, after in cases:
        row = {"function": name, "size": size, **alternate(before, after, runs)}
        print(
            markdown_table([row], ["function", "size", "before_seconds", "after_seconds", "speedup", "load"])
        )
        rows.append(row)
    return rows


def _cold(images_module: types.ModuleType, function: Callable[[], Any]) -> Any:
    """Run ``function`` with the image module's archive caches emptied first (as in a fresh stage)."""
    images_module.clear_caches()
    return function()


def _check_same_results(old_dedup, old_negatives, prompts, choices, scored, images, texts) -> None:  # noqa: ANN001
    """The changed functions return what the baseline returned on this data."""
    import tasks.dedup
    import tasks.negatives

    before = old_dedup.nearest_within(prompts, choices, cutoff=0.1)
    after = tasks.dedup.nearest_within(prompts, choices, cutoff=0.1)
    if not ((before.index == after.index).all() and (before.distance == after.distance).all()):
        raise AssertionError("nearest_within: results differ from the baseline")
    old_pairs, old_rejects, _ = old_negatives.mine_negatives(scored, images, texts)
    new_pairs, new_rejects, _ = tasks.negatives.mine_negatives(scored, images, texts)
    if not (old_pairs.equals(new_pairs) and old_rejects.equals(new_rejects)):
        raise AssertionError("mine_negatives: results differ from the baseline")


def _clip():  # noqa: ANN202
    from tasks.embed import ClipSpec

    return ClipSpec()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--baseline", default="142ced4", help="the commit before the performance changes")
    parser.add_argument("--runs", type=int, default=3)
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = compare(args.corpus, args.baseline, runs=args.runs, work=args.work)
    if args.out:
        command = command_line("benchmarks.before_after", argv)
        write_json(args.out, {"machine": machine_facts(), "command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
