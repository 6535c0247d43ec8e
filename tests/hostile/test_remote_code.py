"""Case 2: a model folder never turns remote code on; only the caller does.

The attacker ships a perspective folder whose ``reward_config.json`` says ``"trust_remote_code": true``
and whose backbone folder has an ``auto_map`` naming a module that writes a marker file when imported.
Scoring it without the caller's permission must fail with an error naming the folder and the flag,
and the marker must not appear."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from reward.checkpoint import CheckpointError, load_reward_model
from reward.cli import main
from reward.config import HeadConfig
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, pictures, save, trained_model  # noqa: F401

pytestmark = pytest.mark.hostile_case(2)

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
from transformers import LlavaConfig
class EvilConfig(LlavaConfig):  # a class of its own: loading it must not touch LlavaConfig
    pass
"""


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(perspective folder, marker path, an image) — the folder asks for remote code."""
    root = tmp_path_factory.mktemp("remote-code")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    model = trained_model(backbone, perspective="alignment", head=HeadConfig(), lora=None, seed=0)
    folder = save(model, root / "alignment", backbone)
    marker = root / "MARKER"
    (backbone / "evil.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    config_path = backbone / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    config_path.write_text(json.dumps(config))
    reward_config = json.loads((folder / "reward_config.json").read_text())
    reward_config["backbone"]["trust_remote_code"] = True
    (folder / "reward_config.json").write_text(json.dumps(reward_config))
    image = root / "a.png"
    pictures(1, seed=0)[0].save(image)
    return folder, marker, image


def test_cli_score_refuses_and_runs_nothing(hostile_folder, capsys) -> None:
    folder, marker, image = hostile_folder
    out = io.StringIO()
    status = main(["score", "--model", str(folder), "--prompt", "two red circles", str(image)], out=out)
    error = capsys.readouterr().err
    assert not marker.exists()
    assert status == 2 and out.getvalue() == ""
    assert error.startswith(f"llava-reward: error: {folder}: its reward_config.json asks to run code shipped")
    assert "--trust-remote-code" in error and "trust_remote_code=True" in error
    assert not marker.exists()


def test_library_loaders_refuse_without_the_argument(hostile_folder) -> None:
    folder, marker, _ = hostile_folder
    with pytest.raises(CheckpointError, match=r"pass --trust-remote-code \(CLI\)"):
        load_reward_model(folder)
    with pytest.raises(CheckpointError, match=str(folder)):
        RewardScorer.from_pretrained(folder, device="cpu")
    assert not marker.exists()


def test_evaluation_refuses_before_scoring(hostile_folder) -> None:
    """The evaluate and retrain flows build their scorers here: the refusal comes before any stage."""
    from tasks.evaluate import reward_model_specs

    folder, marker, _ = hostile_folder
    with pytest.raises(CheckpointError, match="flow parameter trust_remote_code=true"):
        reward_model_specs({"hostile": folder})
    specs, _ = reward_model_specs({"hostile": folder}, trust_remote_code=True)
    assert [spec.name for spec in specs] == ["hostile"] and not marker.exists()  # nothing loaded yet


def test_the_caller_can_allow_it(hostile_folder) -> None:
    """With the caller's permission the folder's code is imported (here: the marker is written)."""
    folder, marker, image = hostile_folder
    argv = [
        "score",
        "--model",
        str(folder),
        "--prompt",
        "p",
        "--trust-remote-code",
        "--device",
        "cpu",
        str(image),
    ]
    main(argv, out=io.StringIO())  # the stand-in config class is not a loadable model: only the import counts
    assert marker.read_text() == "remote code ran"
