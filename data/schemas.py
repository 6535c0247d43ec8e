"""Normalized table schemas shared by the readers, the stages and the model library.

Every reader turns a published dataset layout into one of these tables; every stage reads and writes
them. Columns are documented in ``COLUMN_DOCS`` (rendered in README / docs/DATA.md).

Image references (``*_uri`` columns) are strings that :func:`data.images.open_image` resolves:

- ``/abs/or/relative/path.webp``            a file on disk
- ``/path/archive.zip::member/name.webp``   a member of a zip archive
- ``/path/shard.parquet::image[12]``        the image struct (HF ``Image`` feature) in column
                                            ``image`` of row 12 of a Parquet file
"""

from __future__ import annotations

import polars as pl

#: Source provenance columns carried by every normalized table: the file a row came from and its
#: 0-based row index there, so every error and reject can name file and row.
PROVENANCE: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}

#: One row per generated image with its human ratings (ImageRewardDB, demo corpus).
#: Ratings are Likert scores (ImageRewardDB: 1-7, higher is better); ``rank`` is the image's rank among
#: the prompt's images (lower is better, ties share a rank). Missing ratings are null.
RATINGS_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.String(),
    "prompt_id": pl.String(),
    "prompt": pl.String(),
    "image_uri": pl.String(),
    "classification": pl.String(),
    "split": pl.String(),
    "rank": pl.Int32(),
    "overall_rating": pl.Float32(),
    "image_text_alignment_rating": pl.Float32(),
    "fidelity_rating": pl.Float32(),
    **PROVENANCE,
}

#: One row per benchmark comparison (MJ-Bench). ``label`` = index of the preferred image (0 or 1);
#: null means the humans tied. ``subset`` is alignment / quality / safety / bias; ``category`` the
#: finer group (e.g. ``actions``, ``human``, ``blur``).
BENCHMARK_PAIRS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "subset": pl.String(),
    "category": pl.String(),
    "source": pl.String(),
    "caption": pl.String(),
    "image0_uri": pl.String(),
    "image1_uri": pl.String(),
    "label": pl.Int8(),
    **PROVENANCE,
}

#: One row per unpaired image with a binary safety label (UnsafeBench, SMID, Unsafe Diffusion).
#: ``label`` follows the LLaVA-Reward convention: 1 = safe, 0 = unsafe.
SAFETY_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "prompt": pl.String(),
    "image_uri": pl.String(),
    "label": pl.Int8(),
    "safety_label": pl.String(),
    "category": pl.String(),
    "source": pl.String(),
    "split": pl.String(),
    **PROVENANCE,
}

#: One row per rated image of a TIFA160-style benchmark. ``human_scores``: the annotators' 1-5 Likert
#: scores; ``human_avg``: their mean (both null for a prompt listing without scores).
TIFA_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "text_id": pl.String(),
    "model": pl.String(),
    "prompt": pl.String(),
    "image_uri": pl.String(),
    "human_avg": pl.Float64(),
    "human_scores": pl.List(pl.Int8()),
    **PROVENANCE,
}

#: A rejected input row: which stage rejected it, where it came from, which field and why.
REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "record_id": pl.String(),
    "field": pl.String(),
    "reason": pl.String(),
}

#: One training comparison. A pair carries a chosen and a rejected *prompt* as well as image: hard
#: negatives change the prompt (``negative_text``) or the image (``negative_image``); rating pairs
#: (``rating``) keep the prompt. Scores are the perspective's rating (higher is better) where known.
PAIRS_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String(),
    "kind": pl.String(),
    "prompt_id": pl.String(),
    "chosen_prompt": pl.String(),
    "chosen_image_id": pl.String(),
    "chosen_image_uri": pl.String(),
    "rejected_prompt": pl.String(),
    "rejected_image_id": pl.String(),
    "rejected_image_uri": pl.String(),
    "chosen_score": pl.Float32(),
    "rejected_score": pl.Float32(),
}

#: Final assembled training data: pairs plus the split they belong to.
TRAINING_PAIRS_SCHEMA: dict[str, pl.DataType] = {**PAIRS_SCHEMA, "split": pl.String()}

#: Final assembled unpaired (safety) data.
TRAINING_UNPAIRED_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "prompt": pl.String(),
    "image_uri": pl.String(),
    "label": pl.Int8(),
    "split": pl.String(),
}


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame with exactly ``schema``'s columns and types."""
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], *, where: str) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema``; raise naming ``where`` and the missing columns."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {', '.join(missing)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


class SchemaError(ValueError):
    """A table does not have the columns or types a stage needs."""


#: Every normalized schema, by the name the docs use.
ALL_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "RATINGS_SCHEMA": RATINGS_SCHEMA,
    "BENCHMARK_PAIRS_SCHEMA": BENCHMARK_PAIRS_SCHEMA,
    "SAFETY_SCHEMA": SAFETY_SCHEMA,
    "TIFA_SCHEMA": TIFA_SCHEMA,
    "REJECTS_SCHEMA": REJECTS_SCHEMA,
    "PAIRS_SCHEMA": PAIRS_SCHEMA,
    "TRAINING_PAIRS_SCHEMA": TRAINING_PAIRS_SCHEMA,
    "TRAINING_UNPAIRED_SCHEMA": TRAINING_UNPAIRED_SCHEMA,
}


def schema_markdown() -> str:
    """The column tables of docs/DATA.md (a test keeps that file in step with this module)."""
    sections = []
    for name, schema in ALL_SCHEMAS.items():
        rows = "\n".join(f"| `{column}` | `{dtype}` |" for column, dtype in schema.items())
        sections.append(f"### `{name}`\n\n| column | polars type |\n|---|---|\n{rows}\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(schema_markdown())
