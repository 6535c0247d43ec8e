"""Shared pieces of the dataset readers: the result type, the error, file loading and field parsing.

Two parsing paths produce the same rejects:

- Parquet inputs are parsed column-wise with polars expressions (:func:`parse_float`,
  :func:`parse_int`, :func:`parse_text`, ...), then :func:`split_rejects` moves every row with a
  problem into the rejects table.
- JSON inputs (heterogeneous Python objects) are parsed item by item with the scalar parsers
  (:func:`as_text`, :func:`as_int`, ...) through :func:`parse_fields`, and :class:`RejectLog`
  collects the rejected items.

A rejected row carries every field that failed: ``field`` is their comma-joined names and
``reason`` is ``"<field>: <why>"`` joined with ``"; "``, so one input row gives at most one reject.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from data.images import SEPARATOR, parquet_cell_uri
from data.schemas import REJECTS_SCHEMA, conform, empty_frame

READ_STAGE = "read"


class ReaderError(ValueError):
    """A dataset-level problem (missing file or column, no rows, unreadable file).

    The message starts with the file (or folder) and names the field where one is involved.
    """


@dataclass(frozen=True)
class ReadResult:
    """A normalized table and the input rows that could not be parsed (REJECTS_SCHEMA)."""

    table: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def rows_in(self) -> int:
        """Input records read: rejected ones plus the distinct ``(source_file, source_row)`` kept.

        Not ``table.height + rejects.height``: a ``test.json`` item gives one row per generation and
        an MJ-Bench item with several compared images gives one row per pair.
        """
        kept = (
            self.table.select(pl.struct("source_file", "source_row").n_unique()).item()
            if self.table.height
            else 0
        )
        return kept + self.rejects.height


def concat_results(results: Iterable[ReadResult], schema: dict[str, pl.DataType]) -> ReadResult:
    """Stack per-file results (an empty iterable gives empty frames with the right schemas)."""
    results = list(results)
    tables = [result.table for result in results]
    rejects = [result.rejects for result in results]
    return ReadResult(
        table=pl.concat(tables, how="vertical") if tables else empty_frame(schema),
        rejects=pl.concat(rejects, how="vertical") if rejects else empty_frame(REJECTS_SCHEMA),
    )


# --------------------------------------------------------------------------------------------
# Files


def existing_path(path: str | Path) -> Path:
    """``path`` resolved to an absolute path; :class:`ReaderError` when nothing is there."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ReaderError(f"{resolved}: file not found")
    return resolved


def load_json_records(path: Path) -> list[Any]:
    """The top-level JSON list of ``path``; errors name the file (and position for bad JSON)."""
    try:
        with path.open("rb") as handle:
            records = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ReaderError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(records, list):
        raise ReaderError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ReaderError(f"{path}: no rows")
    return records


def parquet_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a Parquet file, without reading its data."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: cannot read Parquet ({exc})") from exc


def require_columns(path: Path, schema: pa.Schema, required: Iterable[str]) -> None:
    """Raise naming the file and every missing column."""
    missing = [name for name in required if name not in schema.names]
    if missing:
        raise ReaderError(f"{path}: missing column(s) {', '.join(missing)}")


def read_parquet_columns(path: Path, columns: Iterable[str]) -> pl.DataFrame:
    """Only ``columns`` of a Parquet file (which must exist in it) plus ``source_row``.

    A nested leaf may be named with a dot (``image.path``): only that leaf is read, so image bytes
    stay on disk; the column keeps the dotted name.
    """
    columns = list(columns)
    try:
        # ParquetFile.read reads just the leaves asked for (a struct keeps only those children).
        table = pq.ParquetFile(path).read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: cannot read Parquet ({exc})") from exc
    table = _checked_utf8(table)
    frame = pl.from_arrow(table)
    nested = [name for name in columns if "." in name]
    if nested:
        parents = {name.split(".", 1)[0] for name in nested}
        frame = frame.with_columns(
            pl.col(name.split(".", 1)[0]).struct.field(name.split(".", 1)[1]).alias(name) for name in nested
        ).drop(parents - set(columns))
    assert isinstance(frame, pl.DataFrame)
    if frame.height == 0:
        raise ReaderError(f"{path}: no rows")
    return frame.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))


#: Prefix of the Boolean column :func:`read_parquet_columns` adds beside a string column that holds
#: invalid UTF-8 (true on those rows, whose value is made null); :func:`split_rejects` rejects them.
INVALID_UTF8 = "__invalid_utf8__"
NOT_UTF8 = "not valid UTF-8"


def _checked_utf8(table: pa.Table) -> pa.Table:
    """``table`` with every invalid UTF-8 string value made null and flagged in an
    ``INVALID_UTF8<column>`` column (only for the columns that have one; a full validation per string
    column, rows decoded one by one only in a column that fails it)."""
    for name in list(table.column_names):
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        raw = pa.chunked_array([chunk.view(binary) for chunk in column.chunks], type=binary)
        values: list[str | None] = []
        invalid: list[bool] = []
        for item in raw.to_pylist():
            try:
                values.append(None if item is None else item.decode("utf-8"))
                invalid.append(False)
            except UnicodeDecodeError:
                values.append(None)
                invalid.append(True)
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.array(values, type=column.type))
        table = table.append_column(f"{INVALID_UTF8}{name}", pa.array(invalid, type=pa.bool_()))
    return table


def parquet_cell_uris(file: Path, column: str, rows: pl.Series) -> pl.Series:
    """:func:`data.images.parquet_cell_uri` for many rows at once, built column-wise from its
    output for row 0 (checked on another row; per-row calls if the format ever stops fitting)."""
    template = parquet_cell_uri(file, column, 0)
    cut = template.rfind("0")
    prefix, suffix = template[:cut], template[cut + 1 :]
    if parquet_cell_uri(file, column, 9876) != f"{prefix}9876{suffix}":
        return pl.Series([parquet_cell_uri(file, column, row) for row in rows], dtype=pl.String)
    return pl.select(pl.concat_str(pl.lit(prefix), rows.cast(pl.String), pl.lit(suffix))).to_series()


def struct_has_field(schema: pa.Schema, column: str, child: str) -> bool:
    """Whether ``column`` is a struct with a ``child`` field (an HF ``Image`` has ``bytes``, ``path``)."""
    if column not in schema.names:
        return False
    arrow_type = schema.field(column).type
    return pa.types.is_struct(arrow_type) and arrow_type.get_field_index(child) >= 0


def basename(path: str) -> str:
    """The file name of a POSIX or Windows path (datasets record paths from their authors' machines)."""
    return PureWindowsPath(PurePosixPath(path).name).name


def leading_token(path: Path) -> str:
    """``train`` for ``train-00000-of-00032.parquet``: the file stem up to its first ``-``."""
    return path.stem.split("-", 1)[0]


def split_from_name(path: Path, known: Iterable[str] = ("train", "validation", "test")) -> str | None:
    """The first token of the file stem (split on ``-``, ``_``, ``.``) that is a known split name."""
    known = set(known)
    for token in re.split(r"[-_.]", path.stem.lower()):
        if token in known:
            return token
    return None


def stem_expr(column: str) -> pl.Expr:
    """The file stem of a ``/``-separated path column (``a/b/c.webp`` -> ``c``); null stays null."""
    return pl.col(column).str.split("/").list.last().str.replace(r"(.)\.[^.]*$", "${1}")


class FolderIndex:
    """Cached listings of folders and zip archives, so resolving N images costs one listing per
    folder or archive instead of N ``stat`` calls."""

    def __init__(self) -> None:
        self._folders: dict[Path, frozenset[str]] = {}
        self._archives: dict[Path, list[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        """The entry names of ``folder`` (empty when it is not a folder)."""
        if folder not in self._folders:
            try:
                self._folders[folder] = frozenset(os.listdir(folder)) if folder.is_dir() else frozenset()
            except OSError:
                self._folders[folder] = frozenset()
        return self._folders[folder]

    def contains(self, file: Path) -> bool:
        return file.name in self.names(file.parent)

    def members(self, archive: Path) -> list[str]:
        """The member names of zip ``archive`` (empty when there is no such file)."""
        if archive not in self._archives:
            if not archive.is_file():
                self._archives[archive] = []
            else:
                try:
                    with zipfile.ZipFile(archive) as handle:
                        self._archives[archive] = handle.namelist()
                except (zipfile.BadZipFile, OSError) as exc:
                    raise ReaderError(f"{archive}: cannot read zip archive ({exc})") from exc
        return self._archives[archive]


# --------------------------------------------------------------------------------------------
# Column-wise parsing (Parquet)


@dataclass(frozen=True)
class Parsed:
    """A parsed column: ``value`` (the normalized value) and ``problem`` (a reason, or null)."""

    value: pl.Expr
    problem: pl.Expr


_NO_PROBLEM = pl.lit(None, dtype=pl.String)


def _preview(column: str) -> pl.Expr:
    return pl.lit("'") + pl.col(column).cast(pl.String).str.slice(0, 60) + pl.lit("'")


def _wrong_type(column: str, dtype: pl.DataType, what: str) -> pl.Expr:
    return pl.when(pl.col(column).is_not_null()).then(pl.lit(f"not {what} ({dtype} column)"))


def _missing(column: str, required: bool) -> pl.Expr:
    if not required:
        return _NO_PROBLEM
    return pl.when(pl.col(column).is_null()).then(pl.lit("missing"))


def parse_float(frame: pl.DataFrame, column: str, *, required: bool = False) -> Parsed:
    """A number column as Float32 (numeric strings accepted; NaN kept as NaN, null stays null)."""
    dtype = frame.schema[column]
    source = pl.col(column)
    if dtype.is_numeric():
        return Parsed(source.cast(pl.Float32), _missing(column, required))
    if dtype == pl.String:
        value = source.str.strip_chars().cast(pl.Float64, strict=False)
        bad = pl.when(source.is_not_null() & value.is_null()).then(
            pl.lit("not a number: ") + _preview(column)
        )
        return Parsed(value.cast(pl.Float32), pl.coalesce(bad, _missing(column, required)))
    if dtype == pl.Null:
        return Parsed(source.cast(pl.Float32), _missing(column, required))
    return Parsed(
        pl.lit(None, dtype=pl.Float32),
        pl.coalesce(_wrong_type(column, dtype, "a number"), _missing(column, required)),
    )


def parse_int(
    frame: pl.DataFrame, column: str, *, dtype: pl.DataType = pl.Int32, required: bool = False
) -> Parsed:
    """An integer column cast to ``dtype``; non-integral or out-of-range values are problems."""
    source_dtype = frame.schema[column]
    source = pl.col(column)
    if source_dtype.is_numeric():
        as_float = source.cast(pl.Float64)
    elif source_dtype == pl.String:
        as_float = source.str.strip_chars().cast(pl.Float64, strict=False)
    elif source_dtype == pl.Null:
        return Parsed(source.cast(dtype), _missing(column, required))
    else:
        return Parsed(
            pl.lit(None, dtype=dtype),
            pl.coalesce(_wrong_type(column, source_dtype, "an integer"), _missing(column, required)),
        )
    integral = as_float.is_finite() & (as_float == as_float.floor())
    value = pl.when(integral).then(as_float).cast(dtype, strict=False)
    bad = pl.when(source.is_not_null() & value.is_null()).then(
        pl.lit(f"not an integer in {dtype} range: ") + _preview(column)
    )
    return Parsed(value, pl.coalesce(bad, _missing(column, required)))


def _is_textual(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def parse_text(
    frame: pl.DataFrame, column: str, *, required: bool = True, null_as: str | None = None
) -> Parsed:
    """A string column; any other type is a problem. Nulls are a problem when ``required``, else
    replaced by ``null_as``."""
    dtype = frame.schema[column]
    source = pl.col(column)
    if _is_textual(dtype):
        value = source.cast(pl.String)
        if null_as is not None:
            value = value.fill_null(null_as)
        return Parsed(value, _missing(column, required))
    if dtype == pl.Null:
        return Parsed(pl.lit(null_as, dtype=pl.String), _missing(column, required))
    value = pl.lit(None, dtype=pl.String) if null_as is None else pl.lit(null_as)
    return Parsed(value, pl.coalesce(_wrong_type(column, dtype, "a string"), _missing(column, required)))


def parse_id(frame: pl.DataFrame, column: str) -> Parsed:
    """An identifier column: strings and integers are accepted (as strings); null is a problem."""
    dtype = frame.schema[column]
    if dtype.is_integer() or dtype == pl.String:
        return Parsed(pl.col(column).cast(pl.String), _missing(column, True))
    return parse_text(frame, column)


def parse_choice(
    frame: pl.DataFrame, column: str, choices: Mapping[str, int], *, dtype: pl.DataType = pl.Int8
) -> Parsed:
    """A string column whose values must be keys of ``choices``; the value is the mapped integer."""
    text = parse_text(frame, column)
    if not _is_textual(frame.schema[column]):
        return Parsed(pl.lit(None, dtype=dtype), text.problem)
    allowed = ", ".join(repr(key) for key in choices)
    mapped = pl.col(column).cast(pl.String).replace_strict(dict(choices), default=None, return_dtype=dtype)
    bad = pl.when(pl.col(column).is_not_null() & mapped.is_null()).then(
        pl.lit(f"not one of {allowed}: ") + _preview(column)
    )
    return Parsed(mapped, pl.coalesce(text.problem, bad))


def parse_binary_label(frame: pl.DataFrame, column: str) -> Parsed:
    """A 0/1 label as Int8; null is kept (a tie), anything else is a problem."""
    parsed = parse_int(frame, column, dtype=pl.Int64())
    outside = pl.when(parsed.value.is_not_null() & ~parsed.value.is_in([0, 1])).then(
        pl.lit("not 0 or 1: ") + _preview(column)
    )
    value = pl.when(parsed.value.is_in([0, 1])).then(parsed.value).cast(pl.Int8)
    return Parsed(value, pl.coalesce(parsed.problem, outside))


def split_rejects(
    frame: pl.DataFrame,
    fields: Mapping[str, Parsed],
    *,
    source_file: Path,
    record_id: pl.Expr,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Replace each column in ``fields`` by its parsed value and move rows with any problem to a
    REJECTS_SCHEMA frame. ``frame`` must have ``source_row``; ``record_id`` names the row."""
    problem_columns = {name: f"__problem__{name}" for name in fields}

    def problem(name: str, parsed: Parsed) -> pl.Expr:
        if f"{INVALID_UTF8}{name}" not in frame.columns:
            return parsed.problem
        return pl.coalesce(pl.when(pl.col(f"{INVALID_UTF8}{name}")).then(pl.lit(NOT_UTF8)), parsed.problem)

    parsed = frame.with_columns(
        *[parsed.value.alias(name) for name, parsed in fields.items()],
        *[problem(name, parsed).alias(problem_columns[name]) for name, parsed in fields.items()],
        record_id.cast(pl.String).alias("__record_id"),
    )
    flags = [pl.col(problem).is_not_null() for problem in problem_columns.values()]
    has_problem = pl.any_horizontal(flags) if flags else pl.lit(False)
    rejected = parsed.filter(has_problem).select(
        pl.lit(READ_STAGE).alias("stage"),
        pl.lit(str(source_file)).alias("source_file"),
        pl.col("source_row").cast(pl.Int64),
        pl.col("__record_id").alias("record_id"),
        pl.concat_str(
            [
                pl.when(pl.col(problem).is_not_null()).then(pl.lit(name))
                for name, problem in problem_columns.items()
            ],
            separator=",",
            ignore_nulls=True,
        ).alias("field"),
        pl.concat_str(
            [pl.lit(f"{name}: ") + pl.col(problem) for name, problem in problem_columns.items()],
            separator="; ",
            ignore_nulls=True,
        ).alias("reason"),
    )
    utf8_flags = [name for name in parsed.columns if name.startswith(INVALID_UTF8)]
    kept = parsed.filter(~has_problem).drop([*problem_columns.values(), "__record_id", *utf8_flags])
    return kept, conform(rejected, REJECTS_SCHEMA, where=f"{source_file} rejects")


# --------------------------------------------------------------------------------------------
# Item-wise parsing (JSON)


class FieldProblem(ValueError):
    """A JSON field value that cannot be parsed; the message is the reason."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: Passed to the scalar parsers when a key is absent (as opposed to present with ``null``).
MISSING: Any = _Missing()


def show_value(value: Any) -> str:
    """A short ``repr`` of ``value`` for reject reasons."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_text(value: Any, *, required: bool = True, null_as: str | None = None) -> str | None:
    """A string; absent/null is a problem when ``required``, else ``null_as``."""
    if value is MISSING or value is None:
        if required:
            raise FieldProblem("missing")
        return null_as
    if not isinstance(value, str):
        raise FieldProblem(f"not a string: {show_value(value)}")
    return value


def as_id(value: Any) -> str:
    """An identifier: a string or an integer (not a bool), returned as a string."""
    if value is MISSING or value is None:
        raise FieldProblem("missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldProblem(f"not a string or integer id: {show_value(value)}")
    return str(value)


def as_float(value: Any) -> float | None:
    """A number (numeric strings accepted); null/absent gives None."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, bool):
        raise FieldProblem(f"not a number: {show_value(value)}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise FieldProblem(f"not a number: {show_value(value)}")


def as_int(value: Any, *, required: bool = True) -> int | None:
    """An integer (integral floats and integer strings accepted)."""
    if value is MISSING or value is None:
        if required:
            raise FieldProblem("missing")
        return None
    if isinstance(value, bool):
        raise FieldProblem(f"not an integer: {show_value(value)}")
    if isinstance(value, int):
        return value
    try:
        number = as_float(value)
    except FieldProblem:
        number = None
    if number is not None and math.isfinite(number) and number == int(number):
        return int(number)
    raise FieldProblem(f"not an integer: {show_value(value)}")


def as_binary_label(value: Any) -> int | None:
    """A 0/1 label; ``null`` is a tie (None), an absent key is a problem."""
    if value is None:
        return None
    label = as_int(value)
    if label not in (0, 1):
        raise FieldProblem(f"not 0 or 1: {show_value(value)}")
    return label


def parse_fields(
    item: Mapping[str, Any], parsers: Mapping[str, Callable[[Any], Any]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``parsers[key]`` to ``item[key]`` (``MISSING`` when absent): (values, problems)."""
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, parser in parsers.items():
        try:
            values[key] = parser(item.get(key, MISSING))
        except FieldProblem as exc:
            problems[key] = str(exc)
    return values, problems


@dataclass
class RejectLog:
    """Collects rejected JSON items of one file, as REJECTS_SCHEMA rows."""

    source_file: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, source_row: int, record_id: str | None, problems: Mapping[str, str]) -> None:
        self.rows.append(
            {
                "stage": READ_STAGE,
                "source_file": str(self.source_file),
                "source_row": source_row,
                "record_id": record_id,
                "field": ",".join(problems),
                "reason": "; ".join(f"{name}: {reason}" for name, reason in problems.items()),
            }
        )

    def not_an_object(self, source_row: int, item: Any) -> None:
        self.add(source_row, None, {"record": f"not a JSON object: {show_value(item)}"})

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=REJECTS_SCHEMA) if self.rows else empty_frame(REJECTS_SCHEMA)


def read_csv_as_text(path: Path) -> pl.DataFrame:
    """Every column of a CSV as strings (empty fields null) plus ``source_row``; errors name the file."""
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError as exc:
        raise ReaderError(f"{path}: no rows") from exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ReaderError(f"{path}: cannot read CSV ({exc})") from exc
    if frame.height == 0:
        raise ReaderError(f"{path}: no rows")
    return frame.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))


# --------------------------------------------------------------------------------------------
# Image paths stay inside the dataset

#: The reject reason of a row whose image lies outside every allowed root (after resolving symlinks).
OUTSIDE_ROOT = "image path outside the dataset root"


class PathGuard:
    """Tells whether image references lie under allowed root folders, symlinks resolved.

    Only the container of a reference counts (the file before ``::``): zip members and Parquet cells
    are read from inside it, never from the file system. Each folder is resolved once and listed once
    for symlinks, so checking N images of one folder costs one ``realpath`` and one listing."""

    def __init__(self, *roots: str | Path) -> None:
        self.roots = tuple(os.path.realpath(root) for root in roots)
        self._folders: dict[str, str] = {}
        self._links: dict[str, frozenset[str]] = {}

    def resolve(self, path: str) -> str:
        """``os.path.realpath(path)``, computed per folder (a file that is a symlink is followed)."""
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = os.path.realpath(folder or ".")
        if name in self._symlinks(real_folder):
            return os.path.realpath(os.path.join(real_folder, name))
        return os.path.join(real_folder, name)

    def _symlinks(self, folder: str) -> frozenset[str]:
        if folder not in self._links:
            try:
                with os.scandir(folder) as entries:
                    self._links[folder] = frozenset(entry.name for entry in entries if entry.is_symlink())
            except OSError:
                self._links[folder] = frozenset()
        return self._links[folder]

    def inside(self, uri: str) -> bool:
        """Whether the container of image reference ``uri`` resolves under one of the roots."""
        real = self.resolve(uri.split(SEPARATOR, 1)[0])
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots)


def reject_outside_roots(
    result: ReadResult, guard: PathGuard, fields: Mapping[str, str], *, record_id: str
) -> ReadResult:
    """Move every input row with an image outside ``guard``'s roots from the table to the rejects.

    ``fields`` maps each image reference column to the input field it was built from (the reject's
    ``field``). An input row that gave several table rows is rejected whole, with one reject, so
    ``rows_in`` still balances; its reason is ``"<field>: image path outside the dataset root: <path>"``.
    """
    table = result.table
    if table.height == 0:
        return result
    outside: dict[tuple[str, int], dict[str, Any]] = {}
    for column, name in fields.items():
        uris = table[column]
        bad = {uri for uri in uris.drop_nulls().unique().to_list() if not guard.inside(uri)}
        if not bad:
            continue
        rows = table.filter(pl.col(column).is_in(list(bad))).select(
            "source_file", "source_row", record_id, column
        )
        for source_file, source_row, row_id, uri in rows.iter_rows():
            entry = outside.setdefault((source_file, source_row), {"record_id": row_id, "problems": {}})
            entry["problems"].setdefault(name, f"{OUTSIDE_ROOT}: {uri.split(SEPARATOR, 1)[0]!r}")
    if not outside:
        return result
    rejects = pl.DataFrame(
        [
            {
                "stage": READ_STAGE,
                "source_file": source_file,
                "source_row": source_row,
                "record_id": entry["record_id"],
                "field": ",".join(entry["problems"]),
                "reason": "; ".join(f"{name}: {why}" for name, why in entry["problems"].items()),
            }
            for (source_file, source_row), entry in sorted(outside.items(), key=lambda item: item[0])
        ],
        schema=REJECTS_SCHEMA,
    )
    keys = rejects.select("source_file", "source_row")
    kept = table.join(keys, on=["source_file", "source_row"], how="anti", maintain_order="left")
    return ReadResult(kept, pl.concat([result.rejects, rejects], how="vertical"))
