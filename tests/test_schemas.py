"""The normalized schemas: conforming, documentation in step with the code."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data.schemas import RATINGS_SCHEMA, SchemaError, conform, schema_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "DATA.md"


def test_docs_list_every_schema_as_the_code_defines_it() -> None:
    assert schema_markdown() in DOC.read_text(), "regenerate docs/DATA.md: python -m data.schemas"


def test_conform_orders_and_casts_columns() -> None:
    frame = pl.DataFrame({name: [None] for name in reversed(RATINGS_SCHEMA)}).with_columns(
        pl.lit("7").alias("overall_rating"), pl.lit(3).alias("source_row")
    )
    conformed = conform(frame, RATINGS_SCHEMA, where="x.parquet")
    assert conformed.schema == pl.Schema(RATINGS_SCHEMA)
    assert conformed["overall_rating"].to_list() == [7.0]


def test_conform_names_the_missing_columns() -> None:
    frame = pl.DataFrame({"image_id": ["a"]})
    with pytest.raises(SchemaError, match=r"x\.parquet: missing column\(s\) prompt_id, prompt"):
        conform(frame, RATINGS_SCHEMA, where="x.parquet")


def test_conform_refuses_a_value_that_does_not_cast() -> None:
    frame = pl.DataFrame({name: [None] for name in RATINGS_SCHEMA}).with_columns(pl.lit("abc").alias("rank"))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        conform(frame, RATINGS_SCHEMA, where="x.parquet")
