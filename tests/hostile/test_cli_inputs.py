"""Cases 8 and 10: ``llava-reward score`` refuses an empty prompt, and one unreadable image among
several is reported in its own JSON line while the others are scored (exit status 2)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from reward.cli import main
from reward.config import HeadConfig
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, pictures, save, trained_model  # noqa: F401

PROMPT = "two red circles"


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("cli-inputs")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    model = trained_model(backbone, perspective="fidelity", head=HeadConfig(), lora=None, seed=1)
    folder = save(model, root / "fidelity", backbone)
    paths = []
    for index, picture in enumerate(pictures(2, seed=3)):
        picture.save(root / f"{index}.png")
        paths.append(str(root / f"{index}.png"))
    return folder, paths


@pytest.mark.hostile_case(8)
@pytest.mark.parametrize("prompt", ["", "   \t"])
def test_an_empty_prompt_is_refused(model_and_images, prompt: str, capsys) -> None:
    folder, images = model_and_images
    out = io.StringIO()
    assert main(["score", "--model", str(folder), "--prompt", prompt, *images], out=out) == 2
    assert out.getvalue() == ""
    assert capsys.readouterr().err == (
        "llava-reward: error: --prompt is empty: give the text prompt the images were generated for\n"
    )


@pytest.mark.hostile_case(10)
def test_one_bad_image_does_not_stop_the_batch(model_and_images, tmp_path: Path, capsys) -> None:
    folder, images = model_and_images
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(images[0]).read_bytes()[:60])  # a PNG header and nothing else
    argv = [
        "score",
        "--model",
        str(folder),
        "--prompt",
        PROMPT,
        "--device",
        "cpu",
        images[0],
        str(broken),
        images[1],
    ]
    out = io.StringIO()
    assert main(argv, out=out) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["image"] for line in lines] == [images[0], str(broken), images[1]]
    assert "score" not in lines[1] and lines[1]["error"].startswith(f"{broken}: cannot decode image")
    expected = RewardScorer.from_pretrained(folder, device="cpu").score(images, PROMPT)
    assert [lines[0]["score"], lines[2]["score"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert capsys.readouterr().err.startswith(f"llava-reward: error: {broken}: cannot decode image")


@pytest.mark.hostile_case(18)
def test_a_registry_perspective_without_champion_says_what_to_run(tmp_path: Path, capsys) -> None:
    """Case 18: the README's ``--model artifacts/registry/<perspective>`` before any retraining run."""
    folder = tmp_path / "artifacts" / "registry" / "alignment"
    argv = ["score", "--model", str(folder), "--prompt", PROMPT, str(tmp_path / "a.png")]
    assert main(argv, out=io.StringIO()) == 2
    assert capsys.readouterr().err == (
        f"llava-reward: error: {folder}: this registry perspective has no champion yet; run "
        "`prefect deployment run retrain-reward-model/alignment --watch` first, or pass a trained model "
        "folder (artifacts/train/<key>)\n"
    )
