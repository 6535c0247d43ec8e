"""Case 1: an image path in metadata never leaves its dataset root (or the ``image_root`` given).

Each test writes a real secret file outside the dataset, points a metadata row at it (``../``,
an absolute path or a symlink inside the dataset) and checks that the row is a reject with reason
"image path outside the dataset root", that no kept row references the secret, and that the rows
still balance (kept source rows + rejects = rows in)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from data.readers import (
    read_imagereward,
    read_mjbench,
    read_smid,
    read_tifa,
    read_unsafe_diffusion,
    read_unsafebench,
)
from data.readers.common import ReadResult
from tests.factories import imagerewarddb_root, webp_bytes

pytestmark = pytest.mark.hostile_case(1)

#: The reject reason, word for word as the issue asks for it.
OUTSIDE_ROOT = "image path outside the dataset root"

SECRET = webp_bytes((1, 2, 3))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A readable image outside every dataset root of these tests."""
    path = tmp_path / "outside" / "secret.webp"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def outside_rejects(result: ReadResult) -> pl.DataFrame:
    return result.rejects.filter(pl.col("reason").str.contains(OUTSIDE_ROOT, literal=True))


def assert_refused(result: ReadResult, rows_in: int, rejected_rows: list[int], field: str) -> None:
    rejected = outside_rejects(result)
    assert sorted(rejected["source_row"].to_list()) == rejected_rows
    assert set(rejected["field"]) == {field}
    assert all(reason.startswith(f"{field}: {OUTSIDE_ROOT}: ") for reason in rejected["reason"])
    assert result.rows_in == rows_in
    kept = set(result.table["source_row"].to_list())
    assert len(kept) + result.rejects.height == rows_in and not kept & set(rejected_rows)
    uri_columns = [name for name in result.table.columns if name.endswith("_uri")]
    for column in uri_columns:
        assert not any("secret" in uri or "passwd" in uri for uri in result.table[column].to_list())


def test_imagereward_metadata_dot_dot_absolute_and_symlink(tmp_path: Path, secret: Path) -> None:
    root = imagerewarddb_root(tmp_path / "db", [{"image_id": f"img{i}"} for i in range(5)])
    (root / "images" / "train" / "link.webp").symlink_to(secret)
    metadata = root / "metadata-train.parquet"
    frame = pl.read_parquet(metadata)
    hostile = [
        "../../../../etc/passwd",
        "../outside/secret.webp",  # what reached training pairs on 97cede7
        str(secret),  # absolute path in metadata
        "images/train/link.webp",  # a symlink inside the dataset pointing out of it
    ]
    frame = frame.with_columns(
        pl.Series("image_path", hostile + frame["image_path"].to_list()[4:], dtype=pl.String)
    )
    frame.write_parquet(metadata)
    result = read_imagereward(root)
    assert_refused(result, 5, [0, 1, 2, 3], "image_path")
    assert result.table["image_id"].to_list() == ["img4"]


def test_imagereward_image_root_is_the_boundary(tmp_path: Path, secret: Path) -> None:
    """With ``image_root`` given, the images must lie under it (not under the metadata's folder)."""
    root = imagerewarddb_root(tmp_path / "db", [{"image_id": "a"}, {"image_id": "b"}])
    frame = pl.read_parquet(root / "metadata-train.parquet")
    frame = frame.with_columns(pl.Series("image_path", ["../db/images/train/train_1/a.webp", "x/b.webp"]))
    frame.write_parquet(root / "metadata-train.parquet")
    result = read_imagereward(root, image_root=root / "images")
    assert_refused(result, 2, [0], "image_path")


def test_imagereward_test_json_rejects_the_whole_item(tmp_path: Path, secret: Path) -> None:
    items = [
        {"id": "1", "prompt": "p", "generations": ["a.webp", "../outside/secret.webp"], "ranking": [1, 2]},
        {"id": "2", "prompt": "q", "generations": ["b.webp", "c.webp"], "ranking": [1, 2]},
    ]
    folder = tmp_path / "ir"
    folder.mkdir()
    (folder / "test.json").write_text(json.dumps(items))
    result = read_imagereward(folder / "test.json")
    assert_refused(result, 2, [0], "generations")
    assert result.table["prompt_id"].to_list() == ["2", "2"]


def test_mjbench_json_tree(tmp_path: Path, secret: Path) -> None:
    category = tmp_path / "mj" / "alignment" / "benchmark" / "actions"
    category.mkdir(parents=True)
    items = [
        {
            "id": 0,
            "caption": "c0",
            "image0": "a.jpg",
            "image1": "../../../../outside/secret.webp",
            "label": 0,
        },
        {"id": 1, "caption": "c1", "image0": str(secret), "image1": "b.jpg", "label": 1},
        {"id": 2, "caption": "c2", "image0": "a.jpg", "image1": "b.jpg", "label": 1},
    ]
    (category / "actions_test.json").write_text(json.dumps(items))
    result = read_mjbench(tmp_path / "mj")
    rejected = outside_rejects(result)
    assert rejected.select("source_row", "field").rows() == [(0, "image1"), (1, "image0")]
    assert result.table["caption"].to_list() == ["c2"]
    assert result.rows_in == 3


def test_mjbench_parquet_reads_embedded_bytes_never_the_path(tmp_path: Path) -> None:
    """The HF Parquet release embeds the images: a hostile ``path`` inside the struct is never read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data.images import read_image_bytes

    image = {"bytes": webp_bytes((9, 9, 9)), "path": "../../../../etc/passwd"}
    table = pa.Table.from_pylist([{"caption": "c", "image0": image, "image1": image, "label": 0}])
    pq.write_table(table, tmp_path / "alignment-00000.parquet")
    result = read_mjbench(tmp_path / "alignment-00000.parquet")
    uri = result.table["image0_uri"][0]
    assert uri.startswith(str((tmp_path / "alignment-00000.parquet").resolve()) + "::")
    assert read_image_bytes(uri) == image["bytes"]


def test_unsafebench_json(tmp_path: Path, secret: Path) -> None:
    items = [
        {"safety_label": "Safe", "category": "c", "source": "s", "path": "..", "label": 1, "prompt": ""},
        {
            "safety_label": "Safe",
            "category": "c",
            "source": "s",
            "path": "/a/ok.png",
            "label": 1,
            "prompt": "",
        },
    ]
    path = tmp_path / "ub" / "Unsafebench_train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(items))
    assert_refused(read_unsafebench(path, image_root=tmp_path / "ub" / "img"), 2, [0], "path")
    # without image_root the recorded path is relative to the JSON's folder: absolute ones are outside
    items[0]["path"] = str(secret)
    items[1]["path"] = "img/ok.png"
    path.write_text(json.dumps(items))
    result = read_unsafebench(path)
    assert_refused(result, 2, [0], "path")
    assert result.table["image_uri"].to_list() == [str(path.parent / "img" / "ok.png")]


def test_smid_json_and_norms(tmp_path: Path, secret: Path) -> None:
    folder = tmp_path / "smid"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "evil.jpg").symlink_to(secret)
    items = [
        {"path": str(secret), "label": 1, "prompt": ""},
        {"path": "img/b1.jpg", "label": 0, "prompt": ""},
    ]
    (folder / "smid_test.json").write_text(json.dumps(items))
    assert_refused(read_smid(folder / "smid_test.json"), 2, [0], "path")
    items[0]["path"] = "/authors/machine/evil.jpg"  # basename only, but a symlink out of image_root
    (folder / "smid_test.json").write_text(json.dumps(items))
    assert_refused(read_smid(folder / "smid_test.json", image_root=folder / "img"), 2, [0], "path")
    (folder / "norms.csv").write_text("img_name,moral_mean\n../../outside/secret,1.0\nb1,4.0\n")
    assert_refused(read_smid(folder / "norms.csv", image_suffix=".webp"), 2, [0], "img_name")


def test_unsafe_diffusion(tmp_path: Path, secret: Path) -> None:
    folder = tmp_path / "ud"
    folder.mkdir()
    (folder / "labels.csv").write_text(f"final_label,image\n1,{secret}\n0,ok.png\n0,../ud/fine.png\n")
    result = read_unsafe_diffusion(folder / "labels.csv", image_column="image")
    assert_refused(result, 3, [0], "image")


def test_tifa(tmp_path: Path, secret: Path) -> None:
    folder = tmp_path / "tifa"
    folder.mkdir()
    entries = {
        "t1_sd": {"text_id": "t1", "image_path": "../outside/secret.webp", "text": "a"},
        "t1_dalle": {"text_id": "t1", "image_path": "sub/t1.png", "text": "a"},
    }
    (folder / "tifa160.json").write_text(json.dumps(entries))
    result = read_tifa(folder / "tifa160.json")
    assert_refused(result, 2, [0], "image_path")
    assert os.path.basename(result.table["image_uri"][0]) == "t1.png"
