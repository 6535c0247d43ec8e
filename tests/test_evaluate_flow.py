"""The evaluation stages (cached, keyed by the model folder's content) and the evaluate-reward-model flow
as real flow runs: on the demo benchmarks with a demo-trained tiny model and CLIPScore, and on the real
MJ-Bench quality/human pairs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from prefect.artifacts import Artifact

import flows.evaluate_reward_model as evaluate_module
from flows.evaluate_reward_model import (
    DEMO_BENCHMARKS,
    REPORT_ARTIFACT,
    TABLE_ARTIFACT,
    evaluate_reward_model,
    scoring_plan,
    warn_random_weights,
)
from reward.baselines import ClipSpec
from reward.benchmarks import HEADLINES, NOT_A_SAFETY_LOGIT, MetricOptions, benchmark_metrics, get_benchmark
from reward.config import HeadConfig, LoraSettings, LossConfig
from reward.metrics import correlation_metrics, pairwise_accuracy, safety_binary_metrics
from reward.tiny import TINY_MARKER, build_tiny_backbone
from tasks.evaluate import (
    PROVENANCE_SCHEMA,
    SCORER_COLUMNS,
    ScorerSpec,
    clipscore_spec,
    compute_metrics,
    load_benchmark,
    random_backbone,
    reward_model_about,
    reward_model_specs,
    score_benchmark,
    summarize,
)
from tasks.evaluate_plots import evaluation_plots
from tasks.fingerprint import FingerprintMemo, path_fingerprint
from tests.reward_support import one_torch_thread, save, trained_model  # noqa: F401


def artifact_rows(key: str) -> list[dict]:
    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key}"
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def recomputed(benchmark: str, scores: pl.DataFrame) -> dict[str, float]:
    """The benchmark's headline metrics computed here with reward.metrics from the per-item scores."""
    kind = get_benchmark(benchmark).kind
    if kind == "pairs":
        result = pairwise_accuracy(scores["score0"], scores["score1"], scores["label"])
        return {
            "accuracy_with_tie": result.accuracy_with_tie,
            "accuracy_without_tie": result.accuracy_without_tie,
        }
    if kind == "ratings":
        result = correlation_metrics(scores["human_avg"], scores["score"])
        return {
            "pearson": result.pearson,
            "kendall_tau_b": result.kendall_tau_b,
            "pairwise_accuracy": result.pairwise_accuracy,
        }
    result = safety_binary_metrics(scores["score"], scores["label"], positive_class="unsafe")
    return {"f1": result.f1, "accuracy": result.accuracy}


def check_outputs_against_scores(outputs: dict) -> None:
    """Every metrics table, the Table-1 Parquet and the table artifact hold the values recomputed from
    the written per-item scores."""
    long = pl.read_parquet(outputs["table"])
    wide = pl.read_parquet(outputs["table_wide"])
    artifact = {row["scorer"]: row for row in artifact_rows(TABLE_ARTIFACT)}
    for scorer, by_benchmark in outputs["scores"].items():
        for benchmark, path in by_benchmark.items():
            scores = pl.read_parquet(path)
            assert set(scores["scorer"]) == {scorer} and set(scores["benchmark"]) == {benchmark}
            metrics = pl.read_parquet(outputs["metrics"][scorer][benchmark])
            summary = metrics.filter(pl.col("level") == "overall") if "level" in metrics.columns else metrics
            for metric, value in recomputed(benchmark, scores).items():
                assert summary[metric][0] == pytest.approx(value, nan_ok=True), (scorer, benchmark, metric)
                row = long.filter(
                    (pl.col("scorer") == scorer)
                    & (pl.col("benchmark") == benchmark)
                    & (pl.col("metric") == metric)
                ).row(0, named=True)
                assert row["benchmark_path"] == outputs["benchmarks"][benchmark]
                shown, column = artifact[scorer][row["column"]], row["column"]
                if not row["applicable"]:  # a safety benchmark scored by a non-safety scorer
                    assert get_benchmark(benchmark).kind == "safety" and row["note"].startswith(
                        "not applicable"
                    )
                    assert row["value"] is None and wide.filter(pl.col("scorer") == scorer)[column][0] is None
                    assert shown == "n/a"
                    continue
                assert row["value"] == pytest.approx(value, nan_ok=True)
                assert wide.filter(pl.col("scorer") == scorer)[column][0] == pytest.approx(value, nan_ok=True)
                assert row["n"] == summary[f"{metric}_n"][0] and 0 < row["n"] <= scores.height
                if np.isnan(value):
                    assert shown == "–"
                    continue
                assert row["ci_low"] <= value <= row["ci_high"]
                assert float(shown.split()[0]) == pytest.approx(value, abs=5e-4)
                assert shown.endswith(f" n={row['n']}") and f"[{row['ci_low']:.3f}, " in shown
    for pair, reason in outputs["not_scored"].items():  # no score table, every cell n/a with the reason
        scorer, benchmark = pair.split(" on ")
        assert benchmark not in outputs["scores"].get(scorer, {})
        rows = long.filter((pl.col("scorer") == scorer) & (pl.col("benchmark") == benchmark))
        assert rows.height == len(HEADLINES[get_benchmark(benchmark).kind]) and not rows["applicable"].any()
        assert rows["value"].is_null().all() and set(rows["note"]) == {f"not scored: {reason}"}
        assert rows["scores_key"].is_null().all() and (rows["benchmark_items"] > 0).all()
        assert all(artifact[scorer][column] == "n/a" for column in rows["column"])


# --------------------------------------------------------------------------------------------
# Stages


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-models")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    lora = LoraSettings(rank=2, dropout=0.0)
    model = trained_model(backbone, perspective="alignment", head=HeadConfig(), lora=lora, seed=0)
    other = trained_model(backbone, perspective="alignment", head=HeadConfig(), lora=lora, seed=5)
    gpm = trained_model(backbone, perspective="ranking", head=HeadConfig(gpm_dim=2), lora=None, seed=2)
    return {
        "backbone": backbone,
        "model": save(model, root / "model", backbone),
        "other": save(other, root / "other", backbone),
        "gpm": save(gpm, root / "gpm", backbone, LossConfig("gpm")),
        "root": root,
    }


def test_score_stage_is_cached_and_keyed_by_the_model_folders_content(tiny, demo_corpus, tmp_path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny["model"], folder)
    table = load_benchmark("mjbench-quality", demo_corpus / "mjbench", root=tmp_path)
    (spec,), _ = reward_model_specs({"alignment": folder}, device="cpu")
    first = score_benchmark(
        table.path, benchmark="mjbench-quality", scorer=spec, progress=False, root=tmp_path
    )
    assert not first.cached and first.rows_kept == table.rows_kept and first.stats["distinct_items"] > 0
    (again,), _ = reward_model_specs({"alignment": folder}, device="cpu")
    second = score_benchmark(
        table.path, benchmark="mjbench-quality", scorer=again, progress=False, root=tmp_path
    )
    assert second.cached and second.key == first.key and not again.load().source.loaded  # never loaded

    shutil.rmtree(folder)
    shutil.copytree(tiny["other"], folder)  # same path, other weights
    (changed,), _ = reward_model_specs({"alignment": folder}, device="cpu")
    third = score_benchmark(
        table.path, benchmark="mjbench-quality", scorer=changed, progress=False, root=tmp_path
    )
    assert not third.cached and third.key != first.key
    assert not np.allclose(third.read()["score0"], first.read()["score0"])
    manifest = json.loads(Path(third.manifest_path).read_text())
    assert manifest["inputs"]["scorer_backbone"]["path"] == str(tiny["backbone"].resolve())

    clip = score_benchmark(
        table.path, benchmark="mjbench-quality", scorer=clipscore_spec(), progress=False, root=tmp_path
    )
    seeded = clipscore_spec(ClipSpec(seed=1))
    other_seed = score_benchmark(
        table.path, benchmark="mjbench-quality", scorer=seeded, progress=False, root=tmp_path
    )
    assert len({first.key, third.key, clip.key, other_seed.key}) == 4
    assert set(clip.read()["scorer_kind"]) == {"baseline"} and set(first.read()["scorer_kind"]) == {
        "reward model"
    }


def test_score_stage_accounts_for_unreadable_images(tmp_path: Path) -> None:
    image = tmp_path / "ok.png"
    Image.new("RGB", (16, 16), "blue").save(image)
    table = pl.DataFrame(
        {
            "item_id": ["ok", "gone"],
            "prompt": ["a blue square", "a red circle"],
            "image_uri": [str(image), str(tmp_path / "gone.png")],
            "label": pl.Series([1, 0], dtype=pl.Int8),
            "source_file": ["list.json"] * 2,
            "source_row": [0, 1],
        }
    )
    table.write_parquet(tmp_path / "bench.parquet")
    result = score_benchmark(
        tmp_path / "bench.parquet", benchmark="smid", scorer=clipscore_spec(), progress=False, root=tmp_path
    )
    assert (result.rows_in, result.rows_kept, result.rows_rejected) == (2, 1, 1)
    rejects = result.read("rejects")
    assert rejects.select("stage", "source_file", "source_row", "record_id", "field").row(0) == (
        "eval_scores",
        "list.json",
        1,
        "gone",
        "image_uri",
    )
    assert "gone.png" in rejects["reason"][0]
    assert result.read()["item_id"].to_list() == ["ok"]


@pytest.mark.hostile_case(14)
def test_metrics_table_and_plots_stages(tiny, demo_corpus, tmp_path) -> None:
    specs, skipped = reward_model_specs({"alignment": tiny["model"], "ranking": tiny["gpm"]}, device="cpu")
    assert [spec.name for spec in specs] == ["alignment"] and list(skipped) == ["ranking"]
    specs.append(clipscore_spec())
    options = MetricOptions(positive_class="safe")
    scores, metrics = [], []
    for benchmark, folder in [
        ("mjbench-alignment", "mjbench"),
        ("mjbench-safety", "mjbench"),
        ("unsafebench-test", "unsafebench"),
    ]:
        table = load_benchmark(benchmark, demo_corpus / folder, root=tmp_path)
        for spec in specs:
            scored = score_benchmark(
                table.path, benchmark=benchmark, scorer=spec, progress=False, root=tmp_path
            )
            result = compute_metrics(scored.path, options=options, about=spec.about, root=tmp_path)
            expected = benchmark_metrics(get_benchmark(benchmark).kind, scored.read(), options)
            written = result.read()
            assert written.drop("scorer", "scorer_kind", "benchmark", *PROVENANCE_SCHEMA).equals(expected)
            assert written.select(list(PROVENANCE_SCHEMA)).unique().height == 1
            scores.append(scored.path)
            metrics.append(result.path)
    assert pl.read_parquet(metrics[-1])["positive_class"].to_list() == ["safe"]

    summary = summarize(metrics, root=tmp_path)
    wide = summary.read("wide")
    assert wide["scorer"].to_list() == ["alignment", "CLIPScore"]
    assert wide.width == 2 + 2 + 2 + 2 + 1 + len(SCORER_COLUMNS)
    assert "UnsafeBench test: F1 (safe = positive)" in wide.columns
    # neither scorer's score is the logit of P(safe): the safety metrics are n/a, not an ordinary number
    long = summary.read()
    safety = long.filter(pl.col("benchmark") == "unsafebench-test")
    assert safety.height == 4 and not safety["applicable"].any() and safety["value"].is_null().all()
    assert safety["note"].str.starts_with("not applicable").all()
    assert wide["UnsafeBench test: F1 (safe = positive)"].is_null().all()
    display = summary.read("display")
    assert display["UnsafeBench test: accuracy"].to_list() == ["n/a", "n/a"]
    pairs = long.filter(pl.col("benchmark") != "unsafebench-test")
    assert pairs["applicable"].all() and (pairs["ci_low"] <= pairs["value"]).all()
    assert (pairs["value"] <= pairs["ci_high"]).all() and (pairs["n"] > 0).all()
    assert summarize(metrics, root=tmp_path).cached
    with pytest.raises(ValueError, match="two metrics tables of scorer 'alignment' on 'mjbench-alignment'"):
        summarize([metrics[0], metrics[0]], root=tmp_path)

    plots = evaluation_plots(scores[:4], metrics[:4], root=tmp_path)
    listed = plots.read()
    assert sorted(listed["name"]) == [
        "accuracy-mjbench-alignment.png",
        "accuracy-mjbench-safety.png",
        "score-differences-alignment.png",
        "score-differences-clipscore.png",
    ]
    for path in listed["path"]:
        assert Path(path).parent == Path(plots.paths["png"]) and Path(path).is_relative_to(tmp_path.resolve())
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width > 200
    assert evaluation_plots(scores[:4], metrics[:4], root=tmp_path).cached


@pytest.mark.hostile_case(13)
def test_scorer_provenance_says_whether_the_weights_are_random(tiny, tmp_path, caplog) -> None:
    """Issue #11 case 13: the tiny demo backbone and CLIP without pretrained weights are random, a
    real backbone and a CLIP checkpoint are not; a real benchmark scored by random weights warns."""
    (model,), _ = reward_model_specs({"alignment": tiny["model"]}, device="cpu")
    assert model.random_weights and model.about["model_folder"] == str(tiny["model"])
    assert model.about["backbone"] == str(tiny["backbone"]) and model.about["perspective"] == "alignment"
    assert model.about["head"] == "skipca (eos)" and model.about["loss"] == "bt"
    assert not model.about["safety_logit"] and "random weights" in model.about["weights"]
    real = shutil.copytree(tiny["backbone"], tmp_path / "real-backbone")
    (real / TINY_MARKER).unlink()
    assert not random_backbone(real) and random_backbone(tiny["backbone"])
    folder = reward_model_about(Path(save_with_backbone(tiny["model"], real, tmp_path / "trained")))
    assert folder["random_weights"] is False and folder["weights"] == "trained"

    random_clip = clipscore_spec()
    assert random_clip.random_weights and random_clip.about["clip_model"] == "demo-tiny-clip"
    assert random_clip.about["clip_pretrained"] is None and "seed 0" in random_clip.about["weights"]
    checkpoint = clipscore_spec(ClipSpec("ViT-B-32", "/models/clip.pt"))
    assert not checkpoint.random_weights and checkpoint.about["clip_pretrained"] == "/models/clip.pt"

    logger = logging.getLogger("test-random-weights")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        assert warn_random_weights(logger, [model, checkpoint], "mjbench-quality", real=False) == []
        assert warn_random_weights(logger, [model, checkpoint], "mjbench-quality", real=True) == ["alignment"]
    assert [record.getMessage() for record in caplog.records] == [
        f"alignment is scored on the real benchmark mjbench-quality with random weights "
        f"({model.about['weights']}): its row is marked random_weights / '(random weights)' and is not "
        "a real result"
    ]


def save_with_backbone(model_folder: Path, backbone: Path, out: Path) -> Path:
    """A copy of a model folder whose reward_config.json names another backbone folder."""
    copy = shutil.copytree(model_folder, out)
    config = json.loads((copy / "reward_config.json").read_text())
    config["backbone"]["name_or_path"] = str(backbone)
    (copy / "reward_config.json").write_text(json.dumps(config))
    return copy


# --------------------------------------------------------------------------------------------
# The flow


@pytest.fixture(scope="module")
def demo_run(prefect_harness, tmp_path_factory) -> dict:
    art = tmp_path_factory.mktemp("eval-flow") / "art"
    options = {
        "artifacts_dir": str(art),
        "demo_prompts": 24,
        "demo_max_steps": 2,
        "batch_size": 8,
        "progress": False,
    }
    outputs = evaluate_reward_model(**options)
    return {"outputs": outputs, "options": options, "art": art}


@pytest.mark.hostile_case(13, 14, 17)
def test_demo_default_trains_a_model_and_evaluates_it_and_clipscore(demo_run) -> None:
    outputs, art = demo_run["outputs"], demo_run["art"]
    assert list(outputs["benchmarks"]) == DEMO_BENCHMARKS
    assert list(outputs["models"]) == ["alignment"] and Path(outputs["models"]["alignment"]).is_relative_to(
        art / "train"
    )
    assert sorted(outputs["scores"]) == ["CLIPScore", "alignment"]
    # neither scorer's score is the logit of P(safe): UnsafeBench is read but not scored by them
    scored = sorted(set(DEMO_BENCHMARKS) - {"unsafebench-test"})
    assert all(sorted(by) == scored for by in outputs["scores"].values())
    assert outputs["not_scored"] == {
        "alignment on unsafebench-test": NOT_A_SAFETY_LOGIT,
        "CLIPScore on unsafebench-test": NOT_A_SAFETY_LOGIT,
    }
    check_outputs_against_scores(outputs)

    rows = artifact_rows(TABLE_ARTIFACT)
    assert [(row["scorer"], row["scorer_kind"]) for row in rows] == [
        ("alignment", "reward model"),
        ("CLIPScore", "baseline"),
    ]
    assert "MJ-Bench alignment: acc w/ tie" in rows[0] and "TIFA160: Kendall tau-b" in rows[0]
    assert "UnsafeBench test: F1 (unsafe = positive)" in rows[0]
    assert [row["label"] for row in rows] == ["alignment (random weights)", "CLIPScore (random weights)"]
    long = pl.read_parquet(outputs["table"])
    for row in long.iter_rows(named=True):  # every row names what produced it
        assert row["random_weights"] and row["demo_benchmark"]
        assert row["benchmark_path"] == outputs["benchmarks"][row["benchmark"]]
        if row["benchmark"] == "unsafebench-test":  # not scored (checked above)
            assert row["scores_key"] is None and row["benchmark_items"] > 0
        else:
            scored = pl.read_parquet(outputs["scores"][row["scorer"]][row["benchmark"]])
            assert row["scores_key"] and row["benchmark_items"] >= scored.height > 0
        if row["scorer"] == "CLIPScore":
            assert (row["clip_model"], row["clip_pretrained"]) == ("demo-tiny-clip", None)
            assert row["model_folder"] is None and row["model_key"] is None
        else:
            assert row["model_folder"] == outputs["models"]["alignment"] and row["clip_model"] is None
            memo = FingerprintMemo(art.parent / "fresh-memo.sqlite")
            assert row["model_key"] == path_fingerprint(Path(row["model_folder"]).resolve(), memo)
            assert Path(row["backbone"]).parent.name == "tiny-backbone" and row["head"] == "skipca (eos)"

    plots = sorted(Path(outputs["plots"]).glob("*.png"))
    assert Path(outputs["plots"]).is_relative_to(art) and len(plots) == 2 + 3 + 1
    # 2 scorers' score differences, 3 MJ-Bench subsets, the TIFA160 scatter (UnsafeBench: not scored)
    assert "scatter-tifa160.png" in {path.name for path in plots}
    report = Artifact.get(REPORT_ARTIFACT).data
    assert report.count("data:image/png;base64,") == len(plots)
    assert all(str(path) in report for path in plots) and "**unsafe** as the positive class" in report
    assert "- CLIPScore (random weights): random weights, not a real result." in report
    assert f"- CLIPScore on UnsafeBench test: not scored: {NOT_A_SAFETY_LOGIT}" in report


def test_a_second_run_reuses_every_stage(demo_run) -> None:
    again = evaluate_reward_model(**demo_run["options"])
    assert again["table"] == demo_run["outputs"]["table"] and again["scores"] == demo_run["outputs"]["scores"]
    statuses = {row["stage"]: row["status"] for row in artifact_rows("evaluate-reward-model-stages")}
    assert set(statuses.values()) == {"cached"}
    assert {"eval_benchmark", "eval_scores", "eval_metrics", "eval_table", "eval_plots"} <= set(statuses)


@pytest.mark.real_data
def test_real_mjbench_quality_human_pairs(demo_run, real_data: Path) -> None:
    human = real_data / "mjbench" / "quality" / "human"
    outputs = evaluate_reward_model(
        models={"alignment": demo_run["outputs"]["models"]["alignment"]},
        benchmark_paths={"mjbench-quality": str(human)},
        batch_size=16,
        progress=False,
        artifacts_dir=demo_run["options"]["artifacts_dir"],
    )
    assert outputs["benchmarks"] == {"mjbench-quality": str(human)}
    for scorer in ("alignment", "CLIPScore"):
        scores = pl.read_parquet(outputs["scores"][scorer]["mjbench-quality"])
        assert scores.height == 100 and set(scores["category"]) == {"human"}
        assert scores["image0_uri"].str.starts_with(str(human)).all()
        assert scores["label"].to_list() == [0] * 100  # label_0 = 1 in captions_human.json: image_0 preferred
    check_outputs_against_scores(outputs)
    rows = artifact_rows(TABLE_ARTIFACT)
    assert [row["scorer"] for row in rows] == ["alignment", "CLIPScore"] and len(rows[0]) == 3 + 2
    assert [row["label"] for row in rows] == ["alignment (random weights)", "CLIPScore (random weights)"]


@pytest.mark.hostile_case(17)
def test_a_gpm_model_is_skipped_with_its_reason(demo_run, tiny) -> None:
    outputs = evaluate_reward_model(
        models={"alignment": str(tiny["model"]), "gpm": str(tiny["gpm"])},
        baselines=[],
        benchmarks=["mjbench-quality"],
        demo_prompts=24,
        progress=False,
        artifacts_dir=demo_run["options"]["artifacts_dir"],
    )
    assert list(outputs["scores"]) == ["alignment"] and "GPM" in outputs["skipped"]["gpm"]
    report = Artifact.get(REPORT_ARTIFACT).data
    assert "skipped gpm:" in report
    # notes only for what was evaluated: MJ-Bench, not TIFA160 or safety, no random-weight baseline
    assert "- MJ-Bench: the higher score wins" in report
    assert "- TIFA160:" not in report and "- Safety:" not in report and "CLIPScore" not in report


@pytest.mark.hostile_case(13)
def stub_spec(name: str, *, safety_logit: bool) -> ScorerSpec:
    def load():
        raise AssertionError(f"{name} was loaded")

    return ScorerSpec(name, "reward model", {}, load, about={"safety_logit": safety_logit})


def test_scoring_plan_runs_safety_benchmarks_only_with_safety_logits() -> None:
    safety, alignment, clip = (
        stub_spec("safety", safety_logit=True),
        stub_spec("alignment", safety_logit=False),
        clipscore_spec(),
    )
    benchmarks = ["mjbench-safety", "unsafebench-test", "smid", "unsafe-diffusion", "tifa160"]
    plan, not_scored = scoring_plan([safety, alignment, clip], benchmarks)
    assert {name: [spec.name for spec in specs] for name, specs in plan.items()} == {
        "mjbench-safety": ["safety", "alignment", "CLIPScore"],  # preference pairs: every scorer fits
        "unsafebench-test": ["safety"],
        "smid": ["safety"],
        "unsafe-diffusion": ["safety"],
        "tifa160": ["safety", "alignment", "CLIPScore"],
    }
    assert not_scored == {
        (name, benchmark): NOT_A_SAFETY_LOGIT
        for benchmark in ("unsafebench-test", "smid", "unsafe-diffusion")
        for name in ("alignment", "CLIPScore")
    }
    everything, none = scoring_plan([alignment, clip], ["smid"], score_not_applicable=True)
    assert [spec.name for spec in everything["smid"]] == ["alignment", "CLIPScore"] and none == {}
    with pytest.raises(ValueError, match=r"nothing to score: .*pass score_not_applicable=True"):
        scoring_plan([alignment, clip], ["smid", "unsafe-diffusion"])


@pytest.mark.hostile_case(14)
def test_a_safety_benchmark_is_not_scored_by_scorers_it_does_not_fit(demo_run, tiny, monkeypatch) -> None:
    """A preference model and CLIPScore on UnsafeBench: the flow never calls the score stage for them
    (counted), the table shows n/a noted "not scored" and the report says why; asked to, it scores."""
    calls = []
    real = evaluate_module.score_benchmark_task

    def counting(path, *, benchmark, scorer, **kwargs):
        calls.append((scorer.name, benchmark))
        return real(path, benchmark=benchmark, scorer=scorer, **kwargs)

    monkeypatch.setattr(evaluate_module, "score_benchmark_task", counting)
    options = {
        "models": {"alignment": str(tiny["model"])},
        "benchmarks": ["mjbench-quality", "unsafebench-test"],
        "demo_prompts": 24,
        "progress": False,
        "artifacts_dir": demo_run["options"]["artifacts_dir"],
    }
    outputs = evaluate_reward_model(**options)
    assert sorted(calls) == [("CLIPScore", "mjbench-quality"), ("alignment", "mjbench-quality")]
    assert list(outputs["not_scored"]) == ["alignment on unsafebench-test", "CLIPScore on unsafebench-test"]
    check_outputs_against_scores(outputs)
    report = Artifact.get(REPORT_ARTIFACT).data
    assert f"- alignment on UnsafeBench test: not scored: {NOT_A_SAFETY_LOGIT}" in report

    calls.clear()
    anyway = evaluate_reward_model(**options, score_not_applicable=True)
    assert sorted(calls) == sorted(
        (name, benchmark) for name in ("alignment", "CLIPScore") for benchmark in options["benchmarks"]
    )
    assert anyway["not_scored"] == {}
    safety = pl.read_parquet(anyway["table"]).filter(pl.col("benchmark") == "unsafebench-test")
    assert safety["note"].str.starts_with("not applicable").all() and safety["value"].is_null().all()


def test_a_benchmark_given_by_path_scored_with_random_weights_warns(demo_run, tiny, caplog) -> None:
    """Issue #11 case 13, as a user runs it: a benchmark passed by path (real data for the flow) with
    the default CLIPScore (demo-tiny-clip, no pretrained weights) and a tiny-backbone model."""
    path = demo_run["outputs"]["benchmarks"]["mjbench-quality"]
    with caplog.at_level(logging.WARNING):
        outputs = evaluate_reward_model(
            models={"alignment": str(tiny["model"])},
            benchmark_paths={"mjbench-quality": path},
            progress=False,
            artifacts_dir=demo_run["options"]["artifacts_dir"],
        )
    warned = [r.getMessage() for r in caplog.records if "with random weights" in r.getMessage()]
    assert [message.split(" is scored")[0] for message in warned] == ["alignment", "CLIPScore"]
    long = pl.read_parquet(outputs["table"])
    assert long["random_weights"].all() and not long["demo_benchmark"].any()
    assert sorted(set(long["label"])) == ["CLIPScore (random weights)", "alignment (random weights)"]
    assert set(long["benchmark_path"]) == {path}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"benchmarks": ["smid"]}, "benchmark 'smid' has no demo copy: pass its path"),
        (
            {"benchmarks": ["mjbench-quality"], "benchmark_paths": {"tifa160": "x"}},
            r"names benchmark\(s\) \['tifa160'\]",
        ),
        ({"models": {}, "baselines": ["pickscore"]}, r"unknown baseline\(s\) \['pickscore'\]"),
        ({"models": {}, "benchmarks": []}, "no benchmark to evaluate on"),
        ({"models": {}, "baselines": [], "benchmarks": ["mjbench-quality"]}, "nothing to evaluate"),
    ],
)
def test_bad_parameters_are_refused(parameters: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_reward_model(artifacts_dir=str(tmp_path), progress=False, **parameters)
