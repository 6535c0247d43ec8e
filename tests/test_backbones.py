"""Backbones: e_v / e_h extraction checked against the models' own tensors on tiny checkpoints, padding,
prompt layout, LoRA targeting, loading errors and config round trip."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from reward.backbones import (
    Backbone,
    BackboneError,
    collate_rows,
    gather_visual_tokens,
    last_token_index,
    load_backbone,
)
from reward.config import BackboneConfig, ConfigError
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, projector_output  # noqa: F401 (autouse fixture)

ARCHS = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")
PROMPTS = [
    "two red circles to the left of one blue square",
    "a yellow star",
    "three green crosses above a white triangle",
    "one purple circle",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: str(build_tiny_backbone(root / arch, arch)) for arch in ARCHS}


@pytest.fixture(scope="module")
def backbones(tiny_dirs) -> dict[str, Backbone]:
    return {arch: load_backbone(path) for arch, path in tiny_dirs.items()}


def images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


SQUARE = [(64, 64)] * 4
MIXED = [(64, 64), (80, 48), (48, 64), (64, 64)]  # width, height


def reference_forward(backbone: Backbone, inputs) -> object:
    """The model's own base forward with every hidden state (what the backbone must agree with)."""
    kwargs = backbone.adapter.model_inputs(inputs, backbone.dtype, backbone.device)
    with torch.no_grad():
        return backbone.model.model(**kwargs, output_hidden_states=True, use_cache=False)


class TestVisualTokens:
    @pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen2_5_vl"])
    def test_e_v_is_the_projector_output(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        inputs = backbone.prepare(images(MIXED), PROMPTS)
        projected, output = projector_output(backbone, inputs)
        if arch == "llava":  # (B, 64, H): one row per image
            assert output.e_v_mask.all() and output.e_v.shape == projected.shape
            assert torch.equal(output.e_v, projected)
            return
        # Qwen: (sum of tokens, H), images one after another, 2x2 patches merged into one token.
        counts = (inputs["image_grid_thw"].prod(dim=1) // 4).tolist()
        assert output.e_v_mask.sum(dim=1).tolist() == counts and len(set(counts)) > 1
        assert torch.count_nonzero(output.e_v[~output.e_v_mask]) == 0
        if arch == "qwen2_vl":
            assert torch.equal(output.e_v[output.e_v_mask], projected)
            return
        # Qwen2.5-VL runs the merger in window order and restores raster order before the language
        # model: e_v holds exactly the merger's rows, each once. Images wider than one window
        # (64 px) are permuted; one-window images keep the merger's order.
        valid = output.e_v[output.e_v_mask]
        match = (valid.unsqueeze(1) == projected.unsqueeze(0)).all(dim=-1)  # (tokens, tokens)
        assert match.sum(dim=1).eq(1).all() and match.sum(dim=0).eq(1).all()
        permutation = match.int().argmax(dim=1)
        assert not torch.equal(permutation, torch.arange(len(permutation)))
        square = backbone.prepare(images(SQUARE), PROMPTS)
        projected, output = projector_output(backbone, square)
        assert torch.equal(output.e_v[output.e_v_mask], projected)

    def test_llava_next_e_v_is_the_packed_projector_output(self, backbones) -> None:
        # Square 64 px images: a base view and one 64 px tile, each 8x8 patches. The model packs
        # [base tokens, tile rows each followed by the image_newline embedding].
        backbone = backbones["llava_next"]
        inputs = backbone.prepare(images(SQUARE), PROMPTS)
        projected, output = projector_output(backbone, inputs)
        hidden = backbone.hidden_size
        projected = projected.view(4, 2, 64, hidden)  # (images, views, tokens, H)
        newline = backbone.model.model.image_newline
        assert output.e_v.shape == (4, 64 + 8 * 9, hidden) and output.e_v_mask.all()
        for row in range(4):
            assert torch.equal(output.e_v[row, :64], projected[row, 0])
            tile = output.e_v[row, 64:].view(8, 9, hidden)
            assert torch.equal(tile[:, :8], projected[row, 1].view(8, 8, hidden))
            assert torch.equal(tile[:, 8], newline.expand(8, hidden))

    @pytest.mark.parametrize("arch", ARCHS)
    def test_e_v_equals_first_hidden_state_at_image_tokens(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        inputs = backbone.prepare(images(MIXED, seed=1), PROMPTS)
        with torch.no_grad():
            output = backbone(inputs)
        reference = reference_forward(backbone, inputs)
        image_id = backbone.model.config.image_token_id
        for row in range(4):
            at_image_tokens = reference.hidden_states[0][row][inputs["input_ids"][row] == image_id]
            count = int(output.e_v_mask[row].sum())
            assert count == at_image_tokens.shape[0] > 0
            assert torch.equal(output.e_v[row, :count], at_image_tokens)

    def test_gradients_reach_the_projector_through_e_v(self, backbones) -> None:
        backbone = backbones["llava"]
        inputs = backbone.prepare(images(SQUARE[:2]), PROMPTS[:2])
        backbone.zero_grad()
        backbone(inputs).e_v.pow(2).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.projector.parameters())
        # e_v is read before the language model: its layers get no gradient (embeddings: zeros).
        assert all(
            p.grad is None or p.grad.count_nonzero() == 0 for p in backbone.language_model.parameters()
        )
        backbone.zero_grad()


class TestTextState:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_e_h_is_the_last_layer_at_the_last_token_for_either_padding(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        pictures = images(MIXED, seed=2)
        outputs = {}
        for side in ("left", "right"):
            backbone.processor.tokenizer.padding_side = side
            try:
                inputs = backbone.prepare(pictures, PROMPTS)
            finally:
                backbone.processor.tokenizer.padding_side = backbone.config.padding_side
            with torch.no_grad():
                outputs[side] = backbone(inputs, return_sequence=True)
            reference = reference_forward(backbone, inputs)
            lengths = inputs["attention_mask"].sum(dim=1)
            assert len(set(lengths.tolist())) > 1  # the batch really is padded
            for row in range(4):
                positions = inputs["attention_mask"][row].nonzero().flatten()
                assert int(outputs[side].last_index[row]) == int(positions.max())
                assert torch.equal(outputs[side].e_h[row], reference.last_hidden_state[row, positions.max()])
            assert torch.equal(outputs[side].sequence, reference.last_hidden_state)
        assert torch.allclose(outputs["left"].e_h, outputs["right"].e_h, atol=1e-5)
        for row in range(4):  # same visual tokens whatever the padding
            assert torch.equal(outputs["left"].e_v[row], outputs["right"].e_v[row])

    @pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
    def test_padding_does_not_change_a_row(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        pictures = images(MIXED, seed=3)
        with torch.no_grad():
            batched = backbone(backbone.prepare(pictures, PROMPTS))
            alone = backbone(backbone.prepare(pictures[1:2], PROMPTS[1:2]))
        assert torch.allclose(batched.e_h[1], alone.e_h[0], atol=1e-5)

    @pytest.mark.parametrize("layer", [0, 1, -2])
    def test_hidden_layer_selects_that_hidden_state(self, tiny_dirs, layer: int) -> None:
        backbone = load_backbone(tiny_dirs["llava"], hidden_layer=layer)
        inputs = backbone.prepare(images(MIXED), PROMPTS)
        with torch.no_grad():
            output = backbone(inputs)
        reference = reference_forward(backbone, inputs)
        last = last_token_index(inputs["attention_mask"])
        assert torch.equal(output.e_h, reference.hidden_states[layer][torch.arange(4), last])

    def test_hidden_layer_out_of_range(self, tiny_dirs) -> None:
        with pytest.raises(
            BackboneError, match=r"hidden_layer=3 is out of range .* 2 layers \(valid: -3..2\)"
        ):
            load_backbone(tiny_dirs["llava"], hidden_layer=3)


class TestPrompts:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_prompt_comes_before_the_image_and_ends_with_eos(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        inputs = backbone.prepare(images(SQUARE[:1]), PROMPTS[:1])
        tokens = backbone.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
        image_token = backbone.processor.image_token
        words = PROMPTS[0].split()
        assert tokens[: len(words) + 1] == ["<s>", *words]
        assert tokens.index(image_token) > len(words)
        assert tokens[-1] == "</s>" and "<unk>" not in tokens

    def test_custom_template_is_used(self, tiny_dirs) -> None:
        backbone = load_backbone(tiny_dirs["llava"], prompt_template="{image} {prompt}")
        assert backbone.render_prompt("a red star") == "<image> a red star"
        tokens = backbone.processor.tokenizer.convert_ids_to_tokens(
            backbone.prepare(images(SQUARE[:1]), ["a red star"])["input_ids"][0]
        )
        assert tokens[:64] == ["<image>"] * 64 and tokens[64:] == ["a", "red", "star"]

    def test_bad_inputs_are_named(self, backbones) -> None:
        backbone = backbones["llava"]
        with pytest.raises(BackboneError, match="got 2 images but 1 prompts"):
            backbone.prepare(images(SQUARE[:2]), PROMPTS[:1])
        with pytest.raises(
            BackboneError, match=r"images\[1\] must be a PIL image or a uint8 \(3, H, W\) tensor, got ndarray"
        ):
            backbone.prepare([images(SQUARE[:1])[0], np.zeros((4, 4, 3))], PROMPTS[:2])
        with pytest.raises(BackboneError, match=r"prompts\[0\] must be a string"):
            backbone.prepare(images(SQUARE[:1]), [None])
        with pytest.raises(BackboneError, match=r"prompts\[1\] contains the image token '<image>'"):
            backbone.prepare(images(SQUARE[:2]), ["a red star", "a <image> star"])
        with pytest.raises(BackboneError, match="need 'input_ids' and 'attention_mask'"):
            backbone({"pixel_values": torch.zeros(1, 3, 64, 64)})

    @pytest.mark.parametrize("arch", ARCHS)
    def test_uint8_tensors_give_the_inputs_of_the_same_pil_images(self, backbones, arch: str) -> None:
        """A sampler's pixels reach the processor as tensors, with exactly the PIL path's result."""
        backbone = backbones[arch]
        pictures = images(MIXED, seed=3)
        tensors = [
            torch.from_numpy(np.asarray(picture)).permute(2, 0, 1).contiguous() for picture in pictures
        ]
        from_pil, from_tensors = backbone.prepare(pictures, PROMPTS), backbone.prepare(tensors, PROMPTS)
        assert backbone.adapter.accepts_pixel_tensors
        assert from_pil.keys() == from_tensors.keys()
        for key, value in from_pil.items():
            assert torch.equal(value, from_tensors[key]), key

    def test_bad_image_tensors_are_named(self, backbones) -> None:
        backbone = backbones["llava"]
        pixels = torch.zeros(3, 8, 8, dtype=torch.uint8)
        with pytest.raises(
            BackboneError,
            match=r"images\[1\]: an image tensor must be uint8 \(3, H, W\), got float32 \(3, 8, 8\)",
        ):
            backbone.prepare([pixels, pixels.float()], PROMPTS[:2])
        with pytest.raises(BackboneError, match=r"images\[0\]: .* got uint8 \(8, 8, 3\)"):
            backbone.prepare([pixels.permute(1, 2, 0)], PROMPTS[:1])

    def test_grayscale_images_are_converted(self, backbones) -> None:
        backbone = backbones["llava"]
        gray = images(SQUARE[:1])[0].convert("L")
        with torch.no_grad():
            got = backbone.encode([gray], PROMPTS[:1]).e_h
            want = backbone.encode([gray.convert("RGB")], PROMPTS[:1]).e_h
        assert torch.equal(got, want)


class TestLoraTargets:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_regex_matches_language_model_projections_only(self, backbones, arch: str) -> None:
        backbone = backbones[arch]
        names = [name for name, _ in backbone.model.named_modules()]
        modules = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        pattern = backbone.lora_target_regex(modules)
        matched = [name for name in names if re.fullmatch(pattern, name)]
        assert len(matched) == backbone.num_layers * len(modules)
        assert all(name.startswith("model.language_model.layers.") for name in matched)
        # The bare names also hit the vision tower (CLIP q/k/v_proj, Qwen2.5-VL gate/up/down_proj); the
        # regex does not. Qwen2-VL's vision blocks use other names (qkv, fc1, fc2).
        vision = [name for name in names if name.startswith(backbone.adapter.vision_tower_path + ".")]
        bare = [name for name in vision if name.split(".")[-1] in modules]
        assert (len(bare) > 0) == (arch != "qwen2_vl")
        assert vision and not set(vision) & set(matched)
        assert all(re.fullmatch(pattern, f"base_model.model.{name}") for name in matched)

    def test_peft_puts_lora_in_the_language_model_only(self, tiny_dirs) -> None:
        from peft import LoraConfig, get_peft_model

        backbone = load_backbone(tiny_dirs["llava"])
        config = LoraConfig(r=2, lora_alpha=4, target_modules=backbone.lora_target_regex())
        peft_model = get_peft_model(backbone.model, config)
        lora = [name for name, _ in peft_model.named_parameters() if "lora_" in name]
        assert len(lora) == 2 * 4 * backbone.num_layers  # A and B for q, k, v, o per layer
        assert all(".language_model.layers." in name for name in lora)
        inputs = backbone.prepare(images(SQUARE[:2]), PROMPTS[:2])
        with torch.no_grad():
            assert backbone(inputs).e_h.shape == (2, backbone.hidden_size)  # still runs with LoRA injected


class TestLoading:
    def test_loads_the_native_class_and_processor(self, backbones) -> None:
        assert type(backbones["llava"].model).__name__ == "LlavaForConditionalGeneration"
        assert type(backbones["qwen2_5_vl"].model).__name__ == "Qwen2_5_VLForConditionalGeneration"
        assert type(backbones["llava_next"].processor).__name__ == "LlavaNextProcessor"
        assert backbones["qwen2_vl"].adapter.name == "qwen_vl"
        assert not backbones["llava"].training and backbones["llava"].hidden_size == 64

    def test_dtype_is_applied(self, tiny_dirs) -> None:
        backbone = load_backbone(tiny_dirs["qwen2_5_vl"], dtype="bfloat16")
        assert backbone.dtype == torch.bfloat16
        with torch.no_grad():
            output = backbone.encode(images(SQUARE[:2]), PROMPTS[:2])
        assert output.e_h.dtype == torch.bfloat16 and torch.isfinite(output.e_h.float()).all()

    def test_missing_checkpoint_is_named(self, tmp_path) -> None:
        with pytest.raises(BackboneError, match=r"nowhere: cannot read its config.json"):
            load_backbone(str(tmp_path / "nowhere"))

    def test_unsupported_architecture_lists_the_supported_ones(self, tmp_path) -> None:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
        with pytest.raises(BackboneError, match=r"model_type 'bert' is not supported; supported: \['llava'"):
            load_backbone(str(tmp_path))

    def test_a_folders_code_never_runs_without_consent(self, tmp_path) -> None:
        # A phi3_v folder whose auto_map names a module that would leave a marker when imported.
        marker = tmp_path / "marker.txt"
        (tmp_path / "configuration_phi3_v.py").write_text(
            f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n"
            "class Phi3VConfig(PretrainedConfig):\n    model_type = 'phi3_v'\n"
        )
        config = {
            "model_type": "phi3_v",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "auto_map": {"AutoConfig": "configuration_phi3_v.Phi3VConfig"},
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(BackboneError, match=r"loading the phi3_v model failed"):
            load_backbone(str(tmp_path))  # the native path: reads the files, finds no weights
        assert not marker.exists()

    def test_backbone_config_round_trip_and_validation(self, tmp_path) -> None:
        config = BackboneConfig(
            name_or_path="x/y", dtype="bfloat16", hidden_layer=-2, prompt_template="{prompt}{image}"
        )
        assert BackboneConfig.from_json(config.to_json(tmp_path / "backbone.json")) == config
        with pytest.raises(ConfigError, match="BackboneConfig.dtype must be one of"):
            BackboneConfig(name_or_path="x", dtype="int8")
        with pytest.raises(ConfigError, match="must contain both '{prompt}' and '{image}'"):
            BackboneConfig(name_or_path="x", prompt_template="{prompt}")
        with pytest.raises(ConfigError, match="BackboneConfig.padding_side"):
            BackboneConfig(name_or_path="x", padding_side="middle")


class TestHelpers:
    def test_last_token_index_for_both_paddings(self) -> None:
        mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
        assert last_token_index(mask).tolist() == [3, 2, 0, 3]
        with pytest.raises(ValueError, match=r"no tokens in row\(s\) \[1\]"):
            last_token_index(torch.tensor([[1, 0], [0, 0]]))

    def test_gather_visual_tokens_keeps_order_and_pads(self) -> None:
        embeddings = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
        mask = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
        tokens, valid = gather_visual_tokens(embeddings, mask)
        assert tokens[..., 0].tolist() == [[1.0, 3.0, 4.0], [7.0, 0.0, 0.0]]
        assert valid.tolist() == [[True, True, True], [True, False, False]]
        tokens, valid = gather_visual_tokens(embeddings, torch.zeros(2, 5, dtype=torch.bool))
        assert tokens.shape == (2, 1, 1) and not valid.any()

    def test_collate_rows_pads_text_and_stacks_images(self) -> None:
        rows = [
            {
                "input_ids": torch.tensor([[5, -1, -1, 6]]),
                "attention_mask": torch.ones(1, 4, dtype=torch.long),
                "pixel_values": torch.zeros(1, 2, 3),
                "image_sizes": torch.tensor([[8, 8]]),
            },
            {
                "input_ids": torch.tensor([[7, -1]]),
                "attention_mask": torch.ones(1, 2, dtype=torch.long),
                "pixel_values": torch.ones(1, 2, 3),
                "image_sizes": torch.tensor([[4, 8]]),
            },
        ]
        left = collate_rows(rows, pad_token_id=0, padding_side="left")
        assert left["input_ids"].tolist() == [[5, -1, -1, 6], [0, 0, 7, -1]]
        assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
        assert left["pixel_values"].shape == (2, 2, 3) and left["image_sizes"].tolist() == [[8, 8], [4, 8]]
        right = collate_rows(rows, pad_token_id=9, padding_side="right")
        assert right["input_ids"].tolist() == [[5, -1, -1, 6], [7, -1, 9, 9]]
        rows[1]["pixel_values"] = torch.ones(1, 3, 3)
        with pytest.raises(
            BackboneError,
            match=r"'pixel_values' has unequal shapes across rows: \[\(1, 2, 3\), \(1, 3, 3\)\]",
        ):
            collate_rows(rows, pad_token_id=0, padding_side="left")
