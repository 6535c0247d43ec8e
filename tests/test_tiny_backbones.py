"""Tiny offline checkpoints: determinism, size, tokenizer coverage, visual token counts, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from reward.backbones import load_backbone
from reward.tiny import ARCHITECTURES, build_tiny_backbone, build_tokenizer
from tests.reward_support import one_torch_thread  # noqa: F401 (autouse fixture)

# The demo corpus' words (counts, colours, shapes, relations) that must never become <unk>.
CORPUS_WORDS = (
    "one two three red green blue yellow purple orange black white circle circles square squares "
    "triangle triangles star stars cross crosses to the left of right above below a an and with image"
).split()


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


class TestDeterminism:
    def test_same_seed_same_checkpoint_other_seed_other_weights(self, tmp_path) -> None:
        first = build_tiny_backbone(tmp_path / "a", "qwen2_5_vl", seed=7)
        second = build_tiny_backbone(tmp_path / "b", "qwen2_5_vl", seed=7)
        third = build_tiny_backbone(tmp_path / "c", "qwen2_5_vl", seed=8)
        a, b, c = weights(first), weights(second), weights(third)
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)
        assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()

    def test_building_leaves_the_global_rng_alone(self, tmp_path) -> None:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        build_tiny_backbone(tmp_path / "m", "llava")
        assert torch.equal(torch.rand(3), expected)


class TestShape:
    @pytest.mark.parametrize("arch", ARCHITECTURES)
    def test_tiny_and_fast(self, tmp_path, arch: str) -> None:
        start = time.perf_counter()
        folder = build_tiny_backbone(tmp_path / arch, arch)
        backbone = load_backbone(folder)
        elapsed = time.perf_counter() - start
        assert elapsed < 10.0  # seconds, on a busy 2-core machine; typically ~0.1 s
        text = backbone.text_config
        assert (text.hidden_size, text.num_hidden_layers) == (64, 2)
        assert sum(p.numel() for p in backbone.parameters()) < 400_000
        assert backbone.model.config.model_type == arch

    @pytest.mark.parametrize(("arch", "tokens"), [("llava", 64), ("qwen2_vl", 16), ("qwen2_5_vl", 16)])
    def test_visual_token_count_follows_image_and_patch_size(self, tmp_path, arch: str, tokens: int) -> None:
        backbone = load_backbone(build_tiny_backbone(tmp_path / arch, arch))
        picture = Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8))
        with torch.no_grad():
            output = backbone.encode([picture], ["a red star"])
        assert int(output.e_v_mask.sum()) == tokens  # llava: (64 / 8)^2; qwen: (64 / 8)^2 / (2 x 2)

    def test_options_change_the_geometry(self, tmp_path) -> None:
        folder = build_tiny_backbone(
            tmp_path / "m", "llava", image_size=32, patch_size=4, hidden_size=32, num_layers=3
        )
        backbone = load_backbone(folder)
        picture = Image.fromarray(np.zeros((50, 70, 3), dtype=np.uint8))
        with torch.no_grad():
            output = backbone.encode([picture], ["a red star"])
        assert output.e_v.shape == (1, 64, 32) and backbone.num_layers == 3

    def test_invalid_arguments(self, tmp_path) -> None:
        with pytest.raises(ValueError, match=r"arch must be one of \['llava', 'llava_next', 'qwen2_vl'"):
            build_tiny_backbone(tmp_path, "blip")
        with pytest.raises(ValueError, match="image_size=60 must be a multiple of 16 for qwen2_vl"):
            build_tiny_backbone(tmp_path, "qwen2_vl", image_size=60)
        with pytest.raises(ValueError, match="hidden_size=30 must split into 4 heads"):
            build_tiny_backbone(tmp_path, "llava", hidden_size=30)


class TestTokenizer:
    def test_corpus_words_are_known_and_case_insensitive(self) -> None:
        tokenizer = build_tokenizer(["<image>"])
        unk = tokenizer.unk_token_id
        ids = tokenizer(" ".join(CORPUS_WORDS), add_special_tokens=False)["input_ids"]
        assert len(ids) == len(CORPUS_WORDS) and unk not in ids
        assert tokenizer("Two RED Circles")["input_ids"] == tokenizer("two red circles")["input_ids"]
        assert tokenizer("zebra")["input_ids"] == [unk]

    def test_special_tokens_stay_whole(self) -> None:
        tokenizer = build_tokenizer(["<image>", "<|image_pad|>"])
        image = tokenizer.convert_tokens_to_ids("<image>")
        pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert tokenizer("red<image><image> <|image_pad|>.")["input_ids"] == [
            tokenizer.convert_tokens_to_ids("red"),
            image,
            image,
            pad,
            tokenizer.convert_tokens_to_ids("."),
        ]
        assert tokenizer.pad_token_id == 0

    def test_extra_words_extend_the_vocabulary(self) -> None:
        tokenizer = build_tokenizer(["<image>"], extra_words=["Zebra", "hexagon"])
        assert tokenizer.unk_token_id not in tokenizer("a zebra hexagon")["input_ids"]
