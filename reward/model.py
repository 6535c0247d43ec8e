"""The :class:`RewardModel`: backbone + reward head, with LoRA on the language model only.

Trainable: the LoRA matrices (language model layers), the projector and the head. Everything else
(vision tower, language model base weights, embeddings, LM head) is frozen. With LoRA the projector
is a peft ``modules_to_save`` copy, so it belongs to the adapter (one per perspective) and switches
with it; without LoRA the projector itself is trained.

Chosen and rejected examples go through one batched forward (:meth:`RewardModel.pair_rewards`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from torch import Tensor, nn

from reward.backbones import Backbone
from reward.config import HeadConfig, LoraSettings
from reward.heads import RewardHead, build_head


class RewardModel(nn.Module):
    """r(image, prompt) = head(backbone(image, prompt))."""

    def __init__(
        self,
        backbone: Backbone,
        head_config: HeadConfig,
        lora: LoraSettings | None = None,
        *,
        adapter_name: str = "default",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head: RewardHead = build_head(backbone.hidden_size, head_config)
        self.head_config = head_config
        self.lora = lora
        self.adapter_name = adapter_name
        backbone.requires_grad_(False)
        # Kept out of the module tree: it wraps backbone.model, whose modules it changes in place.
        self._peft_model: PeftModel | None = None
        if lora is None:
            backbone.projector.requires_grad_(True)
        else:
            config = LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=backbone.lora_target_regex(lora.target_modules),
                modules_to_save=backbone.adapter.projector_modules_to_save(backbone.model),
            )
            with warnings.catch_warnings():
                # peft 0.21 asks transformers 5 a deprecated question; nothing a caller can act on.
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
                peft_model = get_peft_model(backbone.model, config, adapter_name)
            object.__setattr__(self, "_peft_model", peft_model)

    @property
    def peft_model(self) -> PeftModel | None:
        """The peft wrapper (adapter save / load / switch), or None without LoRA."""
        return self._peft_model

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Rewards for prepared inputs: (B,) scalars, or (B, 2k) GPM embeddings."""
        features = self.backbone(inputs, return_sequence=self.head.needs_sequence)
        return self.head(features)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> Tensor:
        """Rewards for raw (image, prompt) pairs (call under ``torch.no_grad()`` for inference)."""
        return self(self.backbone.prepare(images, prompts))

    def pair_rewards(
        self,
        chosen_images: Sequence[Image.Image],
        chosen_prompts: Sequence[str],
        rejected_images: Sequence[Image.Image],
        rejected_prompts: Sequence[str],
    ) -> tuple[Tensor, Tensor]:
        """(chosen rewards, rejected rewards) from one forward over the 2B examples."""
        count = len(chosen_images)
        if len(rejected_images) != count:
            raise ValueError(f"got {count} chosen but {len(rejected_images)} rejected images")
        rewards = self.score([*chosen_images, *rejected_images], [*chosen_prompts, *rejected_prompts])
        return rewards[:count], rewards[count:]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer must receive: LoRA, projector and head parameters."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def parameter_report(self) -> dict[str, int]:
        """Parameter counts: trainable by part (lora, projector, head) and frozen."""
        projector = self.backbone.adapter.projector_path
        report = {"lora": 0, "projector": 0, "head": 0, "other_trainable": 0, "frozen": 0}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                part = "frozen"
            elif name.startswith("head."):
                part = "head"
            elif "lora_" in name:
                part = "lora"
            elif f".{projector}." in f".{name}":
                part = "projector"
            else:
                part = "other_trainable"
            report[part] += parameter.numel()
        report["trainable"] = (
            report["lora"] + report["projector"] + report["head"] + report["other_trainable"]
        )
        report["total"] = report["trainable"] + report["frozen"]
        return report
