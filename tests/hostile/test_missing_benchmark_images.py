"""Case 16: missing benchmark images are found when the benchmark is read, before any scoring.

The input: a TIFA160 ``human_annotations.json`` beside an image folder that lacks some of its images
(the walkthrough's MJ-Bench tree without its images gave 916 rejects only after scoring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from reward.benchmarks import read_benchmark
from tasks.evaluate import load_benchmark

pytestmark = pytest.mark.hostile_case(16)


def tifa_folder(root: Path, present: int, absent: int) -> Path:
    (root / "images").mkdir(parents=True)
    entries = {}
    for index in range(present + absent):
        key = f"t{index}_sd"
        entries[key] = {
            "text_id": f"t{index}",
            "image_path": f"images/{key}.png",
            "text": f"prompt {index}",
            "human_scores": [3, 4],
            "human_avg": 3.5,
        }
        if index < present:
            Image.new("RGB", (8, 8), (index, 0, 0)).save(root / "images" / f"{key}.png")
    (root / "human_annotations.json").write_text(json.dumps(entries))
    return root / "human_annotations.json"


def test_rows_without_their_image_are_rejects_at_read_time(tmp_path: Path) -> None:
    path = tifa_folder(tmp_path / "tifa", present=3, absent=2)
    read = read_benchmark("tifa160", path)
    assert read.table["item_id"].to_list() == ["t0_sd", "t1_sd", "t2_sd"]
    assert read.rejects.select("record_id", "field").rows() == [
        ("t3_sd", "image_uri"),
        ("t4_sd", "image_uri"),
    ]
    missing = (tmp_path / "tifa" / "images" / "t3_sd.png").resolve()
    assert read.rejects["reason"][0] == f"image_uri: image not found: {missing}"
    assert read.rows_in == 5

    stage = load_benchmark("tifa160", path, root=tmp_path / "art")
    assert (stage.rows_in, stage.rows_kept, stage.rows_rejected) == (5, 3, 2)
    assert stage.stats["missing_images"] == 2
    assert stage.stats["first_missing"][0] == f"image_uri: image not found: {missing}"
