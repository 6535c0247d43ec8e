"""Case 18: what the README tells a newcomer to type or look for exists: the demo images and prompts
for trying ``score`` (in the layout the demo corpus writes) and the fields that tell model folders apart
(in the reward_config.json that training writes)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from reward.checkpoint import read_reward_config
from reward.tiny import build_tiny_backbone
from tasks.train import train
from tests.conftest import REPO_ROOT
from tests.reward_support import assembled_tables, one_torch_thread, quick_job  # noqa: F401

pytestmark = pytest.mark.hostile_case(18)

SECTION = "### Trying `score` on the demo images; telling model folders apart"


def readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    assert SECTION in text, "the README lost its section on demo images and model folders"
    body = text.split(SECTION, 1)[1]
    return body.split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_the_demo_paths_it_names_are_what_the_corpus_writes(demo_corpus: Path) -> None:
    section = readme_section()
    root = re.search(r"^D=(\S+)$", section, re.MULTILINE)
    assert root is not None and root.group(1) == "artifacts/demo-corpus/seed0"  # flows.common's default
    named = sorted(set(re.findall(r"\$D/([\w./*-]+)", section)))
    assert named == [
        "imagerewarddb/images/train/train_1.zip",
        "tifa160/human_annotations.json",
        "tifa160/images/*.png",
    ]
    for pattern in named:
        assert list(demo_corpus.glob(pattern)), f"README names $D/{pattern}; the demo corpus has none"
    annotations = json.loads((demo_corpus / "tifa160" / "human_annotations.json").read_text())
    assert all(isinstance(entry["text"], str) and entry["text"] for entry in annotations.values())
    with zipfile.ZipFile(demo_corpus / "imagerewarddb/images/train/train_1.zip") as archive:
        assert any(name.endswith((".png", ".webp", ".jpg")) for name in archive.namelist())


def test_the_fields_that_tell_folders_apart_are_in_a_trained_folder(
    demo_corpus: Path, tmp_path: Path
) -> None:
    section = readme_section()
    paragraph = section.split("Every model folder says what it is", 1)[1].split("\n\n", 1)[0]
    fields = re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", paragraph.split("reward_config.json", 1)[1])
    assert fields[:6] == [
        "perspective",
        "backbone.name_or_path",
        "head",
        "loss",
        "training_data.key",
        "training",
    ]
    backbone = build_tiny_backbone(tmp_path / "tiny", "llava")
    tables = assembled_tables(demo_corpus, tmp_path / "art")
    job = quick_job(backbone, tables["pairs"], perspective="alignment")
    folder = Path(train(job, root=str(tmp_path / "art")).path)  # the train flow's stage
    saved = json.loads((folder / "reward_config.json").read_text())
    for name in fields[:6]:
        value = saved
        for part in name.split("."):
            assert isinstance(value, dict) and part in value, (
                f"README names {name}; reward_config.json lacks it"
            )
            value = value[part]
        assert value not in (None, "", {}), f"{name} is empty in a trained folder"
    assert read_reward_config(folder).perspective == "alignment"
