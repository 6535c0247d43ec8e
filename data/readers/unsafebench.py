"""UnsafeBench readers: the HF Parquet shards and the LLaVA-Reward training JSON.

Both produce SAFETY_SCHEMA rows with the LLaVA-Reward label convention: 1 = ``Safe``, 0 = ``Unsafe``.

- HF shards ``data/{train,test}-*.parquet``: ``image`` (HF Image struct), ``safety_label``,
  ``category``, ``source``, ``text``; ``prompt`` = ``text`` ("" when null), split from the file name,
  ``image_uri`` points into the shard, ``item_id`` = ``<shard stem>-<row>``.
- JSON ``[{safety_label, category, source, path, label, prompt}]``: ``path`` is an absolute path on
  the authors' machine, so the image is ``<image_root>/<basename(path)>`` when ``image_root`` is
  given (else ``path``, relative to the JSON's folder); ``item_id`` = ``<json stem>-<image stem>``.
  An image outside ``image_root`` (default: the JSON's folder), symlinks resolved, rejects the row,
  and so does a ``label`` that disagrees with ``safety_label`` (field ``label``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from data.readers.common import (
    FieldProblem,
    Parsed,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_int,
    as_text,
    basename,
    concat_results,
    existing_path,
    leading_token,
    load_json_records,
    parquet_cell_uris,
    parquet_schema,
    parse_choice,
    parse_fields,
    parse_text,
    read_parquet_columns,
    reject_outside_roots,
    require_columns,
    show_value,
    split_from_name,
    split_rejects,
)
from data.schemas import SAFETY_SCHEMA, conform

#: ``safety_label`` value -> ``label`` (LLaVA-Reward convention).
SAFETY_LABELS = {"Safe": 1, "Unsafe": 0}
HF_COLUMNS = ("image", "safety_label", "category", "source", "text")
JSON_FIELDS = ("safety_label", "category", "source", "path", "label", "prompt")


def read_unsafebench(
    path: str | Path, *, split: str | None = None, image_root: str | Path | None = None
) -> ReadResult:
    """Read UnsafeBench from a ``.json`` file, a ``.parquet`` shard or a folder of shards.

    For shards ``split`` keeps only that split's files; for the JSON it names the split (default:
    ``train``/``test``/``validation`` found in the file name, else null). ``image_root`` applies to
    the JSON only.
    """
    source = existing_path(path)
    if source.suffix == ".json":
        return read_unsafebench_json(source, split=split, image_root=image_root)
    if source.suffix == ".parquet" or source.is_dir():
        return read_unsafebench_parquet(source, split=split)
    raise ReaderError(f"{source}: not an UnsafeBench .json, .parquet or folder of shards")


# --------------------------------------------------------------------------------------------
# HF Parquet shards


def read_unsafebench_parquet(path: str | Path, *, split: str | None = None) -> ReadResult:
    """Read the HF shards (``path`` a shard or a folder searched recursively)."""
    source = existing_path(path)
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    if split is not None:
        files = [file for file in files if leading_token(file) == split]
    if not files:
        raise ReaderError(
            f"{source}: no UnsafeBench Parquet shards" + (f" of split {split!r}" if split else "")
        )
    return concat_results((_read_shard(file) for file in files), SAFETY_SCHEMA)


def _read_shard(file: Path) -> ReadResult:
    require_columns(file, parquet_schema(file), HF_COLUMNS)
    frame = read_parquet_columns(file, ["safety_label", "category", "source", "text"])
    frame = frame.with_columns(item_id=pl.lit(f"{file.stem}-") + pl.col("source_row").cast(pl.String))
    fields = {
        # the label is derived from safety_label: a bad value is reported under the input's name
        "safety_label": Parsed(
            pl.col("safety_label").cast(pl.String), parse_choice(frame, "safety_label", SAFETY_LABELS).problem
        ),
        "category": parse_text(frame, "category", required=False),
        "source": parse_text(frame, "source", required=False),
        "text": parse_text(frame, "text", required=False, null_as=""),
    }
    kept, rejects = split_rejects(frame, fields, source_file=file, record_id=pl.col("item_id"))
    table = kept.with_columns(
        label=pl.col("safety_label").replace_strict(SAFETY_LABELS, return_dtype=pl.Int8),
        prompt=pl.col("text"),
        image_uri=parquet_cell_uris(file, "image", kept["source_row"]),
        split=pl.lit(leading_token(file)),
        source_file=pl.lit(str(file)),
    )
    return ReadResult(conform(table, SAFETY_SCHEMA, where=str(file)), rejects)


# --------------------------------------------------------------------------------------------
# LLaVA-Reward training JSON


def read_unsafebench_json(
    path: str | Path, *, split: str | None = None, image_root: str | Path | None = None
) -> ReadResult:
    """Read ``Unsafebench_train.json``-style records (see the module docstring)."""
    file = existing_path(path)
    items = load_json_records(file)
    root = Path(image_root).expanduser().resolve() if image_root is not None else None
    split_name = split if split is not None else split_from_name(file)
    log = RejectLog(file)
    parsers = {
        "safety_label": _safety_label,
        "category": lambda value: as_text(value, required=False),
        "source": lambda value: as_text(value, required=False),
        "path": _image_path,
        "label": _label,
        "prompt": lambda value: as_text(value, required=False, null_as=""),
    }
    rows: list[tuple[Any, ...]] = []
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            log.not_an_object(row, item)
            continue
        values, problems = parse_fields(item, parsers)
        item_id = f"{file.stem}-{basename(values['path']).rsplit('.', 1)[0]}" if "path" in values else None
        label, safety = values.get("label"), values.get("safety_label")
        if label is not None and safety is not None and SAFETY_LABELS[safety] != label:
            problems["label"] = (
                f"{label} disagrees with safety_label {safety!r} (expected {SAFETY_LABELS[safety]})"
            )
        if problems:
            log.add(row, item_id, problems)
            continue
        image_path = values["path"]
        image_uri = str(root / basename(image_path)) if root is not None else str(file.parent / image_path)
        rows.append(
            (
                item_id,
                values["prompt"],
                image_uri,
                label,
                safety,
                values["category"],
                values["source"],
                split_name,
                str(file),
                row,
            )
        )
    table = pl.DataFrame(rows, schema=SAFETY_SCHEMA, orient="row")
    result = ReadResult(conform(table, SAFETY_SCHEMA, where=str(file)), log.frame())
    guard = PathGuard(root if root is not None else file.parent)
    return reject_outside_roots(result, guard, {"image_uri": "path"}, record_id="item_id")


def _safety_label(value: Any) -> str:
    text = as_text(value)
    if text not in SAFETY_LABELS:
        raise FieldProblem(f"not one of 'Safe', 'Unsafe': {show_value(value)}")
    return text


def _label(value: Any) -> int:
    label = as_int(value)
    if label not in (0, 1):
        raise FieldProblem(f"not 0 or 1: {show_value(value)}")
    return label


def _image_path(value: Any) -> str:
    text = as_text(value)
    if not basename(text):
        raise FieldProblem(f"no file name in path: {show_value(value)}")
    return text
