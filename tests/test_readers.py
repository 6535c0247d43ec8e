"""Dataset readers: real published files (via ``real_data``) and small synthetic layouts in tmp_path."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data.images import clear_caches, open_image
from data.readers import ReaderError, benchmark_captions, read_imagereward, read_mjbench, read_unsafebench
from data.readers import common as readers_common
from data.schemas import BENCHMARK_PAIRS_SCHEMA, RATINGS_SCHEMA, REJECTS_SCHEMA, SAFETY_SCHEMA

RATINGS = ("overall_rating", "image_text_alignment_rating", "fidelity_rating")


@pytest.fixture(autouse=True)
def _fresh_image_caches():
    """``open_image`` caches Parquet columns and zips by path; tmp paths are reused across tests."""
    clear_caches()
    yield
    clear_caches()


def image_bytes(color: tuple[int, int, int], fmt: str = "WEBP") -> bytes:
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.new("RGB", (8, 6), color).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixel(uri: str) -> tuple[int, int, int]:
    return open_image(uri).getpixel((3, 3))


def assert_schema(frame: pl.DataFrame, schema: dict) -> None:
    assert dict(frame.schema) == schema


def assert_accounted(result, rows_in: int) -> None:
    """Every input row is in the table or in the rejects, never both, never lost."""
    kept_rows = set(result.table["source_row"].to_list())
    rejected_rows = set(result.rejects["source_row"].to_list())
    assert not kept_rows & rejected_rows
    assert len(kept_rows) + result.rejects.height == rows_in == result.rows_in
    assert kept_rows | rejected_rows == set(range(rows_in))


def write_json(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


# --------------------------------------------------------------------------------------------
# Real data


@pytest.mark.real_data
def test_imagereward_test_json_real(real_data: Path):
    path = real_data / "imagereward" / "test.json"
    items = json.loads(path.read_text())
    result = read_imagereward(path)
    table = result.table
    assert_schema(table, RATINGS_SCHEMA)
    assert result.rejects.is_empty()
    assert table["prompt_id"].n_unique() == 466 == len(items)
    assert table.height == sum(len(item["generations"]) for item in items)
    assert result.rows_in == len(items)
    expected = [
        (item["id"], gen, rank)
        for item in items
        for gen, rank in zip(item["generations"], item["ranking"], strict=True)
    ]
    got = list(zip(table["prompt_id"], table["image_uri"], table["rank"], strict=True))
    assert [(pid, uri.removeprefix(f"{path.parent}/"), rank) for pid, uri, rank in got] == expected
    assert table["image_id"].to_list() == [Path(gen).stem for _, gen, _ in expected]
    assert set(table["split"]) == {"test"}
    assert table.select(pl.col(RATINGS).is_null().all()).row(0) == (True, True, True)
    assert set(table["source_file"]) == {str(path.resolve())}


def _manifest_rows(real_data: Path, prefix: str) -> dict[str, int]:
    rows = {}
    for line in (real_data / "MANIFEST.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith(prefix) and cells[4].isdigit():
            rows[cells[0]] = int(cells[4])
    return rows


@pytest.mark.real_data
def test_mjbench_alignment_counts_per_file_match_manifest(real_data: Path):
    expected = _manifest_rows(real_data, "mjbench/alignment/")
    assert len(expected) == 25
    for name, count in expected.items():
        result = read_mjbench(real_data / name)
        assert result.table.height == count, name
        assert result.rejects.is_empty(), name
        assert_schema(result.table, BENCHMARK_PAIRS_SCHEMA)
        assert set(result.table["subset"]) == {"alignment"}
        assert set(result.table["category"]) == {Path(name).parent.name}


@pytest.mark.real_data
def test_mjbench_combined_files_equal_union_of_per_source_files(real_data: Path):
    root = real_data / "mjbench"
    combined = read_mjbench(root, subsets=["alignment"])
    by_source = read_mjbench(root, subsets=["alignment"], alignment_files="by_source")
    columns = ["item_id", "subset", "category", "source", "caption", "image0_uri", "image1_uri", "label"]
    assert combined.table["item_id"].is_unique().all()
    # one comparison can be filed under several categories with the same dataset id
    dataset_id = pl.col("item_id").str.splitn("-", 3).struct.field("field_2")
    per_item = combined.table.group_by(dataset_id).agg(pl.col("caption", "label", "source").n_unique())
    assert per_item.height < combined.table.height
    assert per_item.select(pl.exclude("field_2").max()).row(0) == (1, 1, 1)
    assert combined.table.height == sum(
        count
        for name, count in _manifest_rows(real_data, "mjbench/alignment/").items()
        if Path(name).stem == f"{Path(name).parent.name}_test"
    )
    assert (
        combined.table.select(columns).sort("item_id").equals(by_source.table.select(columns).sort("item_id"))
    )


@pytest.mark.real_data
def test_mjbench_imagereward_captions_occur_in_test_json(real_data: Path):
    alignment = read_mjbench(real_data / "mjbench", subsets=["alignment"]).table
    captions = benchmark_captions(alignment.filter(pl.col("source") == "imagereward"))
    assert captions.len() == 129 == captions.n_unique()
    prompts = read_imagereward(real_data / "imagereward" / "test.json").table["prompt"]
    assert captions.is_in(prompts.implode()).all()
    raw_prompts = {
        item["prompt"] for item in json.loads((real_data / "imagereward" / "test.json").read_text())
    }
    assert set(captions) <= raw_prompts


@pytest.mark.real_data
def test_mjbench_quality_human_images_and_labels(real_data: Path):
    path = real_data / "mjbench" / "quality" / "human" / "captions_human.json"
    items = json.loads(path.read_text())
    result = read_mjbench(path)
    table = result.table
    assert table.height == 100 and result.rejects.is_empty()
    assert table["label"].to_list() == [1 - item["label_0"] for item in items]
    assert set(table["label"]) == {0}
    uris = table["image0_uri"].to_list() + table["image1_uri"].to_list()
    assert len(set(uris)) == 200
    assert [Path(uri).name for uri in table["image1_uri"]] == [item["image_1"] for item in items]
    for uri in uris:
        assert Path(uri).is_file() and Path(uri).parent.name == "examples_human"
        assert open_image(uri).size[0] > 0


@pytest.mark.real_data
def test_mjbench_quality_multi_image_items_give_one_pair_per_compared_image(real_data: Path):
    quality = read_mjbench(real_data / "mjbench", subsets=["quality"])
    assert quality.rejects.is_empty()
    for category, file in [
        ("mpii", "mpii/captions_mpii.json"),
        ("blur_dataset", "blur_dataset/captions_blur.json"),
    ]:
        items = json.loads((real_data / "mjbench" / "quality" / file).read_text())
        compared = sum(
            sum(1 for key in item if re.fullmatch(r"image_[1-9]|.*_blur_image", key)) for item in items
        )
        rows = quality.table.filter(pl.col("category") == category)
        assert rows.height == compared
        assert rows["source_row"].n_unique() == len(items)
    blur = quality.table.filter(pl.col("category") == "blur_dataset").row(0, named=True)
    assert blur["item_id"] == "quality-blur_dataset-0-defocused" and blur["image0_uri"].endswith("_S.jpg")


@pytest.mark.real_data
def test_unsafebench_json_real(real_data: Path):
    path = real_data / "llava_reward" / "Unsafebench" / "Unsafebench_train.json"
    result = read_unsafebench(path, image_root="/images")
    table = result.table
    assert_schema(table, SAFETY_SCHEMA)
    assert result.rejects.is_empty()
    assert table.height == 8109
    assert table.filter(pl.col("label") == 1).height == 4838
    assert table.filter(pl.col("label") == 0).height == 3271
    assert (table["label"] == (table["safety_label"] == "Safe").cast(pl.Int8)).all()
    assert set(table["split"]) == {"train"}
    items = json.loads(path.read_text())
    assert table["image_uri"].to_list() == [f"/images/{Path(item['path']).name}" for item in items]
    assert table["item_id"].is_unique().all()
    # without image_root the authors' absolute paths lie outside the dataset: every row is a reject
    unrooted = read_unsafebench(path)
    assert unrooted.table.is_empty() and unrooted.rejects.height == len(items)
    assert unrooted.rejects["reason"][0] == f"path: image path outside the dataset root: {items[0]['path']!r}"


# --------------------------------------------------------------------------------------------
# Synthetic ImageRewardDB


def _metadata_frame(image_paths: list[str]) -> pl.DataFrame:
    count = len(image_paths)
    return pl.DataFrame(
        {
            "image_path": image_paths,
            "prompt_id": [f"{index // 2:06d}-0001" for index in range(count)],
            "prompt": [f"prompt {index // 2}" for index in range(count)],
            "classification": ["People"] * count,
            "image_amount_in_total": [2] * count,
            "rank": [index % 2 + 1 for index in range(count)],
            **{
                name: pl.Series([(index * (k + 2)) % 7 + 1 for index in range(count)], dtype=pl.Int8)
                for k, name in enumerate(RATINGS)
            },
        }
    )


def test_imagereward_published_layout_resolves_extracted_zipped_and_missing(tmp_path: Path):
    root = tmp_path / "ImageRewardDB"
    colors = {f"uuid-{index}": (index * 40, 255 - index * 30, 7 * index) for index in range(6)}
    names = list(colors)
    (root / "images" / "train").mkdir(parents=True)
    # train_1.zip: top-level members; train_2.zip: members nested in train_2/; train_3: extracted.
    with zipfile.ZipFile(root / "images" / "train" / "train_1.zip", "w") as archive:
        archive.writestr(f"{names[0]}.webp", image_bytes(colors[names[0]]))
        archive.writestr(f"{names[1]}.webp", image_bytes(colors[names[1]]))
        archive.writestr("train_1.json", "{}")
    with zipfile.ZipFile(root / "images" / "train" / "train_2.zip", "w") as archive:
        archive.writestr(f"train_2/{names[2]}.webp", image_bytes(colors[names[2]]))
        archive.writestr(f"other/{names[3]}.webp", image_bytes(colors[names[3]]))  # wrong folder
    extracted = root / "images" / "train" / "train_3"
    extracted.mkdir()
    (extracted / f"{names[4]}.webp").write_bytes(image_bytes(colors[names[4]]))
    folders = ["train_1", "train_1", "train_2", "train_2", "train_3", "train_3"]
    paths = [f"images/train/{folder}/{name}.webp" for folder, name in zip(folders, names, strict=True)]
    metadata = _metadata_frame(paths)
    metadata.write_parquet(root / "metadata-train.parquet")
    _metadata_frame(paths[:2]).write_parquet(root / "metadata-validation.parquet")

    result = read_imagereward(root, split="train")
    table = result.table
    assert_schema(table, RATINGS_SCHEMA)
    assert result.rejects.is_empty() and table.height == 6
    uris = table["image_uri"].to_list()
    zips = root.resolve() / "images" / "train"
    assert uris[0] == f"{zips}/train_1.zip::{names[0]}.webp"
    assert uris[2] == f"{zips}/train_2.zip::train_2/{names[2]}.webp"
    assert uris[3] == f"{root.resolve()}/{paths[3]}"  # not in the expected zip folder: expected path
    assert uris[4] == f"{root.resolve()}/{paths[4]}"
    assert uris[5] == f"{root.resolve()}/{paths[5]}" and not Path(uris[5]).exists()
    for index in (0, 1, 2, 4):
        assert pixel(uris[index]) == colors[names[index]]
    assert table["image_id"].to_list() == names
    for name in RATINGS:
        assert table[name].to_list() == [float(value) for value in metadata[name]]
    assert table["rank"].to_list() == metadata["rank"].to_list()
    assert table["prompt_id"].to_list() == metadata["prompt_id"].to_list()
    assert set(table["split"]) == {"train"} and set(table["classification"]) == {"People"}
    assert table["source_row"].to_list() == list(range(6))

    both = read_imagereward(root)
    assert both.table.group_by("split").len().sort("split").rows() == [("train", 6), ("validation", 2)]
    single = read_imagereward(root / "metadata-validation.parquet")
    assert single.table["image_uri"].to_list() == uris[:2]


def test_imagereward_extracted_file_wins_over_zip_member(tmp_path: Path):
    folder = tmp_path / "images" / "test" / "test_1"
    folder.mkdir(parents=True)
    (folder / "a.webp").write_bytes(image_bytes((1, 2, 3)))
    with zipfile.ZipFile(folder.with_name("test_1.zip"), "w") as archive:
        archive.writestr("a.webp", image_bytes((9, 9, 9)))
        archive.writestr("b.webp", image_bytes((4, 5, 6)))
    _metadata_frame(["images/test/test_1/a.webp", "images/test/test_1/b.webp"]).write_parquet(
        tmp_path / "metadata-test.parquet"
    )
    uris = read_imagereward(tmp_path).table["image_uri"].to_list()
    assert uris == [str(folder.resolve() / "a.webp"), f"{folder.resolve()}.zip::b.webp"]
    assert [pixel(uri) for uri in uris] == [(1, 2, 3), (4, 5, 6)]


def test_imagereward_image_root_parameter(tmp_path: Path):
    _metadata_frame(["images/train/train_1/x.webp"]).write_parquet(tmp_path / "metadata-train.parquet")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "images" / "train" / "train_1").mkdir(parents=True)
    (elsewhere / "images" / "train" / "train_1" / "x.webp").write_bytes(image_bytes((5, 5, 5)))
    uri = read_imagereward(tmp_path, image_root=elsewhere).table["image_uri"][0]
    assert uri == str(elsewhere.resolve() / "images/train/train_1/x.webp") and pixel(uri) == (5, 5, 5)


def _write_shard(path: Path, rows: list[dict], image_type=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    if image_type is not None:
        table = table.set_column(
            table.schema.get_field_index("image"), "image", pa.array([r["image"] for r in rows], image_type)
        )
    pq.write_table(table, path)
    return path


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def test_imagereward_hf_shards_embedded_images(tmp_path: Path, monkeypatch):
    colors = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    rows = [
        {
            "image": {"bytes": image_bytes(color), "path": path},
            "prompt_id": f"00000{index}-0001",
            "prompt": f"a prompt {index}",
            "classification": "Arts",
            "image_amount_in_total": 3,
            "rank": index + 1,
            "overall_rating": index + 2,
            "image_text_alignment_rating": 3,
            "fidelity_rating": 4,
        }
        for index, (color, path) in enumerate(
            zip(colors, ["abc-uuid.webp", None, "dir/def.webp"], strict=True)
        )
    ]
    data = tmp_path / "data"
    train = _write_shard(data / "train-00000-of-00002.parquet", rows[:2], IMAGE_STRUCT)
    _write_shard(data / "test-00000-of-00001.parquet", rows[2:], IMAGE_STRUCT)

    requested: list[list[str]] = []

    class SpyParquetFile(pq.ParquetFile):
        def read(self, columns=None, **kwargs):
            requested.append(list(columns or ["<all>"]))
            return super().read(columns=columns, **kwargs)

    monkeypatch.setattr(readers_common.pq, "ParquetFile", SpyParquetFile)
    result = read_imagereward(tmp_path)
    monkeypatch.undo()
    assert requested and all("image" not in columns and "<all>" not in columns for columns in requested)
    assert all("image.path" in columns for columns in requested)

    table = result.table.sort("split", descending=True, maintain_order=True)
    assert_schema(result.table, RATINGS_SCHEMA)
    assert table["split"].to_list() == ["train", "train", "test"]
    assert table["image_id"].to_list() == ["abc-uuid", f"{train.stem}-1", "def"]
    assert table["image_uri"][0] == f"{train.resolve()}::image[0]"
    assert [pixel(uri) for uri in table["image_uri"]] == colors
    assert table["overall_rating"].to_list() == [2.0, 3.0, 4.0]

    only_test = read_imagereward(data, split="test")
    assert only_test.table.height == 1 and only_test.table["image_id"][0] == "def"


def test_imagereward_test_json_rejects_and_accounting(tmp_path: Path):
    items = [
        {
            "id": "000001-0001",
            "prompt": "ok",
            "generations": ["part/a.webp", "part/b.webp"],
            "ranking": [2, 1],
        },
        {
            "id": "000002-0001",
            "prompt": "short ranking",
            "generations": ["part/c.webp", "part/d.webp"],
            "ranking": [1],
        },
        {"id": "000003-0001", "prompt": 42, "generations": ["part/e.webp"], "ranking": ["x"]},
        "not an object",
        {
            "id": "000005-0001",
            "prompt": "tied",
            "generations": ["part/f.webp", "part/g.webp"],
            "ranking": [1, 1],
        },
    ]
    path = write_json(tmp_path / "test.json", items)
    result = read_imagereward(path, image_root="/imgs")
    assert_accounted(result, len(items))
    assert result.table["image_uri"].to_list() == [
        "/imgs/part/a.webp",
        "/imgs/part/b.webp",
        "/imgs/part/f.webp",
        "/imgs/part/g.webp",
    ]
    assert result.table["rank"].to_list() == [2, 1, 1, 1]
    assert_schema(result.rejects, REJECTS_SCHEMA)
    rejects = {row["source_row"]: row for row in result.rejects.iter_rows(named=True)}
    assert rejects[1]["field"] == "ranking" and "1 ranks for 2 generations" in rejects[1]["reason"]
    assert rejects[1]["record_id"] == "000002-0001" and rejects[1]["source_file"] == str(path.resolve())
    assert rejects[2]["field"] == "prompt,ranking"
    assert (
        "prompt: not a string: 42" in rejects[2]["reason"] and "not an integer: 'x'" in rejects[2]["reason"]
    )
    assert rejects[3]["field"] == "record" and set(result.rejects["stage"]) == {"read"}


def test_imagereward_unparsable_rating_is_rejected_nan_kept(tmp_path: Path):
    frame = _metadata_frame([f"images/train/train_1/{name}.webp" for name in "abcd"]).with_columns(
        overall_rating=pl.Series(["5", "abc", "NaN", None]),
        rank=pl.Series([1.0, 2.5, 3.0, 4.0]),
    )
    frame.write_parquet(tmp_path / "metadata-train.parquet")
    result = read_imagereward(tmp_path)
    assert_accounted(result, 4)
    assert result.table["image_id"].to_list() == ["a", "c", "d"]
    ratings = result.table["overall_rating"].to_list()
    assert ratings[0] == 5.0 and math.isnan(ratings[1]) and ratings[2] is None
    reject = result.rejects.row(0, named=True)
    assert reject["source_row"] == 1 and reject["record_id"] == "b"
    assert reject["field"] == "rank,overall_rating"
    assert (
        "overall_rating: not a number: 'abc'" in reject["reason"]
        and "rank: not an integer" in reject["reason"]
    )
    assert reject["source_file"] == str((tmp_path / "metadata-train.parquet").resolve())


def test_imagereward_wrong_typed_prompt_column_rejects_every_row(tmp_path: Path):
    _metadata_frame(["images/x/a.webp", "images/x/b.webp"]).with_columns(prompt=pl.lit(7)).write_parquet(
        tmp_path / "metadata-train.parquet"
    )
    result = read_imagereward(tmp_path)
    assert result.table.is_empty()
    assert result.rejects["field"].to_list() == ["prompt", "prompt"]
    assert result.rejects["reason"][0].startswith("prompt: not a string (Int32 column)")


# --------------------------------------------------------------------------------------------
# Synthetic MJ-Bench


def test_mjbench_hf_parquet(tmp_path: Path):
    colors = [((250, 0, 0), (0, 250, 0)), ((0, 0, 250), (250, 250, 0)), ((9, 9, 9), (99, 99, 99))]
    rows = [
        {
            "caption": f"caption {index}",
            "image0": {"bytes": image_bytes(first, "PNG"), "path": None},
            "image1": {"bytes": image_bytes(second, "PNG"), "path": None},
            "label": label,
            "info": info,
        }
        for index, ((first, second), label, info) in enumerate(
            zip(colors, [0, 1, 2], ['{"category": "human", "source": "x"}', "not json", None], strict=True)
        )
    ]
    alignment = _write_shard(tmp_path / "mj" / "alignment-00000-of-00001.parquet", rows, None)
    _write_shard(tmp_path / "mj" / "quality" / "train-00000.parquet", rows[:1], None)
    result = read_mjbench(tmp_path / "mj")
    assert_schema(result.table, BENCHMARK_PAIRS_SCHEMA)
    table = result.table.sort("subset", "source_row")
    assert table["subset"].to_list() == ["alignment", "alignment", "quality"]
    assert table["label"].to_list() == [0, 1, 0]
    assert table["category"].to_list() == ["human", None, "human"]
    assert table["source"].to_list() == ["x", None, "x"]
    assert table["item_id"][1] == f"alignment-{alignment.stem}-1"
    assert table["image1_uri"][1] == f"{alignment.resolve()}::image1[1]"
    assert [(pixel(a), pixel(b)) for a, b in zip(table["image0_uri"], table["image1_uri"], strict=True)] == [
        colors[0],
        colors[1],
        colors[0],
    ]
    reject = result.rejects.row(0, named=True)
    assert (reject["source_row"], reject["field"]) == (2, "label") and "not 0 or 1" in reject["reason"]
    assert reject["source_file"] == str(alignment.resolve())
    only_quality = read_mjbench(tmp_path / "mj", subsets=["quality"])
    assert only_quality.table.height == 1 and only_quality.rejects.is_empty()


def test_mjbench_json_tree_labels_images_and_rejects(tmp_path: Path):
    root = tmp_path / "MJ-Bench"
    quality = root / "quality" / "faces"
    (quality / "examples_faces").mkdir(parents=True)
    (quality / "examples_faces" / "a.jpg").write_bytes(image_bytes((1, 1, 1), "JPEG"))
    (quality / "b.jpg").write_bytes(image_bytes((2, 2, 2), "JPEG"))
    images = tmp_path / "images"
    images.mkdir()
    (images / "c.jpg").write_bytes(image_bytes((3, 3, 3), "JPEG"))
    captions = [
        {"caption": "one", "image_0": "a.jpg", "image_1": "b.jpg", "label_0": 1},
        {"caption": "two", "image_0": "b.jpg", "image_1": "c.jpg", "image_2": "a.jpg", "label_0": 0},
        {"caption": "three", "image_0": "a.jpg", "image_1": "z.jpg", "label_0": "yes"},
        {"caption": "four", "image_0": "a.jpg", "label_0": 1},
    ]
    write_json(quality / "captions_faces.json", captions)
    alignment = root / "alignment" / "benchmark" / "actions"
    write_json(
        alignment / "actions_test.json",
        [
            {
                "id": "pap_3",
                "source": "pick_a_pic",
                "caption": "cat",
                "image0": "p.jpg",
                "image1": "q.jpg",
                "label": 1,
            },
            {"id": "pap_4", "source": "pick_a_pic", "caption": "dog", "image0": "p.jpg", "image1": "q.jpg"},
        ],
    )
    write_json(
        alignment / "pap_actions_test.json",
        [
            {
                "id": 3,
                "source": "pick_a_pic",
                "caption": "cat",
                "image0": "p.jpg",
                "image1": "q.jpg",
                "label": 1,
            },
        ],
    )
    write_json(
        alignment / "hpdv2_actions_test_v2.json",
        [
            {
                "id": 8,
                "source": "hpdv2",
                "caption": "cow",
                "image0": "p.jpg",
                "image1": "q.jpg",
                "label": None,
            },
        ],
    )

    result = read_mjbench(root, image_root=images)
    assert_schema(result.table, BENCHMARK_PAIRS_SCHEMA)
    faces = result.table.filter(pl.col("subset") == "quality")
    assert faces["item_id"].to_list() == [
        "quality-faces-0",
        "quality-faces-1-image_1",
        "quality-faces-1-image_2",
    ]
    assert faces["label"].to_list() == [0, 1, 1]
    assert [Path(uri).relative_to(tmp_path).as_posix() for uri in faces["image1_uri"]] == [
        "MJ-Bench/quality/faces/b.jpg",
        "images/c.jpg",
        "MJ-Bench/quality/faces/examples_faces/a.jpg",
    ]
    assert [pixel(uri) for uri in faces["image1_uri"]] == [(2, 2, 2), (3, 3, 3), (1, 1, 1)]
    assert set(faces["category"]) == {"faces"}

    actions = result.table.filter(pl.col("subset") == "alignment")
    assert actions["item_id"].to_list() == ["alignment-actions-pap_3"]  # default: the combined file only
    assert actions["image0_uri"][0] == str(images.resolve() / "p.jpg")  # missing: image_root candidate
    rejects = {
        (Path(row["source_file"]).name, row["source_row"]): row
        for row in result.rejects.iter_rows(named=True)
    }
    assert set(rejects) == {("captions_faces.json", 2), ("captions_faces.json", 3), ("actions_test.json", 1)}
    assert rejects[("captions_faces.json", 2)]["field"] == "label_0"
    assert rejects[("captions_faces.json", 3)]["field"] == "image_1"
    assert rejects[("actions_test.json", 1)]["field"] == "label"
    assert rejects[("actions_test.json", 1)]["record_id"] == "alignment-actions-pap_4"
    assert rejects[("actions_test.json", 1)]["reason"] == "label: missing"

    by_source = read_mjbench(root, subsets=["alignment"], alignment_files="by_source")
    assert sorted(zip(by_source.table["item_id"], by_source.table["label"].to_list(), strict=True)) == [
        ("alignment-actions-hpdv2_new_8", None),
        ("alignment-actions-pap_3", 1),
    ]
    single = read_mjbench(quality / "captions_faces.json")
    assert_accounted(single, len(captions))


def test_benchmark_captions_unique_in_order():
    table = pl.DataFrame({"caption": ["b", "a", "b", None, "c"]})
    assert benchmark_captions(table).to_list() == ["b", "a", "c"]


# --------------------------------------------------------------------------------------------
# Synthetic UnsafeBench


def test_unsafebench_hf_parquet(tmp_path: Path):
    rows = [
        {
            "image": {"bytes": image_bytes((index * 50, 0, 0), "PNG"), "path": None},
            "safety_label": label,
            "category": "Violence",
            "source": "Lexica",
            "text": text,
        }
        for index, (label, text) in enumerate(
            [("Safe", "a"), ("Unsafe", None), ("Maybe", "c"), ("Unsafe", "d")]
        )
    ]
    train = _write_shard(tmp_path / "data" / "train-00000-of-00001.parquet", rows, IMAGE_STRUCT)
    _write_shard(tmp_path / "data" / "test-00000-of-00001.parquet", rows[:1], IMAGE_STRUCT)
    result = read_unsafebench(tmp_path, split="train")
    assert_schema(result.table, SAFETY_SCHEMA)
    assert_accounted(result, 4)
    table = result.table
    assert table["label"].to_list() == [1, 0, 0]
    assert table["prompt"].to_list() == ["a", "", "d"]
    assert set(table["split"]) == {"train"}
    assert [pixel(uri)[0] for uri in table["image_uri"]] == [0, 50, 150]
    assert table["item_id"][2] == f"{train.stem}-3"
    reject = result.rejects.row(0, named=True)
    assert (reject["source_row"], reject["field"]) == (2, "safety_label") and "'Maybe'" in reject["reason"]
    assert read_unsafebench(tmp_path).table.group_by("split").len().sort("split").rows() == [
        ("test", 1),
        ("train", 3),
    ]


def test_unsafebench_json_label_disagreement_is_rejected(tmp_path: Path):
    items = [
        {
            "safety_label": "Safe",
            "category": "Hate",
            "source": "Laion5B",
            "path": "/scr/x/0.jpg",
            "label": 1,
            "prompt": "p",
        },
        {
            "safety_label": "Safe",
            "category": "Hate",
            "source": "Laion5B",
            "path": "/scr/x/1.jpg",
            "label": 0,
            "prompt": "p",
        },
        {
            "safety_label": "Unsafe",
            "category": "Hate",
            "source": "Lexica",
            "path": "C:\\data\\2.jpg",
            "label": 0,
            "prompt": None,
        },
        {
            "safety_label": "unsafe",
            "category": "Hate",
            "source": "Lexica",
            "path": "/scr/x/3.jpg",
            "label": "0",
            "prompt": "",
        },
    ]
    path = write_json(tmp_path / "Unsafebench_test.json", items)
    result = read_unsafebench(path, image_root=tmp_path / "imgs")
    assert_accounted(result, 4)
    assert result.table["image_uri"].to_list() == [
        str((tmp_path / "imgs").resolve() / name) for name in ("0.jpg", "2.jpg")
    ]
    assert result.table["prompt"].to_list() == ["p", ""]
    assert set(result.table["split"]) == {"test"}
    rejects = result.rejects.sort("source_row")
    assert rejects["field"].to_list() == ["label", "safety_label"]
    assert "disagrees with safety_label 'Safe'" in rejects["reason"][0]
    assert rejects["record_id"].to_list() == ["Unsafebench_test-1", "Unsafebench_test-3"]
    # without image_root a recorded path is relative to the JSON's folder; an absolute one is outside it
    unrooted = read_unsafebench(path, split="validation")
    assert unrooted.table["image_uri"].to_list() == [str(path.parent / "C:\\data\\2.jpg")]
    assert set(unrooted.table["split"]) == {"validation"}
    assert unrooted.rejects.filter(pl.col("source_row") == 0)["field"].to_list() == ["path"]


# --------------------------------------------------------------------------------------------
# Dataset-level failures


def test_missing_file_names_the_path(tmp_path: Path):
    for reader in (read_imagereward, read_mjbench, read_unsafebench):
        with pytest.raises(ReaderError, match=re.escape(f"{tmp_path.resolve()}/nope.json: file not found")):
            reader(tmp_path / "nope.json")
    _metadata_frame(["a/b.webp"]).write_parquet(tmp_path / "metadata-train.parquet")
    with pytest.raises(ReaderError, match="metadata-validation.parquet: file not found"):
        read_imagereward(tmp_path, split="validation")


def test_missing_column_names_file_and_column(tmp_path: Path):
    path = tmp_path / "metadata-train.parquet"
    _metadata_frame(["a/b.webp"]).drop("fidelity_rating", "prompt").write_parquet(path)
    with pytest.raises(
        ReaderError, match=re.escape(f"{path.resolve()}: missing column(s) prompt, fidelity_rating")
    ):
        read_imagereward(tmp_path)
    shard = tmp_path / "shards" / "train-00000-of-00001.parquet"
    _write_shard(
        shard,
        [{"image": {"bytes": b"", "path": None}, "safety_label": "Safe", "category": "x", "source": "y"}],
    )
    with pytest.raises(ReaderError, match=re.escape(f"{shard.resolve()}: missing column(s) text")):
        read_unsafebench(shard)
    with pytest.raises(ReaderError, match="missing column\\(s\\) caption, image0, image1, label"):
        read_mjbench(shard, subsets=["safety"])


def test_empty_and_unreadable_files(tmp_path: Path):
    empty_json = write_json(tmp_path / "test.json", [])
    with pytest.raises(ReaderError, match=re.escape(f"{empty_json.resolve()}: no rows")):
        read_imagereward(empty_json)
    empty_parquet = tmp_path / "metadata-train.parquet"
    _metadata_frame([]).write_parquet(empty_parquet)
    with pytest.raises(ReaderError, match=re.escape(f"{empty_parquet.resolve()}: no rows")):
        read_imagereward(empty_parquet)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"caption": ')
    with pytest.raises(ReaderError, match=re.escape(f"{broken.resolve()}: not valid JSON")):
        read_unsafebench(broken)
    not_parquet = tmp_path / "data" / "train-00000-of-00001.parquet"
    not_parquet.parent.mkdir()
    not_parquet.write_bytes(b"not parquet at all")
    with pytest.raises(ReaderError, match=re.escape(f"{not_parquet.resolve()}: cannot read Parquet")):
        read_unsafebench(not_parquet)
    with pytest.raises(ReaderError, match="cannot tell the MJ-Bench subset"):
        read_mjbench(not_parquet)
