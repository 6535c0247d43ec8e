"""The oracle judge reads demo scene facts from pixels: checked against rendered images of known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from data.demo.config import DemoCorpusConfig
from data.demo.oracle import OracleJudge, PromptParseError, parse_prompt
from data.demo.oracle_validation import Case, oracle_accuracy, render_cases
from data.demo.scene import COLOURS, SHAPES, TEMPLATES, sample_prompt

#: Every colour and shape the palette has, not only the corpus defaults.
FULL_PALETTE = DemoCorpusConfig(colours=tuple(COLOURS), shapes=SHAPES)


def test_prompts_parse_back_in_every_template() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        prompt = sample_prompt(rng, tuple(COLOURS), SHAPES, 0.6, range(len(TEMPLATES)))
        assert parse_prompt(prompt.text) == prompt
    with pytest.raises(PromptParseError, match="not a demo scene prompt: 'a cat on a mat'"):
        parse_prompt("a cat on a mat")


@pytest.mark.parametrize(
    ("size", "count", "config"), [(32, 240, None), (64, 120, None), (64, 120, FULL_PALETTE)]
)
def test_accuracy_on_rendered_images_with_known_truth(size: int, count: int, config) -> None:
    report = oracle_accuracy(render_cases(count, image_size=size, seed=size + count, config=config))
    assert report["facts"] >= 0.95, report
    assert report["images"] >= 0.9, report
    assert min(value for key, value in report.items() if key.startswith("facts_")) >= 0.9, report


def test_accuracy_on_washed_out_tinted_images() -> None:
    """Generated images come out with tinted backgrounds and desaturated colours: hues are read
    relative to the background, so the judge still reads them."""
    rng = np.random.default_rng(1)
    tint = np.array([205.0, 220.0, 190.0])
    cases = []
    for case in render_cases(150, image_size=32, seed=7):
        pixels = 0.65 * np.asarray(case.image, dtype=np.float64) + 0.35 * tint
        pixels += rng.normal(0, 6, pixels.shape)
        cases.append(Case(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), case.prompt, case.truth))
    assert oracle_accuracy(cases)["facts"] >= 0.95


def test_scores_are_fact_shares_and_accept_tensors() -> None:
    cases = render_cases(12, image_size=32, seed=5)
    judge = OracleJudge()
    prompts = [case.prompt.text for case in cases]
    from_pil = judge([case.image for case in cases], prompts)
    tensor = (
        torch.stack([torch.from_numpy(np.array(case.image)).permute(2, 0, 1) for case in cases]).float() / 255
    )
    assert from_pil == pytest.approx(judge(tensor, prompts))
    truth = [sum(case.truth) / len(case.truth) for case in cases]
    assert np.mean(np.isclose(from_pil, truth)) >= 0.9
    blank = Image.new("RGB", (32, 32), (230, 230, 230))
    assert judge([blank], [prompts[0]])[0] == 0.0
    assert math.isnan(judge([blank], ["a cat"])[0])
    with pytest.raises(ValueError, match="got 1 images but 2 prompts"):
        judge([blank], ["a red circle", "a red circle"])
