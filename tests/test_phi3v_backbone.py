"""Phi-3.5-vision through the opt-in remote-code loading path, on an offline stand-in of its remote code
(tests/phi3v_standin): e_v is the projector's output, e_h the last layer at the last token, LoRA stays in
the language model; without trust_remote_code the same folder loads natively (reward.backbones.phi3v) and
gives the same e_v and e_h."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from reward.backbones import Backbone, load_backbone
from reward.checkpoint import RewardModelConfig, load_reward_model, save_reward_model
from reward.config import BackboneConfig, HeadConfig, LoraSettings
from reward.losses import bt_loss
from reward.model import RewardModel
from tests.phi3v_standin import build_phi3v_standin
from tests.reward_support import one_torch_thread, projector_output  # noqa: F401 (autouse fixture)

PROMPTS = [
    "two red circles to the left of one blue square",
    "a yellow star",
    "three green crosses above a white triangle",
    "one purple circle",
]
MIXED = [(64, 64), (80, 48), (48, 64), (64, 64)]  # width, height: 2x2, 1x2, 2x2, 2x2 crops of 16 px
NUM_CROPS = 4


def images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def phi_dir(tmp_path_factory) -> str:
    return str(build_phi3v_standin(tmp_path_factory.mktemp("remote") / "phi3v", num_crops=NUM_CROPS))


@pytest.fixture(scope="module")
def backbone(phi_dir) -> Backbone:
    return load_backbone(phi_dir, trust_remote_code=True)


def reference_forward(backbone: Backbone, inputs) -> object:
    """The model's own base forward with every hidden state, on a copy of the ids (it clamps them)."""
    mask = inputs["attention_mask"]
    with torch.no_grad():
        return backbone.model.model(
            input_ids=inputs["input_ids"].clone(),
            attention_mask=mask,
            position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
            output_hidden_states=True,
        )


class TestLoading:
    def test_loads_the_checkpoint_code_through_the_auto_classes(self, backbone) -> None:
        assert type(backbone.model).__name__ == "Phi3VForCausalLM"
        assert type(backbone.processor).__name__ == "Phi3VProcessor"
        # The classes come from the checkpoint folder's copies (remote code), not from tests/.
        assert type(backbone.model).__module__.startswith("transformers_modules.")
        assert (
            backbone.adapter.name == "phi3_v_remote"
            and backbone.num_layers == 2
            and backbone.hidden_size == 32
        )
        assert backbone.processor.tokenizer.padding_side == "left" and not backbone.training

    def test_without_trust_remote_code_the_native_classes_load(self, phi_dir) -> None:
        native = load_backbone(phi_dir)
        assert type(native.model).__module__ == "reward.backbones.phi3v.modeling"
        assert native.adapter.name == "phi3_v" and not native.adapter.remote_code


class TestNativeMatchesStandIn:
    """Where both apply (the same folder, weights and inputs) the native model and the stand-in of the
    remote code give the same visual tokens and text state."""

    def test_same_e_v_and_e_h(self, backbone, phi_dir) -> None:
        native = load_backbone(phi_dir)
        inputs = backbone.prepare(images(MIXED, seed=7), PROMPTS)  # the stand-in processor's tensors
        with torch.no_grad():
            remote, ours = backbone(inputs), native(inputs)
        assert torch.equal(ours.e_v_mask, remote.e_v_mask) and ours.e_v_mask.sum(dim=1).tolist() == [
            27,
            17,
            27,
            27,
        ]
        for mine, theirs in ((ours.e_v, remote.e_v), (ours.e_h, remote.e_h)):
            scale = float(theirs.abs().max())
            assert scale > 1e-3  # not trivially equal
            assert float((mine - theirs).abs().max()) <= 1e-5 * scale


class TestVisualTokens:
    def test_uint8_tensors_become_the_pil_images_of_the_hd_transform(self, phi_dir) -> None:
        """The HD transform resizes PIL images (the paper's arithmetic), so tensors are converted first."""
        native = load_backbone(phi_dir)
        pictures = images(MIXED, seed=5)
        tensors = [torch.from_numpy(np.asarray(picture)).permute(2, 0, 1) for picture in pictures]
        assert not native.adapter.accepts_pixel_tensors
        from_pil, from_tensors = native.prepare(pictures, PROMPTS), native.prepare(tensors, PROMPTS)
        for key, value in from_pil.items():
            assert torch.equal(value, from_tensors[key]), key

    def test_processor_writes_negative_ids_one_run_per_image(self, backbone) -> None:
        pictures = images(MIXED)
        inputs = backbone.prepare(pictures, PROMPTS)
        assert inputs["pixel_values"].shape == (4, NUM_CROPS + 1, 3, 16, 16)
        assert inputs["image_sizes"].tolist() == [[32, 32], [16, 32], [32, 32], [32, 32]]
        # Per crop 4x4 patches -> 2x2 merged tokens: crops with a newline per row, a separator, the
        # global view with newlines: 2x2 crops: 4 * 5 + 1 + 6 = 27; 1x2 crops: 2 * 5 + 1 + 6 = 17.
        assert (inputs["input_ids"] < 0).sum(dim=1).tolist() == [27, 17, 27, 27]
        assert set(inputs["input_ids"][inputs["input_ids"] < 0].tolist()) == {-1}

    def test_e_v_is_the_projector_output(self, backbone) -> None:
        inputs = backbone.prepare(images(MIXED), PROMPTS)
        image_ids = inputs["input_ids"] < 0
        projected, output = projector_output(backbone, inputs)
        assert output.e_v_mask.sum(dim=1).tolist() == image_ids.sum(dim=1).tolist() == [27, 17, 27, 27]
        assert torch.equal(output.e_v[output.e_v_mask], projected)  # all images, in order, exactly
        assert torch.count_nonzero(output.e_v[~output.e_v_mask]) == 0
        # The model clamps the ids it is given in place; the caller's batch keeps its image tokens.
        assert torch.equal(inputs["input_ids"] < 0, image_ids)
        with torch.no_grad():
            again = backbone(inputs)
        assert torch.equal(again.e_v, output.e_v)

    def test_e_v_is_the_first_hidden_state_at_image_tokens(self, backbone) -> None:
        inputs = backbone.prepare(images(MIXED, seed=1), PROMPTS)
        with torch.no_grad():
            output = backbone(inputs)
        reference = reference_forward(backbone, inputs)
        for row in range(4):
            at_image_tokens = reference.hidden_states[0][row][inputs["input_ids"][row] < 0]
            count = int(output.e_v_mask[row].sum())
            assert count == at_image_tokens.shape[0] > 0
            assert torch.equal(output.e_v[row, :count], at_image_tokens)

    def test_gradients_reach_the_projector_through_e_v(self, backbone) -> None:
        inputs = backbone.prepare(images(MIXED[:2]), PROMPTS[:2])
        backbone.zero_grad()
        backbone(inputs).e_v.pow(2).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.projector.parameters())
        assert all(p.grad is None for layer in backbone.model.model.layers for p in layer.parameters())
        backbone.zero_grad()


class TestTextState:
    def test_e_h_is_the_last_layer_at_the_last_token_with_left_padding(self, backbone) -> None:
        pictures, prompts = images([(64, 64), (64, 64)], seed=2), [PROMPTS[0], PROMPTS[1]]
        inputs = backbone.prepare(pictures, prompts)
        mask = inputs["attention_mask"]
        assert mask[0].all() and not mask[1].all() and mask[1, -1] == 1  # row 1 is padded on the left
        with torch.no_grad():
            output = backbone(inputs, return_sequence=True)
        reference = reference_forward(backbone, inputs)
        length = mask.shape[1]
        assert output.last_index.tolist() == [length - 1, length - 1]
        assert torch.equal(reference.hidden_states[-1], reference.last_hidden_state)
        assert torch.equal(output.e_h, reference.last_hidden_state[:, -1])
        assert torch.equal(output.sequence, reference.last_hidden_state)
        last = backbone.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][:, -1].tolist())
        assert last == ["<|assistant|>", "<|assistant|>"]  # the default Phi-3 template's last token
        with torch.no_grad():
            alone = backbone(backbone.prepare(pictures[1:], prompts[1:]))
        assert torch.allclose(output.e_h[1], alone.e_h[0], atol=1e-5)  # padding does not leak in


class TestLora:
    def test_regex_matches_language_model_projections_only(self, backbone) -> None:
        names = [name for name, _ in backbone.model.named_modules()]
        layers = range(backbone.num_layers)
        expected = {f"model.layers.{i}.self_attn.{proj}" for i in layers for proj in ("qkv_proj", "o_proj")}
        assert {name for name in names if re.fullmatch(backbone.lora_target_regex(), name)} == expected
        # CLIP's q/k/v_proj in the vision tower share bare names with common LoRA targets; not matched.
        modules = ("qkv_proj", "o_proj", "q_proj", "k_proj", "v_proj", "gate_up_proj", "down_proj")
        pattern = backbone.lora_target_regex(modules)
        matched = {name for name in names if re.fullmatch(pattern, name)}
        assert len(matched) == backbone.num_layers * 4 and all(n.startswith("model.layers.") for n in matched)
        tower = [name for name in names if name.startswith("model.vision_embed_tokens.img_processor.")]
        assert any(name.endswith(".q_proj") for name in tower) and not matched & set(tower)

    def test_peft_lora_and_projector_copy_keep_the_forward_working(self, phi_dir) -> None:
        from peft import LoraConfig, get_peft_model

        backbone = load_backbone(phi_dir, trust_remote_code=True)
        save = backbone.adapter.projector_modules_to_save(backbone.model)
        assert save == [f"{backbone.adapter.projector_path}.{i}" for i in (0, 2)]  # Linear, GELU, Linear
        config = LoraConfig(
            r=2, lora_alpha=4, target_modules=backbone.lora_target_regex(), modules_to_save=save
        )
        peft_model = get_peft_model(backbone.model, config)
        lora = [name for name, _ in peft_model.named_parameters() if "lora_" in name]
        assert len(lora) == 2 * 2 * backbone.num_layers  # A and B for qkv_proj and o_proj per layer
        assert all(".model.layers." in name and "vision_embed_tokens" not in name for name in lora)
        inputs = backbone.prepare(images(MIXED[:2]), PROMPTS[:2])
        projected, output = projector_output(backbone, inputs)
        assert torch.equal(output.e_v[output.e_v_mask], projected)

    def test_wrapping_the_whole_projector_breaks_the_published_forward(self, phi_dir) -> None:
        # Why the Phi adapter names the projector's layers: the remote code reads img_projection[0].bias
        # only when the projector is an nn.Sequential, and a peft wrapper is not one.
        from peft import LoraConfig, get_peft_model

        backbone = load_backbone(phi_dir, trust_remote_code=True)
        config = LoraConfig(
            r=2, target_modules=backbone.lora_target_regex(), modules_to_save=["img_projection"]
        )
        get_peft_model(backbone.model, config)
        with pytest.raises(AttributeError, match="'Sequential' object has no attribute 'bias'"):
            backbone(backbone.prepare(images(MIXED[:1]), PROMPTS[:1]))


class TestRewardModel:
    def test_projector_and_head_get_gradients_without_lora(self, phi_dir) -> None:
        model = RewardModel(load_backbone(phi_dir, trust_remote_code=True), HeadConfig(kind="skipca"))
        good, bad = model.pair_rewards(images(MIXED[:2], 3), PROMPTS[:2], images(MIXED[2:], 4), PROMPTS[2:])
        assert good.shape == bad.shape == (2,) and torch.isfinite(torch.cat([good, bad])).all()
        bt_loss(good, bad).backward()
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        prefix = "backbone.model.model.vision_embed_tokens.img_projection."
        assert trainable == {n for n in trainable if n.startswith(("head.", prefix))}
        assert all(p.grad is not None for p in model.backbone.projector.parameters())

    def test_lora_model_trains_saves_and_reloads_bit_for_bit(self, phi_dir, tmp_path) -> None:
        torch.manual_seed(0)
        backbone = load_backbone(phi_dir, trust_remote_code=True)
        model = RewardModel(backbone, HeadConfig(kind="skipca"), LoraSettings(rank=2, dropout=0.0))
        before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        assert any(".img_projection." in name and "modules_to_save" in name for name in before)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(2):  # LoRA B starts at zero, so A only moves from the second step on
            optimizer.zero_grad()
            good, bad = model.pair_rewards(
                images(MIXED[:2], 3), PROMPTS[:2], images(MIXED[2:], 4), PROMPTS[2:]
            )
            bt_loss(good, bad).backward()
            optimizer.step()
        after = dict(model.named_parameters())
        unchanged = [name for name, value in before.items() if torch.equal(value, after[name].detach())]
        assert not unchanged, f"trainable tensors that did not change: {unchanged}"

        config = RewardModelConfig(
            "alignment",
            BackboneConfig(phi_dir, trust_remote_code=True),
            head=HeadConfig(kind="skipca"),
            lora=LoraSettings(rank=2, dropout=0.0),
        )
        folder = save_reward_model(model.eval(), tmp_path / "alignment", config)
        loaded, _ = load_reward_model(folder, trust_remote_code=True)
        with torch.no_grad():
            expected = model.score(images(MIXED, 5), PROMPTS)
            assert torch.equal(loaded.score(images(MIXED, 5), PROMPTS), expected)
