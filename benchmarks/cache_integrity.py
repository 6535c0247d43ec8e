"""Stage-cache integrity cost (issue #11 case 4): what reading back and digesting every table costs.

The stage cache writes each table atomically, reads it back whole (schema and row count must match)
and records its size and content digest (``tasks.cache.write_checked_table``); a cached stage is
reused only when its tables still match the manifest (``tasks.cache.output_matches``: size, footer
row count and digest, the digest memoized by size, mtime and inode). On a synthetic table with the
pairs schema (``data.schemas.PAIRS_SCHEMA``, realistic prompt and URI lengths) this times:

- ``write``: the atomic zstd Parquet write alone (what the cache did before case 4);
- ``checked write``: write + read back + digest (what it does now), and its two added parts apart;
- ``verify (cold memo)``: checking a cached table whose digest is not memoized (first rerun after
  the file was written by another process, or a new memo);
- ``verify (warm memo)``: the usual cached rerun: stat + footer + memo lookup.

    python -m benchmarks.cache_integrity --rows 1000000 2000000 --runs 3 --out cache_integrity.json
    python -m benchmarks.cache_integrity --smoke
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import add_work_and_out, command_line, machine_facts, markdown_table, write_json
from data.schemas import PAIRS_SCHEMA
from tasks.cache import atomic_write_parquet, output_matches, write_checked_table
from tasks.fingerprint import FingerprintMemo, file_digest

WORDS = np.array(
    "a photo of red blue cat dog city night portrait oil painting astronaut riding horse castle "
    "forest sunset watercolor detailed cinematic lighting futuristic robot anime style".split()
)


def pairs_table(rows: int, seed: int = 0) -> pl.DataFrame:
    """``rows`` synthetic preference pairs in the pairs schema: ~80-character prompts, ~60-character
    image URIs, ImageRewardDB-like repetition (a prompt has ~10 images, ~45 pairs)."""
    rng = np.random.default_rng(seed)
    prompts = max(rows // 45, 1)
    vocabulary = [" ".join(rng.choice(WORDS, size=12)) for _ in range(prompts)]
    prompt_index = rng.integers(0, prompts, rows)
    chosen, rejected = rng.integers(0, 10, rows), rng.integers(0, 10, rows)
    prompt_ids = pl.Series([f"p{index:07d}" for index in prompt_index])
    text = pl.Series([vocabulary[index] for index in prompt_index])

    def uris(images: np.ndarray) -> pl.Series:
        return pl.Series(
            [
                f"/data/ImageRewardDB/images/train/train_{p % 32}.zip::{p:07d}_{i}.webp"
                for p, i in zip(prompt_index, images, strict=True)
            ]
        )

    columns = {
        "pair_id": pl.Series([f"r{n:08d}" for n in range(rows)]),
        "kind": pl.Series(["rating"] * rows),
        "prompt_id": prompt_ids,
        "chosen_prompt": text,
        "chosen_image_id": pl.Series([f"{p:07d}_{i}" for p, i in zip(prompt_index, chosen, strict=True)]),
        "chosen_image_uri": uris(chosen),
        "rejected_prompt": text,
        "rejected_image_id": pl.Series([f"{p:07d}_{i}" for p, i in zip(prompt_index, rejected, strict=True)]),
        "rejected_image_uri": uris(rejected),
        "chosen_score": pl.Series(rng.normal(size=rows).astype(np.float32)),
        "rejected_score": pl.Series(rng.normal(size=rows).astype(np.float32)),
    }
    return pl.DataFrame(columns).cast(PAIRS_SCHEMA)


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def one_run(frame: pl.DataFrame, folder: Path) -> dict[str, float]:
    """Seconds of each operation on ``frame``, in a fresh folder and with fresh digest memos."""
    folder.mkdir(parents=True)
    plain, checked = folder / "plain.parquet", folder / "checked.parquet"
    result = {"write": timed(lambda: atomic_write_parquet(frame, plain))}
    result["read back"] = timed(lambda: pl.read_parquet(plain))
    result["digest"] = timed(lambda: file_digest(plain))
    memo = FingerprintMemo(folder / "memo-write.sqlite")
    entry: dict[str, Any] = {}
    result["checked write"] = timed(lambda: entry.update(write_checked_table(frame, checked, memo)))
    cold = FingerprintMemo(folder / "memo-cold.sqlite")
    result["verify (cold memo)"] = timed(lambda: output_matches(entry, cold))
    result["verify (warm memo)"] = timed(lambda: output_matches(entry, cold))
    if not output_matches(entry, cold):
        raise RuntimeError(f"{checked}: the checked table does not match its own manifest entry")
    result["MiB"] = checked.stat().st_size / 2**20
    return result


def benchmark(rows: list[int], runs: int, work: Path) -> list[dict[str, Any]]:
    """Per size: the median of ``runs`` runs of every operation, and the checked write's overhead."""
    report = []
    for count in rows:
        frame = pairs_table(count)
        measured = [one_run(frame, work / f"{count}-{run}") for run in range(runs)]
        medians = {name: statistics.median(run[name] for run in measured) for name in measured[0]}
        overhead = medians["checked write"] / medians["write"] - 1
        report.append({"rows": count, **medians, "overhead": f"{overhead:+.0%}", "runs": runs})
    return report


COLUMNS = [
    "rows",
    "MiB",
    "write",
    "read back",
    "digest",
    "checked write",
    "overhead",
    "verify (cold memo)",
    "verify (warm memo)",
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="10k rows, one run")
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    rows, runs = ([10_000], 1) if args.smoke else (args.rows, args.runs)
    facts = machine_facts()
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work, prefix="cache-integrity-") as scratch:
        report = benchmark(rows, runs, Path(scratch))
    after = machine_facts()
    print(markdown_table(report, COLUMNS))
    print(f"load average (1, 5, 15 min): before {facts.load_average}, after {after.load_average}")
    if args.out:
        payload = {
            "command": command_line("benchmarks.cache_integrity", argv),
            "machine": facts,
            "after": after,
        }
        write_json(args.out, {**payload, "results": report})
    return report


if __name__ == "__main__":
    main()
