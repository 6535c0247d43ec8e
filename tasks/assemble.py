"""Assemble stage: union the pair tables, shuffle with a seed, split train / validation.

The split is by prompt (``prompt_id``), so no prompt's images are in both splits, and it is decided by
a seeded hash of the prompt id rather than by position: adding new prompts later never moves an old
prompt to the other split, which keeps validation figures comparable across retraining runs.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

import data.schemas
from data.schemas import PAIRS_SCHEMA, REJECTS_SCHEMA, TRAINING_PAIRS_SCHEMA, TRAINING_UNPAIRED_SCHEMA
from tasks.cache import MAIN, REJECTS, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import stage_task

ASSEMBLE_PAIRS = Stage("assemble_pairs", 1, (sys.modules[__name__], data.schemas))
ASSEMBLE_UNPAIRED = Stage("assemble_unpaired", 1, (sys.modules[__name__], data.schemas))
_BUCKETS = 1_000_000


def split_of(groups: pl.Series, *, seed: int, validation_fraction: float) -> pl.Series:
    """ "validation" for a seeded-hash fraction of the groups, "train" for the rest. BLAKE2b of
    ``seed:group`` is stable across library versions and machines, unlike built-in hashes."""
    unique = groups.unique().to_list()
    cut = int(validation_fraction * _BUCKETS)
    split = {
        group: "validation"
        if int.from_bytes(hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()) % _BUCKETS
        < cut
        else "train"
        for group in unique
    }
    return groups.replace_strict(split, return_dtype=pl.String).alias("split")


def seeded_shuffle(frame: pl.DataFrame, *, order_by: str, seed: int) -> pl.DataFrame:
    """``frame`` in a canonical order (by ``order_by``), then permuted by NumPy's PCG64 with ``seed``:
    the result depends only on the content and the seed, not on the input order."""
    canonical = frame.sort(order_by)
    permutation = np.random.default_rng(seed).permutation(canonical.height)
    return canonical[permutation]


def _check_fraction(validation_fraction: float) -> None:
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")


def assemble_pair_tables(
    tables: Sequence[pl.DataFrame], *, seed: int, validation_fraction: float
) -> pl.DataFrame:
    """All pairs, shuffled with ``seed``, with a ``split`` column."""
    pairs = pl.concat([table.select(list(PAIRS_SCHEMA)).cast(PAIRS_SCHEMA) for table in tables])
    shuffled = seeded_shuffle(pairs, order_by="pair_id", seed=seed)
    split = split_of(shuffled["prompt_id"], seed=seed, validation_fraction=validation_fraction)
    return shuffled.with_columns(split).select(list(TRAINING_PAIRS_SCHEMA))


def unreadable_images(reject_paths: Sequence[str | Path]) -> dict[str, str]:
    """``{image_id: "<stage>: <reason>"}`` of the images that earlier stages rejected as unreadable
    (their rejects rows with field ``image_uri``; ``record_id`` is the image id)."""
    found: dict[str, str] = {}
    for path in reject_paths:
        rejects = pl.read_parquet(path).filter(pl.col("field") == "image_uri")
        for image_id, stage, reason in rejects.select("record_id", "stage", "reason").iter_rows():
            found.setdefault(image_id, f"{stage}: {reason}")
    return found


def drop_unreadable_pairs(
    tables: Sequence[tuple[str, pl.DataFrame]], unreadable: dict[str, str]
) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """The pair tables without the pairs whose chosen or rejected image is in ``unreadable``, and those
    pairs as rejects (source file = the pair table, source row = the pair's row in it)."""
    kept, rejected = [], []
    bad = pl.Series(list(unreadable), dtype=pl.String).implode()
    for path, table in tables:
        numbered = table.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
        hit = pl.col("chosen_image_id").is_in(bad) | pl.col("rejected_image_id").is_in(bad)
        kept.append(numbered.filter(~hit).drop("source_row"))
        for row in numbered.filter(hit).iter_rows(named=True):
            side = "chosen" if row["chosen_image_id"] in unreadable else "rejected"
            image_id = row[f"{side}_image_id"]
            rejected.append(
                {
                    "stage": ASSEMBLE_PAIRS.name,
                    "source_file": str(path),
                    "source_row": row["source_row"],
                    "record_id": row["pair_id"],
                    "field": f"{side}_image_uri",
                    "reason": f"{side} image {image_id} was rejected by {unreadable[image_id]}",
                }
            )
    return kept, pl.DataFrame(rejected, schema=REJECTS_SCHEMA)


def _split_output(assembled: pl.DataFrame, *, rows_in: int, counted_by: str, unit: str) -> StageOutput:
    """Train rows as the main table, validation rows as table ``validation``, with counts per split and
    per value of ``counted_by`` (over both splits)."""
    train = assembled.filter(pl.col("split") == "train")
    validation = assembled.filter(pl.col("split") == "validation")
    counts = {
        str(row[counted_by]): row["len"] for row in assembled.group_by(counted_by).len().iter_rows(named=True)
    }
    return StageOutput(
        tables={MAIN: train, "validation": validation},
        rows_in=rows_in,
        rows_kept=assembled.height,
        stats={
            f"train_{unit}": train.height,
            f"validation_{unit}": validation.height,
            f"by_{counted_by}": counts,
        },
    )


def assemble_pairs(
    pair_paths: Sequence[str | Path],
    *,
    seed: int = 0,
    validation_fraction: float = 0.1,
    image_rejects: Sequence[str | Path] = (),
    root: str | Path | None = None,
) -> StageResult:
    """Stage: the final training pairs; main table = train split, table ``validation`` = the rest.

    ``image_rejects`` are rejects tables of earlier stages (e.g. embed's): a pair whose chosen or
    rejected image one of them rejected as unreadable goes to this stage's rejects, with the reason."""
    _check_fraction(validation_fraction)

    def compute() -> StageOutput:
        tables = [(str(path), pl.read_parquet(path)) for path in pair_paths]
        rows_in = sum(table.height for _, table in tables)
        kept, rejects = drop_unreadable_pairs(tables, unreadable_images(image_rejects))
        assembled = assemble_pair_tables(kept, seed=seed, validation_fraction=validation_fraction)
        output = _split_output(assembled, rows_in=rows_in, counted_by="kind", unit="pairs")
        output.tables[REJECTS] = rejects
        return output

    inputs: dict[str, object] = {"pairs": list(pair_paths)}
    if image_rejects:
        inputs["image_rejects"] = list(image_rejects)
    return run_stage(
        ASSEMBLE_PAIRS,
        params={"seed": seed, "validation_fraction": validation_fraction},
        inputs=inputs,
        compute=compute,
        root=root,
    )


def assemble_unpaired(
    rows_path: str | Path,
    *,
    seed: int = 0,
    validation_fraction: float = 0.1,
    root: str | Path | None = None,
) -> StageResult:
    """Stage: unpaired (prompt, image, label) rows for cross-entropy training, shuffled and split."""
    _check_fraction(validation_fraction)

    def compute() -> StageOutput:
        rows = pl.read_parquet(rows_path)
        shuffled = seeded_shuffle(rows, order_by="item_id", seed=seed)
        split = split_of(shuffled["item_id"], seed=seed, validation_fraction=validation_fraction)
        assembled = (
            shuffled.with_columns(split).select(list(TRAINING_UNPAIRED_SCHEMA)).cast(TRAINING_UNPAIRED_SCHEMA)
        )
        return _split_output(assembled, rows_in=rows.height, counted_by="label", unit="rows")

    return run_stage(
        ASSEMBLE_UNPAIRED,
        params={"seed": seed, "validation_fraction": validation_fraction},
        inputs={"rows": rows_path},
        compute=compute,
        root=root,
    )


assemble_pairs_task = stage_task(assemble_pairs, name="assemble-pairs")
assemble_unpaired_task = stage_task(assemble_unpaired, name="assemble-unpaired")
