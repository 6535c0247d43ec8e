"""RewardScorer: batched scoring, image input forms, preference probabilities and ranking."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import expit

from reward.config import HeadConfig, LoraSettings, LossConfig
from reward.scoring import RewardScorer, ScoringError
from reward.tiny import build_tiny_backbone
from tests.reward_support import (
    one_torch_thread,  # noqa: F401 (autouse fixture)
    pictures,
    save,
    trained_model,
)

#: Prompts of different lengths, so batches need padding.
PROMPTS = [
    "two red circles",
    "a blue square above a star on a plain background",
    "three yellow crosses",
    "one green triangle to the left of two purple circles, simple shapes",
    "a red star",
    "two orange squares below a cyan circle",
    "a photo of three blue triangles",
]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> RewardScorer:
    root = tmp_path_factory.mktemp("scoring")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    bt = trained_model(
        backbone, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=1
    )
    gpm = trained_model(
        backbone,
        perspective="overall",
        head=HeadConfig(kind="linear", gpm_dim=2),
        lora=LoraSettings(rank=2),
        seed=2,
    )
    folders = [
        save(bt, root / "alignment", backbone, LossConfig("bt", temperature=0.5)),
        save(gpm, root / "overall", backbone, LossConfig("gpm", temperature=0.25)),
    ]
    return RewardScorer.from_pretrained(folders, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, image in enumerate(pictures(len(PROMPTS), seed=11)):
        path = folder / f"image{index}.png"
        image.save(path)
        paths.append(path)
    return paths


def gpm_form(a: np.ndarray, b: np.ndarray) -> float:
    return float(sum(a[2 * i] * b[2 * i + 1] - a[2 * i + 1] * b[2 * i] for i in range(len(a) // 2)))


class TestScore:
    @pytest.mark.parametrize("perspective", ["alignment", "overall"])
    def test_batched_equals_one_by_one(self, scorer: RewardScorer, image_files, perspective: str) -> None:
        batched = scorer.score(image_files, PROMPTS, perspective=perspective)  # batches of 3, 3, 1
        single = np.stack([scorer.score(path, prompt, perspective=perspective)[0]
                           for path, prompt in zip(image_files, PROMPTS, strict=True)])  # fmt: skip
        assert batched.shape == ((7,) if perspective == "alignment" else (7, 4))
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)

    def test_every_image_form_gives_the_same_score(self, scorer: RewardScorer, image_files, tmp_path) -> None:
        path = image_files[0]
        archive = tmp_path / "images.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            handle.write(path, "inside/image0.png")
        pixels = torch.from_numpy(np.asarray(pictures(1, seed=11)[0])).permute(2, 0, 1)
        forms = [path, str(path), f"{archive}::inside/image0.png", path.read_bytes(), pictures(1, seed=11)[0]]
        forms += [pixels, pixels[None]]  # a uint8 (3, H, W) tensor, and a (1, 3, H, W) batch of them
        values = [scorer.score(form, PROMPTS[0])[0] for form in forms]
        assert all(value == values[0] for value in values), values

    def test_one_prompt_is_broadcast(self, scorer: RewardScorer, image_files) -> None:
        np.testing.assert_array_equal(
            scorer.score(image_files[:3], PROMPTS[0]), scorer.score(image_files[:3], [PROMPTS[0]] * 3)
        )

    def test_bad_input_is_named(self, scorer: RewardScorer, image_files, tmp_path) -> None:
        with pytest.raises(ScoringError, match="got 2 images but 3 prompts"):
            scorer.score(image_files[:2], PROMPTS[:3])
        with pytest.raises(ScoringError, match=r"missing.png: file not found"):
            scorer.score([image_files[0], tmp_path / "missing.png"], PROMPTS[0])
        with pytest.raises(ScoringError, match=r"<9 bytes>: cannot decode image"):
            scorer.score(b"not a png", PROMPTS[0])
        with pytest.raises(
            ScoringError, match=r"unknown perspective 'safety'; loaded: \['alignment', 'overall'\]"
        ):
            scorer.score(image_files[0], PROMPTS[0], perspective="safety")
        with pytest.raises(ScoringError, match="no images to score"):
            scorer.score([], PROMPTS[0])
        with pytest.raises(
            ScoringError, match=r"<float32 tensor \(3, 8, 8\)>: an image tensor must be uint8"
        ):
            scorer.score(torch.zeros(3, 8, 8), PROMPTS[0])

    def test_perspective_argument_does_not_change_the_active_one(
        self, scorer: RewardScorer, image_files
    ) -> None:
        assert scorer.active == "alignment"
        scorer.score(image_files[0], PROMPTS[0], perspective="overall")
        assert scorer.active == "alignment"
        scorer.use("overall")
        assert scorer.score(image_files[0], PROMPTS[0]).shape == (1, 4)
        scorer.use("alignment")


class TestCompare:
    def test_bradley_terry_probability_with_temperature(self, scorer: RewardScorer, image_files) -> None:
        a, b = image_files[:2]
        rewards = scorer.score([a, b], PROMPTS[0])
        expected = expit((rewards[0] - rewards[1]) / 0.5)
        assert scorer.compare(PROMPTS[0], a, b) == pytest.approx(expected, abs=1e-6)
        assert scorer.compare(PROMPTS[0], a, b) + scorer.compare(PROMPTS[0], b, a) == pytest.approx(
            1.0, abs=1e-6
        )
        assert scorer.compare(PROMPTS[0], a, a) == pytest.approx(0.5, abs=1e-6)

    def test_prompt_b_pairs_with_image_b(self, scorer: RewardScorer, image_files) -> None:
        a, b = image_files[:2]
        ra, rb = scorer.score([a], PROMPTS[0])[0], scorer.score([b], PROMPTS[1])[0]
        probability = scorer.compare(PROMPTS[0], a, b, prompt_b=PROMPTS[1])
        assert probability == pytest.approx(expit((ra - rb) / 0.5), abs=1e-6)

    def test_gpm_skew_symmetric_form(self, scorer: RewardScorer, image_files) -> None:
        a, b = image_files[2:4]
        ea, eb = scorer.score([a, b], PROMPTS[2], perspective="overall")
        expected = expit(gpm_form(ea, eb) / 0.25)
        assert scorer.compare(PROMPTS[2], a, b, perspective="overall") == pytest.approx(expected, abs=1e-6)
        assert scorer.compare(PROMPTS[2], a, a, perspective="overall") == pytest.approx(0.5, abs=1e-7)


class TestRank:
    def test_scalar_rank_follows_rewards(self, scorer: RewardScorer, image_files) -> None:
        rewards = scorer.score(image_files, PROMPTS[1])
        ranked = scorer.rank(PROMPTS[1], image_files)
        assert [item.index for item in ranked] == list(np.argsort(-rewards, kind="stable"))
        assert [item.rank for item in ranked] == list(range(1, 8))
        for item in ranked:
            others = np.delete(rewards, item.index)
            assert item.score == pytest.approx(rewards[item.index], abs=1e-6)
            assert item.win_rate == pytest.approx(
                expit((rewards[item.index] - others) / 0.5).mean(), abs=1e-6
            )
            assert item.image == str(image_files[item.index])

    def test_gpm_rank_follows_win_rates(self, scorer: RewardScorer, image_files) -> None:
        embeddings = scorer.score(image_files[:5], PROMPTS[3], perspective="overall")
        wins = [
            np.mean([expit(gpm_form(embeddings[i], embeddings[j]) / 0.25) for j in range(5) if j != i])
            for i in range(5)
        ]
        ranked = scorer.rank(PROMPTS[3], image_files[:5], perspective="overall")
        assert [item.index for item in ranked] == list(np.argsort(-np.array(wins), kind="stable"))
        assert all(item.score is None for item in ranked)
        assert [item.win_rate for item in ranked] == pytest.approx(sorted(wins, reverse=True), abs=1e-6)

    def test_single_image_and_bytes_input(self, scorer: RewardScorer, image_files) -> None:
        buffer = io.BytesIO()
        pictures(1, seed=11)[0].save(buffer, format="PNG")
        (only,) = scorer.rank(PROMPTS[0], [buffer.getvalue()])
        assert (only.rank, only.index, only.win_rate) == (1, 0, 0.5) and only.image.endswith("bytes>")
