"""Named prompt renderings ("template profiles") that reproduce how a published model was fed.

A profile renders one caption into the exact text a model was trained on, image tag included:

- ``llava-reward-phi3v``: the LLaVA-Reward paper's Phi-3.5-vision input. The tokenizer's chat template
  renders one user turn ``"<|image_1|>\\n" + caption`` with the generation prompt, the last 22
  characters (the end-of-turn and assistant tags, ``"<|end|>\\n<|assistant|>\\n"``) are cut off and the
  EOS token is appended, so the reward is read at EOS:
  ``<|user|>\\n<|image_1|>\\n{caption}<|endoftext|>`` with Phi-3.5's template.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LLAVA_REWARD_PHI3V = "llava-reward-phi3v"
#: HD crops the LLaVA-Reward loader asks Phi-3.5-vision's processor for, whatever preprocessor_config.json
#: says (it passes num_crops=16 to the processor).
PAPER_NUM_CROPS = 16
#: What the paper's slice removes from the end of the rendered chat (22 characters).
_PHI3_GENERATION_SUFFIX = "<|end|>\n<|assistant|>\n"


class TemplateError(ValueError):
    """A template profile cannot render with this tokenizer."""


def _llava_reward_phi3v(prompt: str, image: str, tokenizer: Any) -> str:
    messages = [{"role": "user", "content": f"{image}\n{prompt}"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(rendered, str) or not rendered.endswith(_PHI3_GENERATION_SUFFIX):
        tail = rendered[-len(_PHI3_GENERATION_SUFFIX) :] if isinstance(rendered, str) else rendered
        raise TemplateError(
            f"template profile {LLAVA_REWARD_PHI3V!r} needs Phi-3's chat template (a rendering ending with "
            f"{_PHI3_GENERATION_SUFFIX!r}); this tokenizer's ends with {tail!r}"
        )
    if tokenizer.eos_token is None:
        raise TemplateError(f"template profile {LLAVA_REWARD_PHI3V!r} needs a tokenizer with an EOS token")
    return rendered[: -len(_PHI3_GENERATION_SUFFIX)] + tokenizer.eos_token


PROFILES: dict[str, Callable[[str, str, Any], str]] = {LLAVA_REWARD_PHI3V: _llava_reward_phi3v}


def render_profile(profile: str, prompt: str, image: str, tokenizer: Any) -> str:
    """The text of one example under ``profile``; ``image`` is the image tag the processor expands."""
    try:
        renderer = PROFILES[profile]
    except KeyError:
        raise TemplateError(f"unknown template profile {profile!r}; known: {sorted(PROFILES)}") from None
    return renderer(prompt, image, tokenizer)


__all__ = ["LLAVA_REWARD_PHI3V", "PAPER_NUM_CROPS", "PROFILES", "TemplateError", "render_profile"]
