"""Ingest on bad input: every bad row quarantined with file, row, field and reason; nothing lost."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tasks.ingest import ingest_ratings
from tests.factories import imagerewarddb_root, webp_bytes


def test_each_kind_of_bad_row_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    rows = [
        {"image_id": "good-1", "prompt_id": "p1"},
        {"image_id": "good-2", "prompt_id": "p1"},
        {"image_id": "corrupt", "prompt_id": "p1"},
        {"image_id": "missing", "prompt_id": "p1"},
        {"image_id": "too-high", "prompt_id": "p2", "fidelity_rating": 9.0},
        {"image_id": "nan", "prompt_id": "p2", "overall_rating": float("nan")},
        {"image_id": "empty-prompt", "prompt_id": "p3", "prompt": "   "},
        {"image_id": "good-1", "prompt_id": "p4"},  # duplicate id
    ]
    images = {"corrupt": b"RIFF\x00\x00\x00\x00WEBPnot really", "missing": b""}
    root = imagerewarddb_root(tmp_path / "irdb", rows, image_bytes=images)
    result = ingest_ratings(root, split="train", root=tmp_path / "art")

    assert result.rows_in == 8 and result.rows_kept == 2 and result.rows_rejected == 6
    kept = result.read()
    assert sorted(kept["image_id"]) == ["good-1", "good-2"]
    rejects = result.read("rejects")
    by_row = {row["source_row"]: row for row in rejects.iter_rows(named=True)}
    metadata = str((root / "metadata-train.parquet").resolve())
    assert {row["source_file"] for row in by_row.values()} == {metadata}
    assert by_row[2]["field"] == "image_uri" and "corrupt" in by_row[2]["reason"]
    assert by_row[3]["field"] == "image_uri" and "missing.webp" in by_row[3]["reason"]
    assert by_row[4]["field"] == "fidelity_rating" and "outside [1.0, 7.0]" in by_row[4]["reason"]
    assert by_row[5]["field"] == "overall_rating" and by_row[5]["reason"] == "overall_rating is NaN"
    assert by_row[6]["field"] == "prompt" and by_row[6]["reason"] == "prompt is empty"
    assert (
        by_row[7]["field"] == "image_id"
        and "first seen in" in by_row[7]["reason"]
        and "row 0" in by_row[7]["reason"]
    )


def test_a_truncated_image_passes_the_header_check_but_not_the_decode_check(tmp_path: Path) -> None:
    full = webp_bytes((10, 200, 30), size=64)
    truncated = full[: len(full) // 2]
    root = imagerewarddb_root(
        tmp_path / "irdb", [{"image_id": "t"}, {"image_id": "ok"}], image_bytes={"t": truncated}
    )
    header = ingest_ratings(root, image_check="header", root=tmp_path / "art")
    decode = ingest_ratings(root, image_check="decode", root=tmp_path / "art")
    assert header.key != decode.key
    assert decode.rows_rejected == 1 and decode.read("rejects")["record_id"].to_list() == ["t"]
    assert "cannot decode" in decode.read("rejects")["reason"][0]


def test_a_missing_column_names_file_and_column(tmp_path: Path) -> None:
    root = imagerewarddb_root(tmp_path / "irdb", [{"image_id": "a"}])
    metadata = root / "metadata-train.parquet"
    pl.read_parquet(metadata).drop("prompt").write_parquet(metadata)
    with pytest.raises(Exception, match=r"metadata-train\.parquet.*prompt|prompt.*metadata-train\.parquet"):
        ingest_ratings(root, root=tmp_path / "art")


def test_an_empty_dataset_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = imagerewarddb_root(tmp_path / "irdb", [{"image_id": "a"}])
    metadata = root / "metadata-train.parquet"
    pl.read_parquet(metadata).clear().write_parquet(metadata)
    with pytest.raises(Exception, match=r"metadata-train\.parquet.*no rows"):
        ingest_ratings(root, root=tmp_path / "art")
