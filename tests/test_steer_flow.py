"""The steer-generation flow: prompt files (bad lines rejected with their numbers), method grids checked
before sampling, the per-prompt stage and the flow end to end on tiny random latent and pixel models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from prefect.artifacts import Artifact

from flows.steer_generation import TABLE_ARTIFACT, steer_generation
from reward.config import HeadConfig, LoraSettings
from reward.steering import SteeringError
from reward.steering.prompts import demo_benchmark_prompts, read_prompt_file
from reward.tiny import build_tiny_backbone
from tasks.steer import mean_interval, method_grid, summary_tables
from tests.reward_support import one_torch_thread, save, trained_model  # noqa: F401

GOOD = ["a photo of two red circles", "a blue square", "three green triangles"]


def geneval_file(folder: Path) -> Path:
    """GenEval's evaluation_metadata.jsonl layout, with a broken line 2 and a prompt-less line 4."""
    lines = [
        json.dumps({"tag": "counting", "include": [{"class": "circle", "count": 2}], "prompt": GOOD[0]}),
        '{"tag": "single_object", "prompt": "a cat"',
        json.dumps({"tag": "colors", "prompt": GOOD[1]}),
        json.dumps({"tag": "colors", "include": []}),
        "",
        json.dumps({"tag": "counting", "prompt": GOOD[2]}),
    ]
    path = folder / "evaluation_metadata.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class TestPromptFiles:
    def test_geneval_jsonl_rejects_malformed_lines_by_number(self, tmp_path: Path) -> None:
        rows, rejects = read_prompt_file(geneval_file(tmp_path))
        assert [row.prompt for row in rows] == GOOD
        assert [row.source_row for row in rows] == [1, 3, 6]
        assert [row.tag for row in rows] == ["counting", "colors", "counting"]
        assert [(r.line, r.field) for r in rejects] == [(2, ""), (4, "prompt")]
        assert "not JSON" in rejects[0].reason and "missing or empty 'prompt'" in rejects[1].reason

    def test_drawbench_lists(self, tmp_path: Path) -> None:
        csv_path = tmp_path / "drawbench.csv"
        csv_path.write_text('Prompts,Category\n"A red colored car.",Colors\n,Colors\nA cube.,Positional\n')
        rows, rejects = read_prompt_file(csv_path)
        assert [(row.prompt, row.tag) for row in rows] == [
            ("A red colored car.", "Colors"),
            ("A cube.", "Positional"),
        ]
        assert [r.line for r in rejects] == [3]
        txt = tmp_path / "prompts.txt"
        txt.write_text("# comment\na red car\n\na cube\n")
        assert [(row.prompt, row.source_row) for row in read_prompt_file(txt)[0]] == [
            ("a red car", 2),
            ("a cube", 4),
        ]
        (tmp_path / "p.xml").write_text("x")
        with pytest.raises(ValueError, match="unknown prompt file type '.xml'"):
            read_prompt_file(tmp_path / "p.xml")

    def test_demo_prompts_are_fresh_and_distinct(self) -> None:
        from data.demo.scene import BENCHMARK_TEMPLATES, TEMPLATES

        rows = demo_benchmark_prompts(120, seed=1)
        assert len({row.prompt for row in rows}) == 120
        wordings = [TEMPLATES[i].split("{}") for i in BENCHMARK_TEMPLATES]
        assert all(any(r.prompt.startswith(a) and r.prompt.endswith(b) for a, b in wordings) for r in rows)


class TestMethodsAndSummary:
    def test_grid_and_errors_before_sampling(self) -> None:
        specs = method_grid(
            ["none", "best_of_n", "fk"],
            ["oracle"],
            num_particles=4,
            potentials=["max", "diff"],
            lambdas=[1, 10],
        )
        assert [s.label for s in specs] == [
            "none",
            "best-of-4 oracle",
            "fk oracle max λ=1",
            "fk oracle max λ=10",
            "fk oracle diff λ=1",
            "fk oracle diff λ=10",
        ]
        with pytest.raises(SteeringError, match="unknown potential 'maximum'"):
            method_grid(["fk"], ["oracle"], num_particles=4, potentials=["maximum"], lambdas=[1])
        with pytest.raises(SteeringError, match="lmbda must be >= 0, got -2"):
            method_grid(["fk"], ["oracle"], num_particles=4, potentials=["max"], lambdas=[-2])

    def test_mean_interval_by_hand(self) -> None:
        mean, half, n = mean_interval([1.0, 2.0, 3.0, None, math.nan])
        assert (mean, n) == (2.0, 3)
        assert half == pytest.approx(1.959964 * 1.0 / math.sqrt(3))

    def test_table_uses_the_chosen_particle(self) -> None:
        rows = pl.DataFrame(
            {
                "method": ["a", "a", "a", "a", "b"],
                "selected": [True, False, True, False, True],
                "judge_oracle": [1.0, 0.0, 0.5, 0.0, 0.25],
                "seconds": [1.0] * 5,
            }
        )
        long, wide = summary_tables(rows, ["a", "b"])
        assert long.filter(pl.col("method") == "a")["mean"][0] == pytest.approx(0.75)
        assert wide.columns == ["judge", "a", "b"] and wide["b"][0] == "0.250"


@pytest.fixture(scope="module")
def alignment_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("steer-reward")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    model = trained_model(
        backbone, perspective="alignment", head=HeadConfig(), lora=LoraSettings(rank=2), seed=3
    )
    return save(model, root / "alignment", backbone)


def artifact_rows(key: str) -> list[dict]:
    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key}"
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def test_flow_end_to_end_on_a_tiny_latent_pipeline(
    prefect_harness, tmp_path: Path, alignment_model: Path
) -> None:
    art = str(tmp_path / "art")
    params = dict(
        prompts_path=str(geneval_file(tmp_path)),
        methods=["none", "best_of_n", "fk"],
        rewards=["alignment"],
        judges=["alignment", "oracle", "clipscore"],
        reward_models={"alignment": str(alignment_model)},
        seeds=[0, 1],
        num_particles=2,
        lambdas=[5.0],
        num_inference_steps=3,
        resample_frequency=1,
        generator="tiny-latent",
        device="cpu",
        artifacts_dir=art,
    )
    outputs = steer_generation(**params)
    results = pl.read_parquet(outputs["results"])
    labels = ["none", "best-of-2 alignment", "fk alignment max λ=5"]
    # 3 prompts (2 lines rejected) × 2 seeds × (1 + 2 + 2 particles)
    assert results.height == 3 * 2 * 5
    assert set(results["method"]) == set(labels)
    rejects = pl.read_parquet(outputs["rejects"])
    assert rejects["source_row"].to_list() == [2, 4]
    chosen = results.filter(pl.col("selected"))
    assert chosen.height == 3 * 2 * 3
    for row in results.filter(pl.col("method_kind") != "none").iter_rows(named=True):
        group = results.filter(
            (pl.col("prompt_id") == row["prompt_id"])
            & (pl.col("method") == row["method"])
            & (pl.col("seed") == row["seed"])
        )
        best = group.sort("final_reward", descending=True)["particle"][0]
        assert group.filter(pl.col("selected"))["particle"][0] == best
        assert Image.open(row["image_path"]).size == (16, 16)
    fk = results.filter(pl.col("method_kind") == "fk")
    assert fk["trajectory_steps"][0].to_list() == [0, 1, 2] and len(fk["ess"][0]) == 3
    # The steering reward and the alignment judge read the same model on the same final images.
    np.testing.assert_allclose(fk["final_reward"].to_numpy(), fk["judge_alignment"].to_numpy(), atol=1e-2)
    wide = pl.read_parquet(outputs["table"])
    assert wide["judge"].to_list() == ["alignment", "oracle", "clipscore"]
    assert wide.columns == ["judge", *labels]
    table = {row["judge"]: row for row in artifact_rows(TABLE_ARTIFACT)}
    mean = chosen.filter(pl.col("method") == "none")["judge_clipscore"].mean()
    assert table["clipscore"]["none"].startswith(f"{mean:.3f}")
    assert Artifact.get("steer-generation-grid-0") is not None
    again = steer_generation(**params)
    assert again["results"] == outputs["results"]


def oracle_steered(prompts: Path, generator: str, art: Path, **extra: object) -> dict:
    """The flow over ``prompts``: plain and FK (2 particles, 2 steps) steered and judged by the oracle."""
    return steer_generation(
        prompts_path=str(prompts),
        methods=["none", "fk"],
        rewards=["oracle"],
        judges=["oracle"],
        num_particles=2,
        num_inference_steps=2,
        generator=generator,
        device="cpu",
        artifacts_dir=str(art),
        **extra,
    )


def test_flow_with_the_demo_pixel_generator(prefect_harness, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\nan image showing three blue squares\n")
    art = tmp_path / "art"
    with pytest.raises(SteeringError, match="eta must be a finite number >= 0, got -1"):
        steer_generation(prompts_path=str(prompts), eta=-1.0, artifacts_dir=str(art))
    assert not art.exists()  # refused before any stage ran
    outputs = oracle_steered(prompts, "demo", art, eta=1.0, generator_steps=1)
    results = pl.read_parquet(outputs["results"])
    assert results.height == 2 * (1 + 2)
    assert Image.open(results["image_path"][0]).size == (32, 32)
    assert (Path(outputs["generator"]) / "unet" / "config.json").is_file()
    assert results["judge_oracle"].is_between(0, 1).all()


def test_flow_with_a_saved_sdxl_pipeline(prefect_harness, tmp_path: Path) -> None:
    """An SDXL folder (as a hub download leaves it) is a generator spec like any other."""
    from reward.steering.tiny import tiny_sdxl_pipeline

    folder = tmp_path / "sdxl"
    tiny_sdxl_pipeline(seed=2).save_pretrained(folder)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    outputs = oracle_steered(prompts, str(folder), tmp_path / "art", guidance_scale=2.0)
    results = pl.read_parquet(outputs["results"])
    assert results.height == 1 + 2
    assert Image.open(results["image_path"][0]).size == (16, 16)
    assert results["judge_oracle"].is_between(0, 1).all()


def test_demo_deployment_binds_to_the_flow() -> None:
    import inspect

    import yaml

    root = Path(__file__).resolve().parents[1]
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    (demo,) = [d for d in deployments if d["entrypoint"] == "flows/steer_generation.py:steer_generation"]
    assert demo["name"] == "demo"
    bound = inspect.signature(steer_generation.fn).bind(**demo["parameters"])
    assert bound.arguments["rewards"] == ["alignment"]
