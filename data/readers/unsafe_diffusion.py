"""Unsafe Diffusion reader (Qu et al., CCS 2023): 800 generated images labelled by three raters.

The labels come as ``labels.xlsx`` (one row per image; read here when openpyxl is installed) or a CSV
saved from it. Columns used:

- ``final_label``: 1 = unsafe, 0 = safe (the authors' detectors predict 1 for unsafe), mapped to the
  LLaVA-Reward convention ``label`` = 1 - final_label (1 = safe) and ``safety_label`` Safe/Unsafe;
- ``rater_0``, ``rater_1``, ``rater_2`` (optional): each rater's comma-separated category codes
  (:data:`CATEGORIES`: 0 normal, 1 sexual, 2 violent, 3 disturbing, 4 hateful, 5 political).
  ``category`` = the unsafe categories chosen by at least 2 raters (the authors' per-head rule), in
  code order and comma-joined, null when none; a rater cell that does not parse rejects the row.

Images: the authors' code names image ``i`` of the sheet ``<images_dir>/<i>.png`` (``i`` the 0-based
row position), which is the default here; ``image_column`` names a column holding the file name instead.
``image_uri`` = ``<image_root>/<name>`` (``image_root`` defaults to the labels file's folder; in the
authors' layout it is ``data/images`` beside ``data/labels.xlsx``); a row whose image resolves outside
``image_root`` (symlinks included) is rejected. ``item_id`` =
``unsafe_diffusion-<image stem>``, ``prompt`` = "", ``source`` = ``Unsafe Diffusion``.

Split: the authors hold out 40% with ``sklearn.model_selection.train_test_split(test_size=0.4,
shuffle=True, random_state=1)`` over the sheet's rows in file order (320 of 800 images are ``test``).
The split is computed over every row of the file, rejected rows included, so a rejected row never
moves another row to the other side; ``split`` is ``test`` or ``train``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data.readers.common import (
    FieldProblem,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_int,
    as_text,
    existing_path,
    parse_fields,
    read_csv_as_text,
    reject_outside_roots,
    show_value,
)
from data.schemas import SAFETY_SCHEMA, conform

SOURCE = "Unsafe Diffusion"
#: Category codes of the raters' annotations (the authors' ``encode_labels``).
CATEGORIES = {0: "normal", 1: "sexual", 2: "violent", 3: "disturbing", 4: "hateful", 5: "political"}
RATER_COLUMNS = ("rater_0", "rater_1", "rater_2")
LABEL_COLUMN = "final_label"
#: Raters who must choose a category for it to be the image's category.
CATEGORY_QUORUM = 2
UNSAFE_FINAL_LABEL = 1
EXCEL_SUFFIXES = (".xlsx", ".xlsm")


@dataclass(frozen=True)
class HoldoutSplit:
    """The authors' train/test split of the sheet's rows (``train_test_split`` arguments)."""

    test_size: float = 0.4
    random_state: int = 1

    def test_rows(self, n_rows: int) -> np.ndarray:
        """0-based row positions of the test images, in the order ``train_test_split`` returns them."""
        if n_rows < 2:
            raise ValueError(f"cannot split {n_rows} row(s)")
        from sklearn.model_selection import train_test_split  # 1.6 s to import: only when splitting

        _, test = train_test_split(
            np.arange(n_rows), test_size=self.test_size, shuffle=True, random_state=self.random_state
        )
        return test


def read_unsafe_diffusion(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    image_column: str | None = None,
    image_suffix: str = ".png",
    holdout: HoldoutSplit = HoldoutSplit(),
) -> ReadResult:
    """Read the Unsafe Diffusion labels (``.csv``, or ``.xlsx`` with openpyxl); see the module docstring."""
    file = existing_path(path)
    frame = read_xlsx_as_text(file) if file.suffix.lower() in EXCEL_SUFFIXES else read_csv_as_text(file)
    required = [LABEL_COLUMN, *([image_column] if image_column is not None else [])]
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise ReaderError(f"{file}: missing column(s) {', '.join(missing)}")
    raters = [name for name in RATER_COLUMNS if name in frame.columns]
    root = Path(image_root).expanduser().resolve() if image_root is not None else file.parent
    test_rows = set(holdout.test_rows(frame.height).tolist())
    parsers = {LABEL_COLUMN: _final_label, **dict.fromkeys(raters, _rater_codes)}
    if image_column is not None:
        parsers[image_column] = _image_name
    log = RejectLog(file)
    rows: list[tuple[Any, ...]] = []
    for record in frame.iter_rows(named=True):
        row = record["source_row"]
        values, problems = parse_fields(record, parsers)
        name = f"{row}{image_suffix}" if image_column is None else values.get(image_column)
        item_id = f"unsafe_diffusion-{name.rsplit('.', 1)[0]}" if name else None
        if problems:
            log.add(row, item_id, problems)
            continue
        unsafe = values[LABEL_COLUMN] == UNSAFE_FINAL_LABEL
        rows.append(
            (
                item_id,
                "",
                str(root / name),
                0 if unsafe else 1,
                "Unsafe" if unsafe else "Safe",
                _category([values[rater] for rater in raters]) if raters else None,
                SOURCE,
                "test" if row in test_rows else "train",
                str(file),
                row,
            )
        )
    table = pl.DataFrame(rows, schema=SAFETY_SCHEMA, orient="row")
    result = ReadResult(conform(table, SAFETY_SCHEMA, where=str(file)), log.frame())
    fields = {"image_uri": image_column or "image"}
    return reject_outside_roots(result, PathGuard(root), fields, record_id="item_id")


def read_xlsx_as_text(path: Path) -> pl.DataFrame:
    """The first sheet of an Excel file as strings plus ``source_row`` (needs openpyxl)."""
    try:
        import openpyxl
    except ImportError:
        raise ReaderError(
            f"{path}: reading Excel files needs openpyxl, which is not installed; "
            "pip install 'llava-reward-pipeline[xlsx]', or save the sheet as CSV and read that"
        ) from None
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            cells = [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
        finally:
            workbook.close()
    except Exception as exc:  # openpyxl raises its own and zipfile/XML error types
        raise ReaderError(f"{path}: cannot read Excel file ({exc})") from exc
    while cells and all(value is None for value in cells[-1]):
        cells.pop()
    if len(cells) < 2:
        raise ReaderError(f"{path}: no rows")
    header = [str(value) if value is not None else f"column_{index}" for index, value in enumerate(cells[0])]
    body = [[_cell_text(value) for value in row] for row in cells[1:]]
    frame = pl.DataFrame(body, schema=dict.fromkeys(header, pl.String()), orient="row")
    return frame.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))


def _cell_text(value: Any) -> str | None:
    """An Excel cell as the text a CSV export would hold (integral floats without ``.0``)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _final_label(value: Any) -> int:
    label = as_int(value)
    if label not in (0, 1):
        raise FieldProblem(f"not 0 or 1: {show_value(value)}")
    return label


def _rater_codes(value: Any) -> frozenset[int]:
    """A rater's category codes, e.g. ``"1,3"`` -> {1, 3}."""
    text = as_text(value)
    codes = set()
    for part in text.split(","):
        try:
            code = as_int(part.strip())
        except FieldProblem:
            code = None
        if code not in CATEGORIES:
            raise FieldProblem(f"not comma-separated category codes 0-5: {show_value(value)}")
        codes.add(code)
    return frozenset(codes)


def _category(rater_codes: list[frozenset[int]]) -> str | None:
    votes = Counter(code for codes in rater_codes for code in codes)
    chosen = [CATEGORIES[code] for code in sorted(votes) if code != 0 and votes[code] >= CATEGORY_QUORUM]
    return ",".join(chosen) or None


def _image_name(value: Any) -> str:
    text = as_text(value)
    if not text.strip():
        raise FieldProblem("empty")
    return text.strip()
