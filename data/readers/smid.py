"""SMID readers (Socio-Moral Image Database, Crone et al. 2018): the LLaVA-Reward test list and the
official norms CSV. Both give SAFETY_SCHEMA rows: label 1 = moral (``Safe``), 0 = immoral (``Unsafe``).

- ``smid_test.json`` (LLaVA-Reward): ``[{path, label, prompt}]`` with absolute paths on the authors'
  machine: the image is ``<image_root>/<basename(path)>`` when ``image_root`` is given (else ``path``,
  relative to the JSON's folder). Split: ``split`` or the split named in the file name (``test``).
- ``SMID_norms.csv``: ``img_name`` (no extension in the official file) and ``moral_mean`` (1-5, higher
  is more moral), other columns ignored. :class:`SmidLabelRule` labels an image immoral when
  ``moral_mean < 2.5`` and moral when ``moral_mean > 3.5``, both bounds strict (the rule of Q16,
  Schramowski et al. 2022): a mean of exactly 2.5 or 3.5 is in the ambiguous middle. Middle rows are
  dropped into the rejects (field ``moral_mean``), so every CSV row is accounted for. The image is
  ``<image_root>/<img_name><image_suffix>`` (``image_root`` defaults to the CSV's folder; the suffix
  is added only when ``img_name`` has none).

In both forms a row whose image resolves (symlinks included) outside ``image_root`` (default: the
file's folder) is rejected.

``item_id`` is ``smid-<image stem>`` in both forms, so the two tables join on it; ``source`` is
``SMID``, ``category`` null, ``prompt`` the list's prompt (``""`` for the CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from data.readers.common import (
    READ_STAGE,
    FieldProblem,
    Parsed,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_int,
    as_text,
    basename,
    existing_path,
    load_json_records,
    parse_fields,
    parse_text,
    read_csv_as_text,
    reject_outside_roots,
    show_value,
    split_from_name,
    split_rejects,
)
from data.schemas import REJECTS_SCHEMA, SAFETY_SCHEMA, conform

SOURCE = "SMID"
#: ``label`` -> ``safety_label`` (LLaVA-Reward convention).
SAFETY_NAMES = {1: "Safe", 0: "Unsafe"}
NORMS_COLUMNS = ("img_name", "moral_mean")


@dataclass(frozen=True)
class SmidLabelRule:
    """Binary labels from ``moral_mean``: immoral (0) when ``< immoral_below``, moral (1) when
    ``> moral_above``, dropped in between (bounds included in the dropped middle)."""

    immoral_below: float = 2.5
    moral_above: float = 3.5

    def __post_init__(self) -> None:
        if not self.immoral_below <= self.moral_above:
            raise ValueError(
                f"immoral_below ({self.immoral_below}) must not exceed moral_above ({self.moral_above})"
            )


def read_smid(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | None = None,
    rule: SmidLabelRule = SmidLabelRule(),
    image_suffix: str = ".jpg",
) -> ReadResult:
    """Read a SMID ``.json`` list or ``.csv`` norms file (``rule`` and ``image_suffix``: CSV only)."""
    source = existing_path(path)
    if source.suffix == ".json":
        return read_smid_json(source, image_root=image_root, split=split)
    if source.suffix == ".csv":
        return read_smid_norms(
            source, image_root=image_root, split=split, rule=rule, image_suffix=image_suffix
        )
    raise ReaderError(f"{source}: not a SMID .json list or .csv norms file")


# --------------------------------------------------------------------------------------------
# LLaVA-Reward list


def read_smid_json(
    path: str | Path, *, image_root: str | Path | None = None, split: str | None = None
) -> ReadResult:
    """Read ``smid_test.json``-style records ``{path, label, prompt}``."""
    file = existing_path(path)
    items = load_json_records(file)
    root = Path(image_root).expanduser().resolve() if image_root is not None else None
    split_name = split if split is not None else split_from_name(file)
    parsers = {
        "path": _image_path,
        "label": _label,
        "prompt": lambda value: as_text(value, required=False, null_as=""),
    }
    log = RejectLog(file)
    rows: list[tuple[Any, ...]] = []
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            log.not_an_object(row, item)
            continue
        values, problems = parse_fields(item, parsers)
        name = basename(values["path"]) if "path" in values else None
        item_id = f"smid-{_stem(name)}" if name else None
        if problems:
            log.add(row, item_id, problems)
            continue
        image_uri = str(root / name) if root is not None else str(file.parent / values["path"])
        label = values["label"]
        rows.append(
            (
                item_id,
                values["prompt"],
                image_uri,
                label,
                SAFETY_NAMES[label],
                None,
                SOURCE,
                split_name,
                str(file),
                row,
            )
        )
    table = pl.DataFrame(rows, schema=SAFETY_SCHEMA, orient="row")
    result = ReadResult(conform(table, SAFETY_SCHEMA, where=str(file)), log.frame())
    guard = PathGuard(root if root is not None else file.parent)
    return reject_outside_roots(result, guard, {"image_uri": "path"}, record_id="item_id")


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def _image_path(value: Any) -> str:
    text = as_text(value)
    if not basename(text):
        raise FieldProblem(f"no file name in path: {show_value(value)}")
    return text


def _label(value: Any) -> int:
    label = as_int(value)
    if label not in SAFETY_NAMES:
        raise FieldProblem(f"not 0 or 1: {show_value(value)}")
    return label


# --------------------------------------------------------------------------------------------
# Norms CSV


def read_smid_norms(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | None = None,
    rule: SmidLabelRule = SmidLabelRule(),
    image_suffix: str = ".jpg",
) -> ReadResult:
    """Read ``SMID_norms.csv`` and label it with ``rule`` (see the module docstring)."""
    file = existing_path(path)
    frame = read_csv_as_text(file)
    missing = [name for name in NORMS_COLUMNS if name not in frame.columns]
    if missing:
        raise ReaderError(f"{file}: missing column(s) {', '.join(missing)}")
    root = Path(image_root).expanduser().resolve() if image_root is not None else file.parent
    name = pl.col("img_name").str.strip_chars()
    has_suffix = name.str.contains(r"[^.]\.[A-Za-z0-9]+$")
    stem = pl.when(has_suffix).then(name.str.replace(r"\.[A-Za-z0-9]+$", "")).otherwise(name)
    frame = frame.with_columns(
        item_id=pl.lit("smid-") + stem,
        image_name=pl.when(has_suffix).then(name).otherwise(name + pl.lit(image_suffix)),
    )
    mean = _float64(frame, "moral_mean")
    img_name = parse_text(frame, "img_name")
    empty_name = pl.when(name == "").then(pl.lit("empty"))
    fields = {
        "img_name": Parsed(img_name.value, pl.coalesce(img_name.problem, empty_name)),
        "moral_mean": mean,
    }
    kept, rejects = split_rejects(frame, fields, source_file=file, record_id=pl.col("item_id"))
    immoral = pl.col("moral_mean") < rule.immoral_below
    moral = pl.col("moral_mean") > rule.moral_above
    ambiguous = ~immoral & ~moral
    dropped = kept.filter(ambiguous).select(
        pl.lit(READ_STAGE).alias("stage"),
        pl.lit(str(file)).alias("source_file"),
        pl.col("source_row"),
        pl.col("item_id").alias("record_id"),
        pl.lit("moral_mean").alias("field"),
        (
            pl.lit("moral_mean: ")
            + pl.col("moral_mean").cast(pl.String)
            + pl.lit(f" is within [{rule.immoral_below}, {rule.moral_above}]")
            + pl.lit(" (ambiguous, dropped by the label rule)")
        ).alias("reason"),
    )
    labelled = kept.filter(~ambiguous).with_columns(
        label=pl.when(moral).then(1).otherwise(0).cast(pl.Int8),
        prompt=pl.lit(""),
        image_uri=pl.lit(str(root) + "/") + pl.col("image_name"),
        category=pl.lit(None, dtype=pl.String),
        source=pl.lit(SOURCE),
        split=pl.lit(split, dtype=pl.String),
        source_file=pl.lit(str(file)),
    )
    table = labelled.with_columns(
        safety_label=pl.col("label").replace_strict(SAFETY_NAMES, return_dtype=pl.String)
    )
    all_rejects = pl.concat([rejects, conform(dropped, REJECTS_SCHEMA, where=f"{file} rejects")]).sort(
        "source_row"
    )
    result = ReadResult(conform(table, SAFETY_SCHEMA, where=str(file)), all_rejects)
    return reject_outside_roots(result, PathGuard(root), {"image_uri": "img_name"}, record_id="item_id")


def _float64(frame: pl.DataFrame, column: str) -> Parsed:
    """A required text column parsed as a finite Float64 (``parse_float`` rounds to Float32, which
    could move a mean across a label bound)."""
    text = pl.col(column).str.strip_chars()
    value = text.cast(pl.Float64, strict=False)
    problem = (
        pl.when(pl.col(column).is_null() | (text == ""))
        .then(pl.lit("missing"))
        .when(value.is_null())
        .then(pl.lit("not a number: '") + pl.col(column).str.slice(0, 60) + pl.lit("'"))
        .when(~value.is_finite())
        .then(pl.lit("not a finite number: '") + pl.col(column) + pl.lit("'"))
    )
    return Parsed(value, problem)
