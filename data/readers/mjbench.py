"""MJ-Bench readers: the HF Parquet release and the pre-release JSON tree of the GitHub repository.

Both produce BENCHMARK_PAIRS_SCHEMA rows (``label`` = index of the preferred image, null = tie).

HF Parquet: files ``{subset}-*.parquet`` or ``{subset}/*.parquet`` with ``caption``, ``image0``,
``image1`` (HF Image structs), ``label`` and optionally ``info`` (a JSON string; its ``category`` and
``source`` keys are used when it parses). Image references point into the Parquet file.

JSON tree (``alignment/benchmark/<category>/*.json``, ``quality/<category>/captions_*.json``, the
same form for ``safety``):

- alignment items ``{id, source, caption, image0, image1, label}``. Each category folder holds
  ``<category>_test.json`` and per-source files (``pap_``, ``imagereward_``, ``hpdv2_`` and
  ``hpdv2_..._v2``). In the copied commit the combined file is exactly the union of the per-source
  files (same caption, images and label; no item in two files), with ids rewritten as
  ``<source>_<id>`` (``hpdv2_new_<id>`` for the ``_v2`` file). :data:`COMBINED` (the default) reads
  the combined files; :data:`BY_SOURCE` the per-source files, whose integer ids get the same
  rewrite, so both selections give the same ``item_id`` values. One comparison can be filed under
  several categories with the same id (in the copied commit: 916 rows, 533 distinct ids), so
  ``item_id`` is ``<subset>-<category>-<id>`` (e.g. ``alignment-actions-pap_0``), unique per row;
  the dataset's id is what follows the category.
- captions items ``{caption, image_0, image_1[, image_2], label_0}``, ``label_0 = 1`` meaning
  ``image_0`` is preferred (normalized label 0). The blur items hold ``sharp_image``,
  ``defocused_blur_image`` and ``motion_blur_image``: every item gives one pair per non-reference
  image (reference first), so an item can give several rows that share ``source_row``; their
  ``item_id`` then ends with the image's variant (``-image_2``, ``-defocused``, ``-motion``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from data.readers.common import (
    MISSING,
    FieldProblem,
    FolderIndex,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_binary_label,
    as_id,
    as_text,
    concat_results,
    existing_path,
    leading_token,
    load_json_records,
    parquet_cell_uris,
    parquet_schema,
    parse_binary_label,
    parse_fields,
    parse_text,
    read_parquet_columns,
    reject_outside_roots,
    require_columns,
    split_rejects,
)
from data.schemas import BENCHMARK_PAIRS_SCHEMA, conform

SUBSETS = ("alignment", "safety", "quality", "bias")
AlignmentFiles = Literal["combined", "by_source", "all"]
COMBINED: AlignmentFiles = "combined"
BY_SOURCE: AlignmentFiles = "by_source"
ALL_FILES: AlignmentFiles = "all"

HF_COLUMNS = ("caption", "image0", "image1", "label")
_PER_SOURCE_NAME = r"(?P<source>.+?)_{category}_test(?P<v2>_v2)?"
_VARIANT_SUFFIXES = ("_blur_image",)


def read_mjbench(
    path: str | Path,
    *,
    subsets: Sequence[str] | None = None,
    image_root: str | Path | None = None,
    alignment_files: AlignmentFiles = COMBINED,
) -> ReadResult:
    """Read MJ-Bench from whatever ``path`` is.

    - a ``.parquet`` file or a folder of them (no JSON): the HF release;
    - a ``.json`` file: one file of the JSON tree (subset from the nearest folder named like a
      subset, category from its folder);
    - a folder: the JSON tree under it (``alignment_files`` picks the alignment files).

    ``subsets`` keeps only those subsets (and names the subset of files whose name does not tell).
    ``image_root`` is an extra folder where JSON-tree images are looked up.
    """
    wanted = _check_subsets(subsets)
    source = existing_path(path)
    if source.suffix == ".parquet" or (
        source.is_dir() and not any(source.rglob("*.json")) and any(source.rglob("*.parquet"))
    ):
        return read_mjbench_parquet(source, subsets=wanted)
    if source.suffix == ".json":
        subset = _subset_of(source, wanted)
        return read_mjbench_json(source, subset=subset, image_root=image_root)
    if source.is_dir():
        files = mjbench_json_files(source, subsets=wanted, alignment_files=alignment_files)
        return concat_results(
            (
                read_mjbench_json(
                    file, subset=_subset_of(file, wanted), image_root=image_root, dataset_root=source
                )
                for file in files
            ),
            BENCHMARK_PAIRS_SCHEMA,
        )
    raise ReaderError(f"{source}: not an MJ-Bench .parquet/.json file or folder")


def benchmark_captions(table: pl.DataFrame) -> pl.Series:
    """The distinct non-null captions of a BENCHMARK_PAIRS table, in first-seen order."""
    return table["caption"].drop_nulls().unique(maintain_order=True)


def _check_subsets(subsets: Sequence[str] | None) -> tuple[str, ...] | None:
    if subsets is None:
        return None
    if isinstance(subsets, str):
        subsets = (subsets,)
    unknown = [name for name in subsets if name not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown MJ-Bench subset(s) {unknown}; expected some of {SUBSETS}")
    return tuple(subsets)


def _subset_of(file: Path, wanted: tuple[str, ...] | None) -> str:
    """The subset named by the file's stem token or nearest folder, else the one ``wanted``."""
    candidates = [leading_token(file), *(parent.name for parent in file.parents)]
    for name in candidates:
        if name in SUBSETS:
            return name
    if wanted is not None and len(wanted) == 1:
        return wanted[0]
    raise ReaderError(
        f"{file}: cannot tell the MJ-Bench subset from the path; pass subsets=[<one of {', '.join(SUBSETS)}>]"
    )


# --------------------------------------------------------------------------------------------
# HF Parquet


def read_mjbench_parquet(path: str | Path, *, subsets: Sequence[str] | None = None) -> ReadResult:
    """Read HF MJ-Bench Parquet files (``path`` a file or a folder searched recursively)."""
    source = existing_path(path)
    wanted = _check_subsets(subsets)
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    chosen = [(file, _subset_of(file, wanted)) for file in files]
    chosen = [(file, subset) for file, subset in chosen if wanted is None or subset in wanted]
    if not chosen:
        raise ReaderError(
            f"{source}: no MJ-Bench Parquet files" + (f" for subsets {list(wanted)}" if wanted else "")
        )
    return concat_results(
        (_read_parquet_file(file, subset) for file, subset in chosen), BENCHMARK_PAIRS_SCHEMA
    )


def _read_parquet_file(file: Path, subset: str) -> ReadResult:
    schema = parquet_schema(file)
    require_columns(file, schema, HF_COLUMNS)
    has_info = "info" in schema.names
    frame = read_parquet_columns(file, ["caption", "label", *(["info"] if has_info else [])])
    item_id = pl.lit(f"{subset}-{file.stem}-") + pl.col("source_row").cast(pl.String)
    frame = frame.with_columns(item_id=item_id)
    fields = {"caption": parse_text(frame, "caption"), "label": parse_binary_label(frame, "label")}
    if has_info:
        fields["info"] = parse_text(frame, "info", required=False)
    kept, rejects = split_rejects(frame, fields, source_file=file, record_id=pl.col("item_id"))
    info = pl.col("info") if has_info else pl.lit(None, dtype=pl.String)
    table = kept.with_columns(
        subset=pl.lit(subset),
        category=info.str.json_path_match("$.category"),
        source=info.str.json_path_match("$.source"),
        image0_uri=parquet_cell_uris(file, "image0", kept["source_row"]),
        image1_uri=parquet_cell_uris(file, "image1", kept["source_row"]),
        source_file=pl.lit(str(file)),
    )
    return ReadResult(conform(table, BENCHMARK_PAIRS_SCHEMA, where=str(file)), rejects)


# --------------------------------------------------------------------------------------------
# Pre-release JSON tree


def mjbench_json_files(
    root: str | Path, *, subsets: Sequence[str] | None = None, alignment_files: AlignmentFiles = COMBINED
) -> list[Path]:
    """The JSON files of an MJ-Bench tree under ``root`` that the selection asks for, sorted.

    Alignment: ``<category>/<category>_test.json`` (:data:`COMBINED`), the per-source files
    (:data:`BY_SOURCE`) or both (:data:`ALL_FILES`, which double-counts every item). Other subsets:
    every ``captions_*.json``.
    """
    if alignment_files not in (COMBINED, BY_SOURCE, ALL_FILES):
        raise ValueError(f"alignment_files must be one of {COMBINED!r}, {BY_SOURCE!r}, {ALL_FILES!r}")
    base = existing_path(root)
    wanted = _check_subsets(subsets)
    chosen = []
    for file in sorted(base.rglob("*.json")):
        subset = next((parent.name for parent in file.parents if parent.name in SUBSETS), None)
        if subset is None or (wanted is not None and subset not in wanted):
            continue
        if subset == "alignment":
            combined = file.stem == f"{file.parent.name}_test"
            if alignment_files == ALL_FILES or combined == (alignment_files == COMBINED):
                chosen.append(file)
        elif file.stem.startswith("captions_"):
            chosen.append(file)
    if not chosen:
        raise ReaderError(
            f"{base}: no MJ-Bench JSON files" + (f" for subsets {list(wanted)}" if wanted else "")
        )
    return chosen


def read_mjbench_json(
    path: str | Path,
    *,
    subset: str,
    image_root: str | Path | None = None,
    index: FolderIndex | None = None,
    dataset_root: str | Path | None = None,
) -> ReadResult:
    """Read one MJ-Bench JSON file of ``subset``; category = the file's folder name.

    The form is the captions form when any item has ``label_0``, else the alignment form. Each image
    name is resolved to the first existing of ``<json dir>/<name>``,
    ``<json dir>/examples_<category>/<name>``, ``<image_root>/<name>``; when none exists, to the
    ``image_root`` candidate if given, else the ``<json dir>`` one. An item with an image that
    resolves (symlinks included) outside ``dataset_root`` (default: the JSON's folder) and
    ``image_root`` is rejected.
    """
    file = existing_path(path)
    items = load_json_records(file)
    category = file.parent.name
    resolver = _ImageResolver(file.parent, category, image_root, index or FolderIndex())
    captions_form = any(isinstance(item, dict) and "label_0" in item for item in items)
    reader = _captions_rows if captions_form else _alignment_rows
    log = RejectLog(file)
    rows = list(reader(items, file, subset, category, resolver, log))
    table = pl.DataFrame(rows, schema=BENCHMARK_PAIRS_SCHEMA, orient="row")
    table = table.with_columns(source_file=pl.lit(str(file), dtype=pl.String))
    result = ReadResult(conform(table, BENCHMARK_PAIRS_SCHEMA, where=str(file)), log.frame())
    roots = [dataset_root if dataset_root is not None else file.parent]
    if image_root is not None:
        roots.append(Path(image_root).expanduser().resolve())
    fields = {"image0_uri": "image0", "image1_uri": "image1"}
    return reject_outside_roots(result, PathGuard(*roots), fields, record_id="item_id")


class _ImageResolver:
    """Maps an image name of a JSON file to a path, listing each candidate folder once."""

    def __init__(
        self, json_dir: Path, category: str, image_root: str | Path | None, index: FolderIndex
    ) -> None:
        self.root = Path(image_root).expanduser().resolve() if image_root is not None else None
        self.folders = [json_dir, json_dir / f"examples_{category}", *([self.root] if self.root else [])]
        self.index = index

    def __call__(self, name: str) -> str:
        for folder in self.folders:
            if self.index.contains(folder / name):
                return str(folder / name)
        return str((self.root or self.folders[0]) / name)


def _alignment_id(raw_id: str | None, is_int: bool, file: Path, category: str, subset: str, row: int) -> str:
    """``<subset>-<category>-<dataset id>`` (``<subset>-<category>-<row>`` without an id): the
    dataset id alone repeats when one comparison is filed under several categories."""
    if raw_id is None:
        return f"{subset}-{category}-{row}"
    if is_int:
        match = re.fullmatch(_PER_SOURCE_NAME.format(category=re.escape(category)), file.stem)
        raw_id = (
            f"{file.stem}_{raw_id}"
            if match is None
            else f"{match['source']}{'_new' if match['v2'] else ''}_{raw_id}"
        )
    return f"{subset}-{category}-{raw_id}"


def _alignment_rows(
    items: list[Any], file: Path, subset: str, category: str, resolve: _ImageResolver, log: RejectLog
) -> Iterable[tuple[Any, ...]]:
    parsers = {
        "id": _optional_id,
        "source": lambda value: as_text(value, required=False),
        "caption": as_text,
        "image0": _image_name,
        "image1": _image_name,
        "label": _present_label,
    }
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            log.not_an_object(row, item)
            continue
        values, problems = parse_fields(item, parsers)
        is_int = isinstance(item.get("id"), int)
        item_id = _alignment_id(values.get("id"), is_int, file, category, subset, row)
        if problems:
            log.add(row, item_id, problems)
            continue
        yield (
            item_id,
            subset,
            category,
            values["source"],
            values["caption"],
            resolve(values["image0"]),
            resolve(values["image1"]),
            values["label"],
            None,
            row,
        )


def _captions_rows(
    items: list[Any], file: Path, subset: str, category: str, resolve: _ImageResolver, log: RejectLog
) -> Iterable[tuple[Any, ...]]:
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            log.not_an_object(row, item)
            continue
        base_id = f"{subset}-{category}-{row}"
        reference, others = _image_keys(item)
        parsers = {
            "caption": as_text,
            "label_0": _present_label,
            **{key: _image_name for key in (reference, *others)},
        }
        values, problems = parse_fields(item, parsers)
        if not others:
            problems["image_1"] = "missing (no image to compare with image_0)"
        if problems:
            log.add(row, base_id, problems)
            continue
        label_0 = values["label_0"]
        label = None if label_0 is None else 1 - label_0
        for key in others:
            item_id = base_id if len(others) == 1 else f"{base_id}-{_variant(key)}"
            yield (
                item_id,
                subset,
                category,
                None,
                values["caption"],
                resolve(values[reference]),
                resolve(values[key]),
                label,
                None,
                row,
            )


def _image_keys(item: dict[str, Any]) -> tuple[str, list[str]]:
    """The reference image key and the keys of the images compared with it."""
    if "sharp_image" in item:
        return "sharp_image", sorted(key for key in item if key.endswith(_VARIANT_SUFFIXES))
    others = sorted(
        (key for key in item if re.fullmatch(r"image_[1-9]\d*", key)), key=lambda key: int(key[6:])
    )
    return "image_0", others


def _variant(key: str) -> str:
    for suffix in _VARIANT_SUFFIXES:
        key = key.removesuffix(suffix)
    return key


def _image_name(value: Any) -> str:
    name = as_text(value)
    if not name:
        raise FieldProblem("empty image name")
    return name


def _present_label(value: Any) -> int | None:
    """A 0/1 label that must be present (``null`` = tie is allowed)."""
    if value is MISSING:
        raise FieldProblem("missing")
    return as_binary_label(value)


def _optional_id(value: Any) -> str | None:
    return None if value is MISSING or value is None else as_id(value)
