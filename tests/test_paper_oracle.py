"""The paper's own model against numbers the paper's own code computed (../shared/fixtures/paper-oracle).

The fixture holds a tiny random Phi-3.5-vision base in the published folder layout, two checkpoints in
the published LLaVA-Reward format and ``expected.json``: for each (image, caption) case the prompt, token
ids, processor outputs, rewards and preference probabilities of the authors' code. Each checkpoint is
imported through the CLI (``import-checkpoint``: 16 HD crops as the paper's loader; ``--num-crops base``:
the base folder's preprocessor_config.json), then scored through the CLI (``score``, ``compare``) and
through :class:`RewardScorer`. Everything comes from ``expected.json``: another fixture set of the same
kind (other weights, vocabulary, images, captions, tau) runs through the same tests.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reward.cli import main
from reward.losses import preference_probability
from reward.scoring import RewardScorer

#: Tolerances the issue sets: rewards relative 1e-4, probabilities 1e-5, pixel values 1e-5.
REWARD_RTOL, REWARD_ATOL = 1e-4, 1e-6
PROBABILITY_ATOL = 1e-5
PIXEL_ATOL = 1e-5
SETTINGS = ("paper_path", "config_num_crops")
#: How each processor setting is asked for on the import command line.
NUM_CROPS_OPTION = {"paper_path": [], "config_num_crops": ["--num-crops", "base"]}


@pytest.fixture(scope="module", autouse=True)
def two_torch_threads():
    """These forwards are the suite's largest (17 CLIP views of 336 px): use both cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def expected(paper_oracle: Path) -> dict[str, Any]:
    return json.loads((paper_oracle / "expected.json").read_text(encoding="utf-8"))


def run_cli(argv: list[str]) -> list[dict[str, Any]]:
    out = io.StringIO()
    status = main(argv, out=out)
    assert status == 0, f"llava-reward {' '.join(argv)} exited {status}"
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture(scope="module")
def imported(paper_oracle: Path, expected, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every checkpoint imported through the CLI, once per processor setting."""
    root = tmp_path_factory.mktemp("imported")
    folders = {}
    for kind, record in expected["checkpoints"].items():
        for setting in SETTINGS:
            out = root / f"{kind}-{setting}"
            argv = ["import-checkpoint", str(paper_oracle / record["path"]), "--base"]
            argv += [
                str(paper_oracle / expected["base"]["path"]),
                "--out",
                str(out),
                *NUM_CROPS_OPTION[setting],
            ]
            (summary,) = run_cli(argv)
            assert summary["model"] == str(out)
            folders[kind, setting] = out
    return folders


def float32_command(command: str, model: Path) -> list[str]:
    """``llava-reward COMMAND --model MODEL`` on the CPU in float32, as the paper's numbers were computed."""
    return [command, "--model", str(model), "--device", "cpu", "--dtype", "float32"]


def expected_rewards(expected: dict[str, Any], kind: str, setting: str) -> np.ndarray:
    """(cases, value_head_dim) rewards of the paper's code."""
    return np.array(
        [
            np.asarray(value, dtype=np.float64).reshape(-1)
            for value in expected["checkpoints"][kind]["rewards"][setting]
        ]
    )


def assert_rewards_close(got: np.ndarray, want: np.ndarray, what: str) -> float:
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    difference = np.abs(got - want)
    assert np.all(difference <= REWARD_ATOL + REWARD_RTOL * np.abs(want)), f"{what}: {got} vs {want}"
    return float(difference.max())


def kinds(expected_dict: dict[str, Any]) -> list[str]:
    return list(expected_dict["checkpoints"])


class TestFixture:
    def test_files_match_their_recorded_digests(self, paper_oracle: Path, expected) -> None:
        """The oracle is verified before it is trusted."""
        for name, record in expected["files"].items():
            data = (paper_oracle / name).read_bytes()
            assert len(data) == record["bytes"] and hashlib.sha256(data).hexdigest() == record["sha256"], name


class TestImport:
    def test_the_imported_folders_describe_the_published_models(self, imported, expected) -> None:
        from reward.checkpoint import read_reward_config

        for (kind, setting), folder in imported.items():
            published = expected["checkpoints"][kind]["reward_config"]
            config = read_reward_config(folder)
            assert config.head.kind == ("skipca" if published["add_cross_attention"] else "linear")
            assert config.loss.kind == ("gpm" if published["is_general_preference"] else "bt")
            assert config.loss.temperature == pytest.approx(published["general_preference_tau"])
            assert config.head.output_dim == published["value_head_dim"]
            assert config.backbone.template_profile == "llava-reward-phi3v"
            crops = expected["processor"]["paper_path"]["num_crops"] if setting == "paper_path" else None
            assert config.backbone.num_crops == crops
            assert not config.backbone.trust_remote_code
            lora = expected["checkpoints"][kind]["lora"]
            assert (config.lora.rank, config.lora.alpha) == (lora["r"], lora["lora_alpha"])
            assert sorted(config.lora.target_modules) == sorted(lora["target_modules"])
            assert (folder / "adapter" / "adapter_model.safetensors").is_file() and (
                folder / "head.safetensors"
            ).is_file()


class TestProcessor:
    @pytest.mark.parametrize("setting", SETTINGS)
    def test_prompt_ids_and_pixels_equal_the_papers(self, imported, expected, paper_oracle, setting) -> None:
        scorer = RewardScorer.from_pretrained(
            imported[kinds(expected)[0], setting], device="cpu", dtype="float32"
        )
        backbone = scorer.model.backbone
        assert backbone.processor.image_processor.num_crops == expected["processor"][setting]["num_crops"]
        saved = load_file(paper_oracle / "pixel_values_case0.safetensors")
        suffix = "" if setting == "paper_path" else "_config_num_crops"
        for case in expected["cases"]:
            want = case[setting]
            from PIL import Image

            with Image.open(paper_oracle / case["image"]) as image:
                inputs = backbone.prepare([image.convert("RGB")], [case["caption"]])
            assert backbone.render_prompt(case["caption"]) == want["prompt"]
            assert inputs["input_ids"][0].tolist() == want["input_ids"]
            assert inputs["attention_mask"][0].tolist() == want["attention_mask"]
            assert list(inputs["pixel_values"].shape) == want["pixel_values_shape"]
            assert inputs["image_sizes"].tolist() == want["image_sizes"]
            pixels = inputs["pixel_values"].double()
            stats = want["pixel_values_stats"]
            assert float(pixels.sum()) == pytest.approx(stats["sum"], rel=1e-7, abs=1e-3)
            assert [float(crop.sum()) for crop in pixels[0]] == pytest.approx(
                stats["per_crop_sum"], rel=1e-6, abs=1e-2
            )
            if case["index"] == 0:
                assert torch.allclose(
                    inputs["pixel_values"], saved["pixel_values" + suffix], atol=PIXEL_ATOL, rtol=0
                )
                assert inputs["image_sizes"].tolist() == saved["image_sizes" + suffix].tolist()


@pytest.mark.slow
class TestCommandLine:
    @pytest.mark.parametrize("setting", SETTINGS)
    def test_score_prints_the_papers_rewards(self, imported, expected, paper_oracle, setting) -> None:
        for kind in kinds(expected):
            want = expected_rewards(expected, kind, setting)
            for case in expected["cases"]:
                argv = float32_command("score", imported[kind, setting])
                (record,) = run_cli([*argv, "--prompt", case["caption"], str(paper_oracle / case["image"])])
                got = record["embedding"] if "embedding" in record else [record["score"]]
                assert ("embedding" in record) == (want.shape[1] > 1)
                assert_rewards_close(
                    np.array(got), want[case["index"]], f"{kind} {setting} case {case['index']}"
                )

    @pytest.mark.parametrize("setting", SETTINGS)
    def test_compare_prints_the_papers_probabilities(self, imported, expected, paper_oracle, setting) -> None:
        cases = {case["index"]: case for case in expected["cases"]}
        for kind in kinds(expected):
            for pair in expected["checkpoints"][kind]["preferences"][setting]:
                chosen, rejected = cases[pair["chosen_case"]], cases[pair["rejected_case"]]
                argv = float32_command("compare", imported[kind, setting])
                argv += ["--prompt", chosen["caption"], "--prompt-b", rejected["caption"]]
                (record,) = run_cli(
                    [*argv, str(paper_oracle / chosen["image"]), str(paper_oracle / rejected["image"])]
                )
                assert record["p_a_over_b"] == pytest.approx(pair["prob"][0], abs=PROBABILITY_ATOL)


@pytest.mark.slow
class TestRewardScorer:
    @pytest.mark.parametrize("setting", SETTINGS)
    def test_a_batch_of_all_cases_gives_the_papers_numbers(
        self, imported, expected, paper_oracle, setting
    ) -> None:
        """All cases in one batch (different crop grids: padded tokens, masked visual tokens) score as the
        paper's code scored each alone; the pair probabilities follow."""
        images = [str(paper_oracle / case["image"]) for case in expected["cases"]]
        captions = [case["caption"] for case in expected["cases"]]
        for kind in kinds(expected):
            scorer = RewardScorer.from_pretrained(imported[kind, setting], device="cpu", dtype="float32")
            rewards = scorer.score(images, captions)
            want = expected_rewards(expected, kind, setting)
            assert_rewards_close(rewards.reshape(len(images), -1), want, f"{kind} {setting} batch")
            loss = scorer.config().loss
            for pair in expected["checkpoints"][kind]["preferences"][setting]:
                batch = torch.as_tensor(rewards)
                probability = preference_probability(
                    loss,
                    batch[pair["chosen_case"] : pair["chosen_case"] + 1],
                    batch[pair["rejected_case"] : pair["rejected_case"] + 1],
                )
                assert float(probability[0]) == pytest.approx(pair["prob"][0], abs=PROBABILITY_ATOL)
