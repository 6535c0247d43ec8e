"""Reward heads: SkipCA against an independent computation, masking, pooling, GPM outputs, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reward.backbones.features import BackboneOutput
from reward.config import ConfigError, HeadConfig
from reward.heads import LinearHead, MultiHeadSkipCAHead, SkipCAHead, build_head

HIDDEN = 8


def features(
    batch: int = 3, text_len: int = 5, visual_counts: tuple[int, ...] = (4, 2, 3), seed: int = 0
) -> BackboneOutput:
    """Random features with right-padded text and zero-padded visual tokens."""
    generator = torch.Generator().manual_seed(seed)
    width = max(visual_counts)
    e_v = torch.randn(batch, width, HIDDEN, generator=generator)
    e_v_mask = torch.arange(width).unsqueeze(0) < torch.tensor(visual_counts).unsqueeze(1)
    e_v = e_v * e_v_mask.unsqueeze(-1)
    sequence = torch.randn(batch, text_len, HIDDEN, generator=generator)
    lengths = torch.tensor([text_len - row % 2 for row in range(batch)])
    attention_mask = (torch.arange(text_len).unsqueeze(0) < lengths.unsqueeze(1)).long()
    last_index = lengths - 1
    e_h = sequence[torch.arange(batch), last_index]
    return BackboneOutput(e_h, e_v, e_v_mask, attention_mask, last_index, sequence)


def reference_skipca(
    head: SkipCAHead, query: torch.Tensor, e_v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The paper's SkipCA written out: RMSNorm(q + softmax(W_q q (W_k v)^T / sqrt(H)) W_v v) -> W_o,
    no bias anywhere."""
    q, k, v = query @ head.query.weight.T, e_v @ head.key.weight.T, e_v @ head.value.weight.T
    scores = (q @ k.transpose(1, 2)) / math.sqrt(HIDDEN)
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    mixed = query + torch.softmax(scores, dim=-1) @ v
    normed = mixed / torch.sqrt(mixed.pow(2).mean(-1, keepdim=True) + 1e-5) * head.norm.weight
    return normed @ head.output.weight.T


def reference_mha(
    head: MultiHeadSkipCAHead, query: torch.Tensor, e_v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Single-head 'skipca_mha' written out: LayerNorm(q + softmax(QK^T / sqrt(d)) V W_o) -> linear."""
    w_q, w_k, w_v = head.attention.in_proj_weight.chunk(3)
    q, k, v = query @ w_q.T, e_v @ w_k.T, e_v @ w_v.T
    scores = (q @ k.transpose(1, 2)) / math.sqrt(HIDDEN)
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    attended = torch.softmax(scores, dim=-1) @ v @ head.attention.out_proj.weight.T
    mixed = F.layer_norm(query + attended, (HIDDEN,), head.norm.weight, head.norm.bias)
    return mixed @ head.output.weight.T + head.output.bias


def randomized(head: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every parameter random (norm scales too), so no term of the arithmetic hides behind an init value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * 0.5 + (parameter == 1).float()
            )
    return head


REFERENCES = {"skipca": reference_skipca, "skipca_mha": reference_mha}


class TestSkipCA:
    @pytest.mark.parametrize("kind", ["skipca", "skipca_mha"])
    def test_matches_the_written_out_computation(self, kind: str) -> None:
        torch.manual_seed(0)
        head = randomized(build_head(HIDDEN, HeadConfig(kind=kind)))
        feats = features()
        expected = REFERENCES[kind](head, feats.e_h.unsqueeze(1), feats.e_v, feats.e_v_mask)[:, 0, 0]
        assert torch.allclose(head(feats), expected, atol=1e-6)

    def test_paper_head_has_the_papers_parameters_only(self) -> None:
        head = build_head(HIDDEN, HeadConfig(kind="skipca", gpm_dim=1))
        shapes = {name: tuple(parameter.shape) for name, parameter in head.named_parameters()}
        assert shapes == {
            "output.weight": (2, HIDDEN),  # value_head, no bias
            "query.weight": (HIDDEN, HIDDEN),  # W_q, W_k, W_v: bias-free
            "key.weight": (HIDDEN, HIDDEN),
            "value.weight": (HIDDEN, HIDDEN),
            "norm.weight": (HIDDEN,),  # ca_layernorm: RMSNorm, scale only
        }

    def test_rms_norm_epsilon_is_the_configured_one(self) -> None:
        feats = features()
        tiny = randomized(build_head(HIDDEN, HeadConfig(norm_eps=1e-5)))
        large = build_head(HIDDEN, HeadConfig(norm_eps=10.0))
        large.load_state_dict(tiny.state_dict())
        assert not torch.allclose(tiny(feats), large(feats), atol=1e-4)

    @pytest.mark.parametrize("kind", ["skipca", "skipca_mha"])
    def test_padding_visual_tokens_are_ignored(self, kind: str) -> None:
        torch.manual_seed(0)
        head = build_head(HIDDEN, HeadConfig(kind=kind, num_heads=2 if kind == "skipca_mha" else 1))
        feats = features()
        clean = head(feats)
        feats.e_v = feats.e_v + 100.0 * (~feats.e_v_mask).unsqueeze(-1)  # garbage in padded slots only
        assert torch.allclose(head(feats), clean, atol=1e-6)
        feats.e_v[0, 0] += 1.0  # a real token of row 0 changes row 0 only
        changed = head(feats)
        assert not torch.allclose(changed[0], clean[0]) and torch.allclose(changed[1:], clean[1:], atol=1e-6)

    @pytest.mark.parametrize("kind", ["skipca", "skipca_mha"])
    def test_visual_tokens_change_the_reward(self, kind: str) -> None:
        torch.manual_seed(0)
        head = randomized(build_head(HIDDEN, HeadConfig(kind=kind)))
        feats = features()
        before = head(feats)
        feats.e_v = torch.flip(feats.e_v, dims=[0])
        feats.e_v_mask = torch.flip(feats.e_v_mask, dims=[0])
        assert not torch.allclose(head(feats), before)

    def test_rows_without_visual_tokens_are_finite(self) -> None:
        torch.manual_seed(0)
        head = randomized(SkipCAHead(HIDDEN, HeadConfig(kind="skipca")))
        feats = features(visual_counts=(0, 2, 3))
        feats.e_h.requires_grad_(True)
        rewards = head(feats)
        # No attention term for row 0: reward = value_head(RMSNorm(e_h)).
        alone = head.norm(feats.e_h[0]) @ head.output.weight.T
        assert torch.allclose(rewards[0], alone[0], atol=1e-6)
        rewards.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
        assert torch.isfinite(feats.e_h.grad).all()

    def test_mha_rows_without_visual_tokens_are_finite(self) -> None:
        torch.manual_seed(0)
        head = MultiHeadSkipCAHead(HIDDEN, HeadConfig(kind="skipca_mha"))
        feats = features(visual_counts=(0, 2, 3))
        rewards = head(feats)
        alone = F.layer_norm(feats.e_h[0], (HIDDEN,), head.norm.weight, head.norm.bias) @ head.output.weight.T
        assert torch.allclose(rewards[0], (alone + head.output.bias)[0], atol=1e-6)

    @pytest.mark.parametrize("kind", ["skipca", "skipca_mha"])
    def test_mean_pooling_attends_from_every_token(self, kind: str) -> None:
        torch.manual_seed(0)
        head = randomized(build_head(HIDDEN, HeadConfig(kind=kind, pooling="mean")))
        feats = features()
        per_token = REFERENCES[kind](head, feats.sequence, feats.e_v, feats.e_v_mask)[..., 0]
        weights = feats.attention_mask.float()
        expected = (per_token * weights).sum(1) / weights.sum(1)
        assert torch.allclose(head(feats), expected, atol=1e-6)

    @pytest.mark.parametrize(("kind", "heads"), [("skipca", 1), ("skipca_mha", 4)])
    def test_batch_rows_are_independent(self, kind: str, heads: int) -> None:
        torch.manual_seed(0)
        head = build_head(HIDDEN, HeadConfig(kind=kind, num_heads=heads))
        feats = features()
        single = BackboneOutput(
            feats.e_h[1:2],
            feats.e_v[1:2, :2],
            feats.e_v_mask[1:2, :2],
            feats.attention_mask[1:2],
            feats.last_index[1:2],
        )
        assert torch.allclose(head(single), head(feats)[1:2], atol=1e-6)


class TestLinearHead:
    def test_eos_pooling_is_linear_in_e_h(self) -> None:
        torch.manual_seed(0)
        head = LinearHead(HIDDEN, HeadConfig(kind="linear"))
        feats = features()
        expected = feats.e_h @ head.output.weight[0] + head.output.bias[0]
        assert torch.allclose(head(feats), expected, atol=1e-6)
        feats.e_v = torch.randn_like(feats.e_v)  # the ablation ignores the image tokens
        assert torch.allclose(head(feats), expected, atol=1e-6)

    def test_mean_pooling_skips_padding(self) -> None:
        torch.manual_seed(0)
        head = LinearHead(HIDDEN, HeadConfig(kind="linear", pooling="mean"))
        feats = features()
        assert head.needs_sequence
        pooled = torch.stack(
            [feats.sequence[row, : int(feats.attention_mask[row].sum())].mean(0) for row in range(3)]
        )
        assert torch.allclose(head(feats), pooled @ head.output.weight[0] + head.output.bias[0], atol=1e-6)

    def test_mean_pooling_without_sequence_is_an_error(self) -> None:
        head = LinearHead(HIDDEN, HeadConfig(kind="linear", pooling="mean"))
        feats = features()
        feats.sequence = None
        with pytest.raises(ValueError, match="return_sequence=True"):
            head(feats)


class TestOutputs:
    @pytest.mark.parametrize("kind", ["skipca", "skipca_mha", "linear"])
    def test_scalar_and_gpm_shapes(self, kind: str) -> None:
        feats = features()
        assert build_head(HIDDEN, HeadConfig(kind=kind))(feats).shape == (3,)
        assert build_head(HIDDEN, HeadConfig(kind=kind, gpm_dim=3))(feats).shape == (3, 6)

    def test_build_head_dispatch_and_initial_scale(self) -> None:
        assert type(build_head(HIDDEN, HeadConfig(kind="skipca"))) is SkipCAHead
        assert type(build_head(HIDDEN, HeadConfig(kind="skipca_mha"))) is MultiHeadSkipCAHead
        head = build_head(HIDDEN, HeadConfig(kind="linear"))
        assert type(head) is LinearHead and not head.needs_sequence
        assert torch.count_nonzero(head.output.bias) == 0
        assert head.output.weight.abs().max() < 5.0 / (HIDDEN + 1)

    def test_low_precision_features_feed_a_float32_head(self) -> None:
        torch.manual_seed(0)
        head = SkipCAHead(HIDDEN, HeadConfig())
        feats = features()
        low = BackboneOutput(
            feats.e_h.bfloat16(), feats.e_v.bfloat16(), feats.e_v_mask, feats.attention_mask, feats.last_index
        )
        out = head(low)
        assert out.dtype == torch.float32 and torch.allclose(out, head(feats), atol=0.05)

    def test_wrong_hidden_size_is_reported(self) -> None:
        with pytest.raises(ValueError, match="head expects hidden size 16, features have 8"):
            LinearHead(16, HeadConfig(kind="linear"))(features())
        with pytest.raises(ValueError, match="not divisible by num_heads=3"):
            MultiHeadSkipCAHead(HIDDEN, HeadConfig(kind="skipca_mha", num_heads=3))


class TestHeadConfig:
    def test_json_round_trip(self, tmp_path) -> None:
        config = HeadConfig(
            kind="skipca_mha", pooling="mean", gpm_dim=4, num_heads=2, dropout=0.1, norm_eps=1e-6
        )
        assert HeadConfig.from_dict(config.to_dict()) == config
        assert HeadConfig.from_json(config.to_json(tmp_path / "head.json")) == config
        assert config.output_dim == 8 and HeadConfig().output_dim == 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (
                {"kind": "mlp"},
                r"HeadConfig.kind must be one of \['skipca', 'skipca_mha', 'linear'\], got 'mlp'",
            ),
            ({"num_heads": 2}, "'skipca' is the paper's single-head SkipCA; use kind='skipca_mha'"),
            ({"norm_eps": 0}, "HeadConfig.norm_eps must be a positive number"),
            ({"pooling": "max"}, r"HeadConfig.pooling must be one of \['eos', 'mean'\]"),
            ({"gpm_dim": 0}, "HeadConfig.gpm_dim must be a positive int or None"),
            ({"kind": "skipca_mha", "num_heads": 0}, "HeadConfig.num_heads must be a positive int"),
            ({"dropout": 1.0}, r"HeadConfig.dropout must be in \[0, 1\)"),
        ],
    )
    def test_invalid_values_name_the_field(self, kwargs: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            HeadConfig(**kwargs)
