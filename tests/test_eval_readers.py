"""Evaluation-benchmark readers (TIFA160, SMID, Unsafe Diffusion): real published files via
``real_data`` and small synthetic files in tmp_path, including every error path."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import polars as pl
import pytest
from sklearn.model_selection import train_test_split

from data.readers.common import ReaderError
from data.readers.smid import SmidLabelRule, read_smid, read_smid_json, read_smid_norms
from data.readers.tifa import read_tifa
from data.readers.unsafe_diffusion import HoldoutSplit, read_unsafe_diffusion
from data.schemas import REJECTS_SCHEMA, SAFETY_SCHEMA, TIFA_SCHEMA


def assert_accounted(result, rows_in: int) -> None:
    """Every input row is in the table or in the rejects, once."""
    kept = result.table["source_row"].to_list()
    rejected = result.rejects["source_row"].to_list()
    assert sorted(kept + rejected) == list(range(rows_in))
    assert result.rows_in == rows_in


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def reasons(result) -> dict[int, tuple[str, str]]:
    return {
        row: (field, reason)
        for row, field, reason in result.rejects.select("source_row", "field", "reason").rows()
    }


# --------------------------------------------------------------------------------------------
# TIFA160


@pytest.mark.real_data
def test_tifa_real_human_annotations(real_data: Path, tmp_path: Path):
    path = real_data / "tifa" / "human_annotations.json"
    entries = json.loads(path.read_text())
    result = read_tifa(path, image_root=tmp_path)
    table = result.table
    assert dict(table.schema) == TIFA_SCHEMA
    assert result.rejects.is_empty() and table.height == 800 == len(entries)
    assert table["item_id"].to_list() == list(entries)
    assert table["source_row"].to_list() == list(range(800))
    for row in table.iter_rows(named=True):
        entry = entries[row["item_id"]]
        assert row["human_scores"] == entry["human_scores"]
        assert (
            row["human_avg"] == sum(entry["human_scores"]) / len(entry["human_scores"]) == entry["human_avg"]
        )
        assert f"{row['text_id']}_{row['model']}" == row["item_id"]
        assert row["prompt"] == entry["text"]
        assert row["image_uri"] == str(tmp_path.resolve() / entry["image_path"])
    per_text = table.group_by("text_id").agg(pl.col("model").sort())
    assert per_text.height == 160
    assert per_text["model"].list.len().unique().to_list() == [5]
    assert table["model"].n_unique() == 5


@pytest.mark.real_data
def test_tifa_real_t2v_metrics_listing(real_data: Path):
    """The t2v_metrics copy is the same object without scores: same items, null scores."""
    listing = read_tifa(real_data / "tifa160_t2v_metrics" / "tifa160.json")
    scored = read_tifa(real_data / "tifa" / "human_annotations.json")
    assert listing.rejects.is_empty() and listing.table.height == 800
    assert listing.table["human_avg"].null_count() == 800 == listing.table["human_scores"].null_count()
    columns = ["item_id", "text_id", "model", "prompt"]
    assert listing.table.select(columns).equals(scored.table.select(columns))


def test_tifa_synthetic_rejects_and_defaults(tmp_path: Path):
    entry = {
        "text_id": "t1",
        "image_path": "t1_sd.jpg",
        "text": "a cat",
        "human_scores": [4, 5],
        "human_avg": 4.5,
    }
    payload = {
        "t1_sd": entry,
        "t1_dalle": {**entry, "image_path": "t1_dalle.jpg", "human_avg": None},  # avg computed: 4.5
        "t2_sd": {**entry, "text_id": "t2", "human_scores": [3, 3, 4], "human_avg": 3.3333333333333335},
        "x_sd": {**entry, "text_id": "t3"},  # key does not start with text_id
        "t1_vq": {**entry, "human_scores": [4, 6], "human_avg": 5.0},  # score outside 1-5
        "t1_mini": {**entry, "human_avg": 4.0},  # not the mean
        "t1_ld": {key: value for key, value in entry.items() if key != "human_scores"},
        "t1_bad": [1, 2],
        "t1_": {**entry, "image_path": ""},  # empty model and empty image path
    }
    path = write_json(tmp_path / "human_annotations.json", payload)
    result = read_tifa(path)
    assert_accounted(result, len(payload))
    assert result.table["item_id"].to_list() == ["t1_sd", "t1_dalle", "t2_sd"]
    assert result.table["model"].to_list() == ["sd", "dalle", "sd"]
    assert result.table["human_avg"].to_list() == [4.5, 4.5, 10 / 3]
    assert result.table["image_uri"][0] == str(tmp_path.resolve() / "t1_sd.jpg")
    problems = reasons(result)
    assert problems[3] == ("key", "key: 'x_sd' is not '<text_id>_<model>' for text_id 't3'")
    assert problems[4][0] == "human_scores" and "score 6 outside 1-5" in problems[4][1]
    assert problems[5] == ("human_avg", "human_avg: 4.0 is not the mean 4.5 of human_scores [4, 5]")
    assert problems[6] == ("human_scores", "human_scores: missing")
    assert problems[7] == ("record", "record: not a JSON object: [1, 2]")
    assert problems[8][0] == "image_path,key"
    assert dict(result.rejects.schema) == REJECTS_SCHEMA
    assert set(result.rejects["record_id"]) == {"x_sd", "t1_vq", "t1_mini", "t1_ld", "t1_bad", "t1_"}


def test_tifa_errors(tmp_path: Path):
    with pytest.raises(ReaderError, match=re.escape(f"{tmp_path.resolve()}/missing.json: file not found")):
        read_tifa(tmp_path / "missing.json")
    as_list = write_json(tmp_path / "list.json", [{"text_id": "t"}])
    with pytest.raises(ReaderError, match=re.escape(f"{as_list.resolve()}: expected a JSON object keyed")):
        read_tifa(as_list)
    empty = write_json(tmp_path / "empty.json", {})
    with pytest.raises(ReaderError, match=re.escape(f"{empty.resolve()}: no rows")):
        read_tifa(empty)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ReaderError, match=re.escape(f"{broken.resolve()}: not valid JSON")):
        read_tifa(broken)


# --------------------------------------------------------------------------------------------
# SMID


@pytest.mark.real_data
def test_smid_real_test_list(real_data: Path, tmp_path: Path):
    path = real_data / "llava_reward" / "smid_test.json"
    items = json.loads(path.read_text())
    result = read_smid(path, image_root=tmp_path)
    table = result.table
    assert dict(table.schema) == SAFETY_SCHEMA
    assert result.rejects.is_empty() and table.height == 2941
    assert dict(table["label"].value_counts().rows()) == {1: 1649, 0: 1292}
    assert table["item_id"].n_unique() == 2941
    assert table["split"].unique().to_list() == ["test"] and table["source"].unique().to_list() == ["SMID"]
    expected = [
        (
            str(tmp_path.resolve() / os.path.basename(item["path"])),
            item["label"],
            "Safe" if item["label"] else "Unsafe",
        )
        for item in items
    ]
    assert table.select("image_uri", "label", "safety_label").rows() == expected
    assert table["item_id"][0] == "smid-" + os.path.basename(items[0]["path"]).removesuffix(".jpg")
    # without image_root the authors' absolute paths lie outside the dataset: every row is a reject
    unrooted = read_smid(path)
    assert unrooted.table.is_empty() and unrooted.rejects.height == len(items)
    assert set(unrooted.rejects["field"]) == {"path"}


def test_smid_json_synthetic(tmp_path: Path):
    items = [
        {"path": "/scr/a/images/b1_p1_1.jpg", "label": 1, "prompt": ""},
        {"path": "C:\\data\\images\\b2_p3_4.jpg", "label": 0, "prompt": None},
        {"path": "/scr/a/images/b3.jpg", "label": 2, "prompt": ""},
        {"label": 1},
        "not an object",
    ]
    path = write_json(tmp_path / "smid_validation.json", items)
    result = read_smid_json(path, image_root=tmp_path / "img")
    assert_accounted(result, 5)
    assert result.table.select("item_id", "image_uri", "label", "prompt", "split").rows() == [
        ("smid-b1_p1_1", str(tmp_path.resolve() / "img" / "b1_p1_1.jpg"), 1, "", "validation"),
        ("smid-b2_p3_4", str(tmp_path.resolve() / "img" / "b2_p3_4.jpg"), 0, "", "validation"),
    ]
    problems = reasons(result)
    assert problems[2] == ("label", "label: not 0 or 1: 2")
    assert problems[3] == ("path", "path: missing")
    assert problems[4][0] == "record"


NORMS_HEADER = ["img_name", "valence_mean", "moral_mean", "moral_sd"]
NORMS_ROWS = [
    ["b1_p1_1", "2.1", "1.2", "0.5"],  # immoral
    ["b1_p1_2", "3.0", "2.4999", "0.5"],  # immoral (just below)
    ["b1_p1_3", "3.0", "2.5", "0.5"],  # exactly at the lower bound: ambiguous, dropped
    ["b1_p1_4", "3.0", "3.0", "0.5"],  # middle: dropped
    ["b1_p1_5", "3.0", "3.5", "0.5"],  # exactly at the upper bound: ambiguous, dropped
    ["b1_p1_6", "3.0", "3.5001", "0.5"],  # moral (just above)
    ["b1_p1_7.png", "3.0", "4.8", "0.5"],  # moral, name with its own extension
    ["b1_p1_8", "3.0", "abc", "0.5"],  # not a number
    ["b1_p1_9", "3.0", "", "0.5"],  # missing
    ["", "3.0", "4.0", "0.5"],  # no image name
]


def test_smid_norms_bounds_are_strict(tmp_path: Path):
    path = write_csv(tmp_path / "SMID_norms.csv", NORMS_HEADER, NORMS_ROWS)
    result = read_smid(path, image_root=tmp_path / "img")
    assert dict(result.table.schema) == SAFETY_SCHEMA
    assert_accounted(result, len(NORMS_ROWS))
    root = tmp_path.resolve() / "img"
    assert result.table.select("item_id", "image_uri", "label", "safety_label").rows() == [
        ("smid-b1_p1_1", f"{root}/b1_p1_1.jpg", 0, "Unsafe"),
        ("smid-b1_p1_2", f"{root}/b1_p1_2.jpg", 0, "Unsafe"),
        ("smid-b1_p1_6", f"{root}/b1_p1_6.jpg", 1, "Safe"),
        ("smid-b1_p1_7", f"{root}/b1_p1_7.png", 1, "Safe"),
    ]
    problems = reasons(result)
    for row, mean in [(2, "2.5"), (3, "3.0"), (4, "3.5")]:
        assert problems[row] == (
            "moral_mean",
            f"moral_mean: {mean} is within [2.5, 3.5] (ambiguous, dropped by the label rule)",
        )
    assert problems[7] == ("moral_mean", "moral_mean: not a number: 'abc'")
    assert problems[8] == ("moral_mean", "moral_mean: missing")
    assert problems[9] == ("img_name", "img_name: missing")
    assert result.rejects["source_row"].to_list() == sorted(problems)


def test_smid_norms_custom_rule_and_defaults(tmp_path: Path):
    path = write_csv(tmp_path / "SMID_norms.csv", NORMS_HEADER, NORMS_ROWS[:7])
    result = read_smid_norms(path, rule=SmidLabelRule(immoral_below=3.0, moral_above=3.0), split="test")
    # 1.2, 2.4999, 2.5 < 3 -> immoral; 3.0 dropped; 3.5, 3.5001, 4.8 > 3 -> moral
    assert result.table["label"].to_list() == [0, 0, 0, 1, 1, 1]
    assert result.rejects["source_row"].to_list() == [3]
    assert result.table["split"].unique().to_list() == ["test"]
    assert result.table["image_uri"][0] == f"{tmp_path.resolve()}/b1_p1_1.jpg"  # default root: CSV folder
    with pytest.raises(ValueError, match="immoral_below \\(4.0\\) must not exceed moral_above \\(3.0\\)"):
        SmidLabelRule(immoral_below=4.0, moral_above=3.0)


def test_smid_errors(tmp_path: Path):
    with pytest.raises(ReaderError, match=re.escape(f"{tmp_path.resolve()}/SMID_norms.csv: file not found")):
        read_smid(tmp_path / "SMID_norms.csv")
    no_mean = write_csv(tmp_path / "no_mean.csv", ["img_name", "valence_mean"], [["b1", "3.0"]])
    with pytest.raises(ReaderError, match=re.escape(f"{no_mean.resolve()}: missing column(s) moral_mean")):
        read_smid(no_mean)
    header_only = write_csv(tmp_path / "header_only.csv", NORMS_HEADER, [])
    with pytest.raises(ReaderError, match=re.escape(f"{header_only.resolve()}: no rows")):
        read_smid(header_only)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ReaderError, match=re.escape(f"{empty.resolve()}: no rows")):
        read_smid(empty)
    empty_json = write_json(tmp_path / "smid_test.json", [])
    with pytest.raises(ReaderError, match=re.escape(f"{empty_json.resolve()}: no rows")):
        read_smid(empty_json)
    other = write_json(tmp_path / "smid.txt", [])
    with pytest.raises(ReaderError, match="not a SMID .json list or .csv norms file"):
        read_smid(other)


# --------------------------------------------------------------------------------------------
# Unsafe Diffusion

UD_HEADER = ["rater_0", "rater_1", "rater_2", "final_label"]


def unsafe_diffusion_rows(n: int = 800) -> list[list[str]]:
    """Deterministic synthetic sheet: rater codes cycle through single and multi-category cells."""
    cells = ["0", "1", "2", "1,3", "4", "0", "5", "2,3"]
    rows = []
    for i in range(n):
        raters = [cells[i % 8], cells[(i + 1) % 8], cells[(i + 3) % 8]]
        rows.append([*raters, str(int(any(cell != "0" for cell in raters) and i % 3 != 0))])
    return rows


def test_unsafe_diffusion_split_matches_authors_code(tmp_path: Path):
    rows = unsafe_diffusion_rows()
    path = write_csv(tmp_path / "labels.csv", UD_HEADER, rows)
    result = read_unsafe_diffusion(path, image_root=tmp_path / "images")
    table = result.table
    assert dict(table.schema) == SAFETY_SCHEMA
    assert_accounted(result, 800) and result.rejects.is_empty()
    # the authors' BinaryAnnotatedDataset: image i is images/<i>.png, split of (images, labels)
    images = [f"{tmp_path.resolve()}/images/{i}.png" for i in range(800)]
    labels = [int(row[3]) for row in rows]
    _, test_images, _, test_labels = train_test_split(
        images, labels, test_size=0.4, shuffle=True, random_state=1
    )
    test = table.filter(split="test")
    assert test.height == 320 and table.filter(split="train").height == 480
    assert set(test["image_uri"]) == set(test_images)
    by_uri = dict(zip(test["image_uri"], test["label"], strict=True))
    assert [by_uri[uri] for uri in test_images] == [1 - label for label in test_labels]
    assert HoldoutSplit().test_rows(800).tolist() == [int(Path(uri).stem) for uri in test_images]
    # deterministic: a second read gives the same table
    assert read_unsafe_diffusion(path, image_root=tmp_path / "images").table.equals(table)


def test_unsafe_diffusion_labels_and_categories(tmp_path: Path):
    rows = [
        ["0", "0", "0", "0"],  # safe, no category
        ["1", "1,3", "3", "1"],  # sexual (2 votes) and disturbing (2 votes)
        ["2", "4", "5", "1"],  # unsafe but no category reaches 2 votes
        ["2", "2", "0", "1"],  # violent
        ["1", "x", "1", "1"],  # unparseable rater cell
        ["0", "", "0", "0"],  # empty rater cell
        ["0", "0", "0", "2"],  # final_label out of range
    ]
    path = write_csv(tmp_path / "labels.csv", UD_HEADER, rows)
    result = read_unsafe_diffusion(path, holdout=HoldoutSplit(test_size=0.4, random_state=1))
    assert_accounted(result, len(rows))
    assert result.table.select("item_id", "label", "safety_label", "category").rows() == [
        ("unsafe_diffusion-0", 1, "Safe", None),
        ("unsafe_diffusion-1", 0, "Unsafe", "sexual,disturbing"),
        ("unsafe_diffusion-2", 0, "Unsafe", None),
        ("unsafe_diffusion-3", 0, "Unsafe", "violent"),
    ]
    assert result.table["image_uri"][0] == f"{tmp_path.resolve()}/0.png"
    problems = reasons(result)
    assert problems[4] == ("rater_1", "rater_1: not comma-separated category codes 0-5: 'x'")
    assert problems[5] == ("rater_1", "rater_1: missing")
    assert problems[6] == ("final_label", "final_label: not 0 or 1: '2'")
    # the split is over all 7 file rows, rejected ones included
    test_rows = set(HoldoutSplit().test_rows(7).tolist())
    assert {row for row, split in result.table.select("source_row", "split").rows() if split == "test"} == (
        test_rows & {0, 1, 2, 3}
    )


def test_unsafe_diffusion_image_column_and_no_raters(tmp_path: Path):
    path = write_csv(
        tmp_path / "labels.csv", ["image", "final_label"], [["a.png", "1"], ["b.png", "0"], [" ", "0"]]
    )
    result = read_unsafe_diffusion(path, image_column="image", image_root=tmp_path / "imgs")
    assert_accounted(result, 3)
    assert result.table.select("item_id", "image_uri", "label", "category").rows() == [
        ("unsafe_diffusion-a", f"{tmp_path.resolve()}/imgs/a.png", 0, None),
        ("unsafe_diffusion-b", f"{tmp_path.resolve()}/imgs/b.png", 1, None),
    ]
    assert reasons(result)[2] == ("image", "image: empty")


def test_unsafe_diffusion_errors(tmp_path: Path):
    with pytest.raises(ReaderError, match=re.escape(f"{tmp_path.resolve()}/labels.csv: file not found")):
        read_unsafe_diffusion(tmp_path / "labels.csv")
    no_label = write_csv(tmp_path / "no_label.csv", ["rater_0", "rater_1", "rater_2"], [["0", "0", "0"]])
    with pytest.raises(ReaderError, match=re.escape(f"{no_label.resolve()}: missing column(s) final_label")):
        read_unsafe_diffusion(no_label)
    with pytest.raises(
        ReaderError, match=re.escape(f"{no_label.resolve()}: missing column(s) final_label, image")
    ):
        read_unsafe_diffusion(no_label, image_column="image")
    header_only = write_csv(tmp_path / "header_only.csv", UD_HEADER, [])
    with pytest.raises(ReaderError, match=re.escape(f"{header_only.resolve()}: no rows")):
        read_unsafe_diffusion(header_only)
    with pytest.raises(ValueError, match="cannot split 1 row"):
        HoldoutSplit().test_rows(1)


def test_unsafe_diffusion_xlsx_without_openpyxl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # what an environment without it imports
    sheet = tmp_path / "labels.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not read")
    with pytest.raises(
        ReaderError, match=re.escape(f"{sheet.resolve()}: reading Excel files needs openpyxl")
    ):
        read_unsafe_diffusion(sheet)


def test_unsafe_diffusion_xlsx_with_openpyxl(tmp_path: Path):
    openpyxl = pytest.importorskip("openpyxl", reason="openpyxl (the 'xlsx' extra) is not installed")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(UD_HEADER)
    for row in unsafe_diffusion_rows(20):
        sheet.append([int(row[0]) if "," not in row[0] else row[0], row[1], row[2], int(row[3])])
    workbook.save(tmp_path / "labels.xlsx")
    from_xlsx = read_unsafe_diffusion(tmp_path / "labels.xlsx")
    from_csv = read_unsafe_diffusion(write_csv(tmp_path / "labels.csv", UD_HEADER, unsafe_diffusion_rows(20)))
    columns = ["item_id", "image_uri", "label", "category", "split"]
    assert from_xlsx.table.select(columns).equals(from_csv.table.select(columns))
