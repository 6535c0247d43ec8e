"""TIFA160 reader: the human judgments of TIFA (Hu et al. 2023), 160 texts x 5 generators = 800 images.

``human_annotations.json`` is a JSON object keyed ``<text_id>_<model>`` whose values are
``{text_id, image_path, text, human_scores: [2 ints 1-5], human_avg}``. The t2v_metrics copy
(``tifa160.json``) has the same keys and values without the two score fields: when no entry of a file
has ``human_scores`` or ``human_avg`` the file is read as such a prompt listing and the score columns
are null; otherwise every entry needs ``human_scores``.

Rows follow :data:`TIFA_SCHEMA`, in file order (``source_row`` = 0-based position of the entry).
``item_id`` is the key, ``model`` the part of the key after ``<text_id>_``, ``image_uri`` =
``<image_root>/<image_path>`` (``image_root`` defaults to the JSON file's folder: the images are not in
the TIFA repository). Rejected entries: a key that does not start with ``<text_id>_``, a missing or empty
field, an ``image_path`` that resolves (symlinks included) outside ``image_root``, a score outside 1-5 or
not an integer, or a ``human_avg`` that is not the mean of ``human_scores``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from data.readers.common import (
    MISSING,
    FieldProblem,
    PathGuard,
    ReaderError,
    ReadResult,
    RejectLog,
    as_float,
    as_int,
    as_text,
    existing_path,
    parse_fields,
    reject_outside_roots,
    show_value,
)
from data.schemas import TIFA_SCHEMA, conform

SCORE_RANGE = (1, 5)
SCORE_FIELDS = ("human_scores", "human_avg")
#: Largest accepted difference between ``human_avg`` and the mean of ``human_scores``.
AVERAGE_TOLERANCE = 1e-6


def read_tifa(path: str | Path, *, image_root: str | Path | None = None) -> ReadResult:
    """Read ``human_annotations.json`` (or the score-less ``tifa160.json``); see the module docstring."""
    file = existing_path(path)
    entries = _load_json_object(file)
    root = Path(image_root).expanduser().resolve() if image_root is not None else file.parent
    scored = any(
        isinstance(entry, dict) and any(key in entry for key in SCORE_FIELDS) for entry in entries.values()
    )
    parsers = {"text_id": _non_empty, "image_path": _non_empty, "text": as_text}
    if scored:
        parsers["human_scores"] = _human_scores
        parsers["human_avg"] = as_float
    log = RejectLog(file)
    rows: list[tuple[Any, ...]] = []
    for row, (key, entry) in enumerate(entries.items()):
        if not isinstance(entry, dict):
            log.add(row, key, {"record": f"not a JSON object: {show_value(entry)}"})
            continue
        values, problems = parse_fields(entry, parsers)
        text_id = values.get("text_id")
        model = key[len(text_id) + 1 :] if text_id and key.startswith(f"{text_id}_") else ""
        if text_id is not None and not model:
            problems["key"] = f"{key!r} is not '<text_id>_<model>' for text_id {text_id!r}"
        average = _checked_average(values, problems) if scored else None
        if problems:
            log.add(row, key, problems)
            continue
        rows.append(
            (
                key,
                text_id,
                model,
                values["text"],
                str(root / values["image_path"]),
                average,
                values.get("human_scores"),
                str(file),
                row,
            )
        )
    table = pl.DataFrame(rows, schema=TIFA_SCHEMA, orient="row")
    result = ReadResult(conform(table, TIFA_SCHEMA, where=str(file)), log.frame())
    return reject_outside_roots(result, PathGuard(root), {"image_uri": "image_path"}, record_id="item_id")


def _load_json_object(path: Path) -> dict[str, Any]:
    """The top-level JSON object of ``path`` (keys -> entries); errors name the file."""
    try:
        with path.open("rb") as handle:
            entries = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ReaderError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(entries, dict):
        raise ReaderError(
            f"{path}: expected a JSON object keyed '<text_id>_<model>', got {type(entries).__name__}"
        )
    if not entries:
        raise ReaderError(f"{path}: no rows")
    return entries


def _non_empty(value: Any) -> str:
    text = as_text(value)
    if not text:
        raise FieldProblem("empty")
    return text


def _human_scores(value: Any) -> list[int]:
    if value is MISSING or value is None:
        raise FieldProblem("missing")
    if not isinstance(value, list) or not value:
        raise FieldProblem(f"not a non-empty list of scores: {show_value(value)}")
    low, high = SCORE_RANGE
    scores = []
    for score in value:
        try:
            number = as_int(score)
        except FieldProblem as exc:
            raise FieldProblem(f"{exc} in {show_value(value)}") from None
        if number is None or not low <= number <= high:
            raise FieldProblem(f"score {score!r} outside {low}-{high} in {show_value(value)}")
        scores.append(number)
    return scores


def _checked_average(values: dict[str, Any], problems: dict[str, str]) -> float | None:
    """``human_avg`` (the mean of the scores when absent); a mismatch is recorded in ``problems``."""
    scores = values.get("human_scores")
    if scores is None:
        return None
    mean = sum(scores) / len(scores)
    given = values.get("human_avg")
    if given is None:
        return mean
    if not math.isclose(given, mean, rel_tol=0.0, abs_tol=AVERAGE_TOLERANCE):
        problems["human_avg"] = f"{given} is not the mean {mean} of human_scores {scores}"
    return given
