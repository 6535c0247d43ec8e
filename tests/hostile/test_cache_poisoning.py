"""Case 4: bad text cannot poison the stage cache, and a damaged cached table is recomputed.

The battery's inputs: a metadata Parquet whose string ``prompt`` column holds bytes that are not
UTF-8 (written by a tool that does not validate), and a cached stage table truncated on disk with its
manifest left intact."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.readers import read_imagereward
from tasks.dedup import dedup
from tasks.ingest import ingest_benchmark, ingest_ratings
from tests.factories import imagerewarddb_root

pytestmark = pytest.mark.hostile_case(4)


def poison_prompts(metadata: Path, bad_rows: dict[int, bytes]) -> None:
    """Rewrite ``prompt`` as a string column whose ``bad_rows`` hold raw (invalid UTF-8) bytes."""
    table = pq.read_table(metadata)
    prompts = [value.encode() for value in table.column("prompt").to_pylist()]
    for row, raw in bad_rows.items():
        prompts[row] = raw
    column = pa.array(prompts, type=pa.binary()).view(pa.string())
    pq.write_table(table.set_column(table.column_names.index("prompt"), "prompt", column), metadata)


def test_invalid_utf8_prompt_is_a_reject(tmp_path: Path) -> None:
    root = imagerewarddb_root(
        tmp_path / "db", [{"image_id": f"i{n}", "prompt_id": f"p{n}"} for n in range(3)]
    )
    poison_prompts(root / "metadata-train.parquet", {1: b"caf\xe9 \xff\xfe"})
    result = read_imagereward(root)
    assert result.table["image_id"].to_list() == ["i0", "i2"]
    assert result.rejects.select("source_row", "record_id", "field", "reason").rows() == [
        (1, "i1", "prompt", "prompt: not valid UTF-8")
    ]
    # the stage's tables read back, and the next stage (dedup) runs on them
    art = tmp_path / "art"
    ingested = ingest_ratings(root, root=art)
    assert (ingested.rows_in, ingested.rows_kept, ingested.rows_rejected) == (3, 2, 1)
    assert pl.read_parquet(ingested.path)["prompt"].to_list() == ["two red circles"] * 2
    benchmark = tmp_path / "mj" / "alignment" / "benchmark" / "actions"
    benchmark.mkdir(parents=True)
    (benchmark / "actions_test.json").write_text(
        '[{"id": 0, "caption": "a cat", "image0": "a.jpg", "image1": "b.jpg", "label": 0}]'
    )
    deduped = dedup(ingested.path, ingest_benchmark(tmp_path / "mj", root=art).path, root=art)
    assert deduped.rows_kept == 2


def test_a_truncated_cached_table_is_recomputed(tmp_path: Path) -> None:
    root = imagerewarddb_root(tmp_path / "db", [{"image_id": f"i{n}"} for n in range(4)])
    art = tmp_path / "art"
    first = ingest_ratings(root, root=art)
    table = Path(first.path)
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])  # the manifest stays intact
    second = ingest_ratings(root, root=art)
    assert not second.cached and second.key == first.key
    assert pl.read_parquet(second.path).height == 4
    assert ingest_ratings(root, root=art).cached  # now intact again: reused
    # same size, different content (a flipped byte in the middle): the recorded digest catches it
    data = bytearray(Path(second.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(second.path).write_bytes(bytes(data))
    assert not ingest_ratings(root, root=art).cached
