"""``llava-reward``: train a tiny demo model with the CLI, then score / compare / rank (JSON lines)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import polars as pl
import pytest

from reward.cli import main
from reward.config import BackboneConfig, LossConfig
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone
from reward.training import train_reward_model
from tests.reward_support import assembled_tables, one_torch_thread, quick_job  # noqa: F401

PROMPT = "two red circles to the left of a blue square"


def run(argv: list[str]) -> tuple[int, list[dict]]:
    out = io.StringIO()
    status = main(argv, out=out)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture(scope="module")
def demo(demo_corpus: Path, tmp_path_factory) -> dict[str, object]:
    """A fidelity model trained by ``llava-reward train`` and a safety model, on the demo corpus."""
    root = tmp_path_factory.mktemp("cli")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    tables = assembled_tables(demo_corpus, root / "art")
    job = quick_job(backbone, tables["pairs"], max_steps=3)
    job.to_json(root / "job.json")
    status, lines = run(["train", "--job", str(root / "job.json"), "--output", str(root / "fidelity")])
    assert status == 0 and lines[0]["global_step"] == 3 and lines[0]["model_dir"] == str(root / "fidelity")
    safety = quick_job(backbone, tables["rows"], perspective="safety", loss=LossConfig("ce"))
    train_reward_model(safety, root / "safety")
    images = pl.read_parquet(tables["pairs"]).head(3)["chosen_image_uri"].to_list()
    return {
        "fidelity": str(root / "fidelity"),
        "safety": str(root / "safety"),
        "images": images,
        "root": root,
    }


def test_score_prints_one_line_per_image(demo) -> None:
    status, lines = run(["score", "--model", demo["fidelity"], "--prompt", PROMPT, *demo["images"]])
    assert status == 0 and [line["image"] for line in lines] == demo["images"]
    expected = RewardScorer.from_pretrained(demo["fidelity"], device="cpu").score(demo["images"], PROMPT)
    assert [line["score"] for line in lines] == pytest.approx(expected.tolist(), abs=1e-6)
    assert {line["perspective"] for line in lines} == {"fidelity"} and lines[0]["prompt"] == PROMPT


def test_a_registry_perspective_scores_with_its_champion(demo, tmp_path: Path) -> None:
    from reward.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    registry.register("fidelity", "k1", Path(demo["fidelity"]))
    registry.promote(
        "fidelity", "k1", run_id="r1", benchmark="mjbench-quality", metric="acc", value=0.7, reason="test"
    )
    arguments = ["--prompt", PROMPT, *demo["images"]]
    _, direct = run(["score", "--model", demo["fidelity"], *arguments])
    for model in (registry.perspective_dir("fidelity"), registry.champion_path("fidelity")):
        status, lines = run(["score", "--model", str(model), *arguments])
        assert status == 0 and [line["score"] for line in lines] == [line["score"] for line in direct]


def test_compare_and_rank(demo) -> None:
    first, second, third = demo["images"]
    scorer = RewardScorer.from_pretrained(demo["fidelity"], device="cpu")
    status, (line,) = run(["compare", "--model", demo["fidelity"], "--prompt", PROMPT, first, second])
    assert status == 0 and (line["image_a"], line["image_b"]) == (first, second)
    assert line["p_a_over_b"] == pytest.approx(scorer.compare(PROMPT, first, second), abs=1e-6)
    status, lines = run(["rank", "--model", demo["fidelity"], "--prompt", PROMPT, first, second, third])
    ranked = scorer.rank(PROMPT, [first, second, third])
    assert status == 0 and [line["image"] for line in lines] == [item.image for item in ranked]
    assert [line["rank"] for line in lines] == [1, 2, 3]


def test_several_models_and_perspective_choice(demo) -> None:
    models = ["--model", demo["fidelity"], "--model", demo["safety"]]
    status, lines = run(["score", *models, "--prompt", PROMPT, demo["images"][0]])
    assert status == 0 and [line["perspective"] for line in lines] == ["fidelity", "safety"]
    safety = lines[1]
    assert safety["probability"] == pytest.approx(
        1.0 / (1.0 + math.exp(-safety["score"]))
    )  # P(safe), CE head
    assert "probability" not in lines[0]
    status, lines = run(["score", *models, "--perspective", "safety", "--prompt", PROMPT, demo["images"][0]])
    assert status == 0 and [line["perspective"] for line in lines] == ["safety"]


def test_real_images(demo, real_data: Path) -> None:
    """The real LLaVA-Reward sample images (scores are meaningless with random weights; the path is real)."""
    folder = real_data / "llava_reward" / "sample_test" / "sample_img"
    images = [str(folder / name) for name in ("0_c.jpg", "0_r.jpg", "1_c.jpg")]
    prompt = "A curious cat exploring a haunted mansion"
    status, lines = run(["score", "--model", demo["fidelity"], "--prompt", prompt, *images])
    assert status == 0 and [line["image"] for line in lines] == images
    assert all(math.isfinite(line["score"]) for line in lines)
    status, lines = run(["rank", "--model", demo["fidelity"], "--prompt", prompt, *images])
    assert status == 0 and sorted(line["image"] for line in lines) == sorted(images)


def test_errors_exit_2_with_a_message(demo, tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing.png")
    assert main(["score", "--model", demo["fidelity"], "--prompt", PROMPT, missing], out=io.StringIO()) == 2
    assert f"llava-reward: error: {missing}: file not found" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path), "--prompt", PROMPT, missing], out=io.StringIO()) == 2
    assert "not a reward model folder (no reward_config.json)" in capsys.readouterr().err
    argv = [
        "rank",
        "--model",
        demo["fidelity"],
        "--perspective",
        "safety",
        "--prompt",
        PROMPT,
        demo["images"][0],
    ]
    assert main(argv, out=io.StringIO()) == 2
    assert "unknown perspective 'safety'" in capsys.readouterr().err
    moved = json.loads((Path(demo["fidelity"]) / "reward_config.json").read_text())
    assert BackboneConfig.from_dict(moved["backbone"]).name_or_path == str(demo["root"] / "tiny")
    argv = [
        "score",
        "--model",
        demo["fidelity"],
        "--backbone",
        str(tmp_path / "nowhere"),
        "--prompt",
        PROMPT,
        demo["images"][0],
    ]
    assert main(argv, out=io.StringIO()) == 2
    assert "cannot read its config.json" in capsys.readouterr().err
