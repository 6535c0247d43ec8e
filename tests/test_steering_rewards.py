"""Steering rewards: adapters for the project's scorers and user callables, on tensors in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward.baselines import ClipScoreScorer, ClipSpec
from reward.config import HeadConfig, LoraSettings, LossConfig
from reward.scoring import RewardScorer
from reward.steering import PilReward, ScorerReward, clipscore_reward, to_pil
from reward.steering.rewards import as_reward_vector
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, save, trained_model  # noqa: F401

PROMPTS = ["two red circles", "a blue square above a star", "three yellow crosses"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> RewardScorer:
    root = tmp_path_factory.mktemp("steer-scoring")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    folders = {}
    for seed, (name, head) in enumerate(
        [
            ("alignment", HeadConfig()),
            ("fidelity", HeadConfig()),
            ("overall", HeadConfig(kind="linear", gpm_dim=2)),
        ]
    ):
        model = trained_model(backbone, perspective=name, head=head, lora=LoraSettings(rank=2), seed=seed + 1)
        folders[name] = save(model, root / name, backbone, LossConfig("gpm" if head.gpm_dim else "bt"))
    return RewardScorer.from_pretrained(folders, device="cpu", batch_size=2)


def test_to_pil_rounds_to_bytes(images: torch.Tensor) -> None:
    pil = to_pil(images)
    assert len(pil) == 3 and pil[0].size == (32, 32) and pil[0].mode == "RGB"
    expected = np.rint(images[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(pil[1]), expected)


def test_weighted_mix_of_perspectives(scorer: RewardScorer, images: torch.Tensor) -> None:
    pil = to_pil(images)
    alignment = scorer.score(pil, PROMPTS, perspective="alignment")
    fidelity = scorer.score(pil, PROMPTS, perspective="fidelity")
    mixed = ScorerReward(scorer, {"alignment": 0.7, "fidelity": 0.3})(images, PROMPTS)
    assert mixed.numpy() == pytest.approx(0.7 * alignment + 0.3 * fidelity, abs=1e-6)
    assert ScorerReward(scorer, "fidelity")(images, PROMPTS).numpy() == pytest.approx(fidelity, abs=1e-6)
    assert scorer.active == "alignment"
    with pytest.raises(ValueError, match="'overall' is a GPM model"):
        ScorerReward(scorer, "overall")


def test_scorer_reward_takes_the_particles_without_pil(
    scorer: RewardScorer, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The particles reach the scorer as uint8 tensors and score as their 8-bit PIL images do."""
    expected = scorer.score(to_pil(images), PROMPTS, perspective="alignment")
    seen = []
    original = scorer.score

    def recording(pictures, prompts, **kwargs):  # noqa: ANN001, ANN202
        seen.extend(type(picture).__name__ for picture in pictures)
        return original(pictures, prompts, **kwargs)

    monkeypatch.setattr(scorer, "score", recording)
    got = ScorerReward(scorer, "alignment")(images, PROMPTS).numpy()
    assert seen == ["Tensor"] * 3
    assert np.array_equal(got, expected.astype(np.float64))


def test_clipscore_reward_matches_the_baseline(images: torch.Tensor) -> None:
    reward = clipscore_reward(ClipSpec())
    expected = ClipScoreScorer(ClipSpec()).score(to_pil(images), PROMPTS)
    assert reward(images, PROMPTS).numpy() == pytest.approx(expected)


def test_user_callables_and_bad_shapes(images: torch.Tensor) -> None:
    brightness = PilReward(lambda pil, prompts: [float(np.asarray(p).mean()) for p in pil], name="bright")
    assert brightness(images, PROMPTS).shape == (3,)
    assert as_reward_vector(np.ones((3, 1)), 3).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"bright returned shape \(2,\) for 3 images"):
        PilReward(lambda pil, prompts: [0.0, 1.0], name="bright")(images, PROMPTS)
