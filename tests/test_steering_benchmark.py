"""benchmarks.steering --smoke: every method runs on the same prompts and seeds and is cross-judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import steering


def test_smoke(tmp_path: Path) -> None:
    out = tmp_path / "steering.json"
    result = steering.main(["--smoke", "--out", str(out)])
    table = {entry["method"]: entry for entry in result["table"]}
    assert list(table) == [
        "none",
        "best-of-2 clipscore",
        "fk-2 clipscore max λ=10",
        "fk-2 clipscore diff λ=10",
        "best-of-2 oracle",
        "fk-2 oracle max λ=10",
        "fk-2 oracle diff λ=10",
    ]
    # Equal model evaluations for best-of-N and FK; plain sampling uses one particle.
    assert (
        table["none"]["nfe"] * 2 == table["best-of-2 oracle"]["nfe"] == table["fk-2 oracle max λ=10"]["nfe"]
    )
    assert table["none"]["reward_share"] == 0.0
    assert table["none"]["oracle"]["delta_vs_none"] == 0.0
    pairs = zip(
        result["scores"]["best-of-2 oracle"]["oracle"], result["scores"]["none"]["oracle"], strict=True
    )
    expected = sum(best - plain for best, plain in pairs) / 2
    assert table["best-of-2 oracle"]["oracle"]["delta_vs_none"] == pytest.approx(expected)
    for label, entry in table.items():
        assert entry["oracle"]["n"] == entry["clipscore"]["n"] == 2
        assert 0.0 <= entry["reward_share"] <= 1.0
        right = [value == 1.0 for value in result["scores"][label]["oracle"]]
        share = entry["oracle_all_right"]
        assert share["share"] == sum(right) / 2 and share["low"] <= share["share"] <= share["high"]
    assert "oracle: every fact right" in steering.markdown(result)
    # The oracle's best-of-2 picks the chosen image by the oracle itself: it cannot score below plain
    # sampling's first particle, which is particle 0 of best-of-2 on the same seed.
    scores = result["scores"]
    for plain, best in zip(scores["none"]["oracle"], scores["best-of-2 oracle"]["oracle"], strict=True):
        assert best >= plain - 1e-9
    assert json.loads(out.read_text())["settings"]["prompts"] == 2
    merged = steering.main(["--merge", str(out), str(out)])
    assert merged["settings"]["prompts"] == 4
    for entry, single in zip(merged["table"], result["table"], strict=True):
        assert entry["oracle"]["n"] == 4 and entry["oracle"]["mean"] == pytest.approx(
            single["oracle"]["mean"]
        )
    with pytest.raises(SystemExit):
        steering.main([])


def test_gpu_steering_tiny_on_cpu() -> None:
    from benchmarks import gpu_steering

    report = gpu_steering.main(
        ["--tiny", "--device", "cpu", "--steps", "2", "--repeats", "1", "--resample-frequency", "1"]
    )
    methods = report["methods"]
    assert list(methods) == ["none", "best-of-4", "fk-4 max λ=60"]
    assert methods["fk-4 max λ=60"]["nfe"] == methods["best-of-4"]["nfe"] == 4 * methods["none"]["nfe"] == 16
    assert 0 < methods["fk-4 max λ=60"]["reward_share"] < 1 and methods["none"]["reward_share"] == 0
