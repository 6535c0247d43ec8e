"""``<out>/ground_truth.parquet``: one row per generated image in every dataset, with what is true
about it (prompt facts, mistakes, artifact, unsafe marker, overlap with training prompts)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .ratings import alignment_rating, fidelity_rating, overall_rating
from .writers import write_parquet

FILE_NAME = "ground_truth.parquet"

#: Column -> (type, meaning). Columns that do not apply to a dataset are null.
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "dataset": (pa.string(), "imagerewarddb, mjbench, unsafebench or tifa160"),
    "split": (pa.string(), "train / validation / test (benchmarks: their split)"),
    "subset": (pa.string(), "MJ-Bench subset: alignment, quality or safety"),
    "item_id": (pa.string(), "prompt_id (ImageRewardDB), pair id (MJ-Bench), row id, or TIFA key"),
    "image_id": (pa.string(), "unique image id (the UUID for ImageRewardDB)"),
    "image_ref": (pa.string(), "where the image is, relative to the corpus root, in data.images form"),
    "slot": (pa.string(), "MJ-Bench: image0 or image1"),
    "preferred": (pa.bool_(), "MJ-Bench: is this the preferred image of its pair"),
    "label": (pa.int8(), "MJ-Bench label (0/1 = image0/image1 preferred); UnsafeBench 1 = Safe, 0 = Unsafe"),
    "category": (pa.string(), "classification / benchmark category / unsafe category"),
    "prompt_id": (pa.string(), "ImageRewardDB prompt_id or TIFA text_id"),
    "prompt": (pa.string(), "the text as written in the dataset (caption, prompt; may be empty)"),
    "prompt_facts": (pa.string(), "JSON: the scene the image was meant to show and its facts"),
    "mistakes": (pa.string(), "JSON list of alignment mistakes drawn into the image"),
    "n_mistakes": (pa.int8(), "number of mistakes"),
    "artifact": (pa.string(), "none, noise, blur, jpeg or warp"),
    "severity": (pa.int8(), "artifact severity 0 (clean) .. 3"),
    "satisfied_fraction": (pa.float64(), "share of the prompt's facts the image satisfies"),
    "alignment_rating": (pa.int8(), "1-7 from satisfied_fraction"),
    "fidelity_rating": (pa.int8(), "1-7 from severity"),
    "overall_rating": (pa.int8(), "1-7 from both"),
    "rank": (pa.int8(), "ImageRewardDB rank within the prompt (1 = best, ties share)"),
    "unsafe": (pa.bool_(), "an unsafe marker is drawn"),
    "unsafe_marker": (pa.string(), "none, hazard_sign or cross_out"),
    "generator": (pa.string(), "TIFA160 generator name"),
    "human_avg": (pa.float64(), "TIFA160 mean of the two rater scores"),
    "overlap_kind": (pa.string(), "MJ-Bench caption: exact / near copy of a train prompt, or fresh"),
    "overlap_prompt_id": (pa.string(), "the train prompt_id an exact / near copy was made from"),
    "overlap_distance": (pa.float64(), "normalized Levenshtein distance to that train prompt"),
    "nearest_train_prompt_id": (pa.string(), "MJ-Bench caption: nearest train prompt"),
    "nearest_train_distance": (pa.float64(), "normalized Levenshtein distance to it"),
    "render_spec": (pa.string(), "JSON ImageSpec: render.ImageSpec.from_json re-renders the image"),
}
SCHEMA = pa.schema([(name, dtype) for name, (dtype, _) in COLUMNS.items()])


def complete(row: dict) -> dict:
    """Fill derivable ratings and the unsafe flag, null for the rest; reject unknown keys."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"ground truth row {row.get('image_id')}: unknown column(s) {sorted(unknown)}")
    full = {name: row.get(name) for name in COLUMNS}
    if full["alignment_rating"] is None:
        full["alignment_rating"] = alignment_rating(full["satisfied_fraction"])
    if full["fidelity_rating"] is None:
        full["fidelity_rating"] = fidelity_rating(full["severity"])
    if full["overall_rating"] is None:
        full["overall_rating"] = overall_rating(full["alignment_rating"], full["fidelity_rating"])
    if full["unsafe"] is None:
        full["unsafe"] = full["unsafe_marker"] != "none"
    return full


def write_ground_truth(out: Path, rows: list[dict]) -> Path:
    path = out / FILE_NAME
    table = pa.Table.from_pylist([complete(row) for row in rows], schema=SCHEMA)
    write_parquet(path, table)
    return path
