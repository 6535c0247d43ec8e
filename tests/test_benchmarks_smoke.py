"""The benchmark scripts run end to end at a tiny size, and what they compare is equal work.

No timing is asserted (timings belong in docs/BENCHMARKS.md). What is asserted: every stage ran, the
naive reference's outputs hold the same rows as the stages', the synthesized scale corpus is a valid
published layout whose synthesized embeddings are the ones the embed stage computes, and the GPU
script's full-size configs have the published parameter counts.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import transformers

from benchmarks import (
    before_after,
    cache_integrity,
    cache_rerun,
    data_pipeline,
    embedding,
    gpu_eval,
    growth,
    negatives_index,
)
from benchmarks import naive_reference as naive
from benchmarks.common import markdown_table, measure, smoke_corpus, summarize
from benchmarks.scale_corpus import ScaleSpec, source_webp_bytes, synthesize
from data.schemas import PAIRS_SCHEMA
from tasks.embed import ClipSpec, embed, load_clip
from tasks.ingest import ingest_ratings
from tasks.negatives import nearest_other
from tasks.pairs import preference_pairs
from tasks.ratings import ratings


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder holding the corpus that every --smoke mode reuses (generated here once)."""
    folder = tmp_path_factory.mktemp("bench")
    smoke_corpus(folder)
    return folder


def test_measure_reports_the_peak_of_a_large_allocation() -> None:
    def allocate() -> int:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        return int(block.sum())

    result, measurement = measure(allocate)
    assert result == 64 * 2**20 // 8
    assert measurement.rss_growth_mib >= 50
    summary = summarize([measurement, measurement])
    assert summary.peak_rss_mib == measurement.peak_rss_mib
    assert markdown_table([{"a": 1.23456, "b": "x"}], ["a", "b"]).splitlines()[2] == "| 1.235 | x |"


def test_growth_exponent_of_power_laws() -> None:
    sizes = [1_000, 3_000, 10_000]
    assert growth.exponent(sizes, [0.002 * n for n in sizes]) == pytest.approx(1.0)
    assert growth.exponent(sizes, [1e-6 * n * n for n in sizes]) == pytest.approx(2.0)
    assert np.isnan(growth.exponent([5], [1.0]))


def test_data_pipeline_smoke_runs_every_stage_and_the_naive_reference_agrees(work: Path) -> None:
    out = work / "data_pipeline.json"
    report = data_pipeline.main(["--smoke", "--naive", "--work", str(work), "--out", str(out)])
    assert [row["stage"] for row in report["stages"]] == list(data_pipeline.STAGES)
    assert report["naive_outputs_equal"] == {
        "ingest_ratings": True,
        "dedup": True,
        "ratings": True,
        "pairs": True,
        "negatives_anchors": True,
        "assemble": True,
    }
    counts = report["counts"]
    assert counts["assembled_pairs"] == counts["rating_pairs"] + counts["negative_pairs"] > 0
    rows = {row["stage"]: row for row in report["stages"]}
    non_embedding = sum(rows[stage]["seconds"] for stage in data_pipeline.NON_EMBEDDING)
    assert report["totals"]["non_embedding_seconds"] == pytest.approx(non_embedding)
    assert all("speedup" in rows[stage] for stage in data_pipeline.NON_EMBEDDING)
    assert report["bare_forward"]["images"] == rows["embed"]["rows_in"]
    assert json.loads(out.read_text())["counts"] == counts


def test_naive_pairs_match_the_pairs_stage_with_ties(tmp_path: Path) -> None:
    scores = {"p1": [3.0, 1.0, 3.0, 2.0], "p2": [5.0], "p3": [1.0, 1.0], "p4": [2.0, 4.0, 6.0]}
    rows = [
        {
            "image_id": f"{prompt}-{index}",
            "prompt_id": prompt,
            "prompt": f"prompt {prompt}",
            "image_uri": f"/x/{prompt}-{index}.webp",
            "score": score,
            "source_file": "f",
            "source_row": index,
        }
        for prompt, values in scores.items()
        for index, score in enumerate(values)
    ]
    scored = pl.DataFrame(rows, schema_overrides={"score": pl.Float32})
    expected_combinations = sum(len(list(itertools.combinations(v, 2))) for v in scores.values())
    pairs, _, counts = preference_pairs(scored)
    scored.write_parquet(tmp_path / "scored.parquet")
    summary = naive.pairs(tmp_path / "scored.parquet", tmp_path)
    assert summary == {"combinations": expected_combinations, "ties": 2, "pairs": expected_combinations - 2}
    assert counts == summary
    naive_ids = set(pl.read_parquet(tmp_path / "pairs.parquet")["pair_id"])
    assert naive_ids == set(pairs["pair_id"])


def test_naive_brute_force_neighbours_match_faiss() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    groups = rng.integers(0, 40, size=300)
    queries = np.arange(0, 300, 7)
    chosen, _ = nearest_other(base, base[queries], groups[queries], groups, search_k=5)
    reference = naive.brute_force_nearest_other(
        base, base[queries], groups[queries].tolist(), groups.tolist(), search_k=5, block=8
    )
    assert reference == chosen.tolist()
    assert all(index == -1 or groups[index] != groups[q] for q, index in zip(queries, reference, strict=True))


def test_ivf_search_probing_every_list_is_the_exact_search() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((400, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    groups = rng.integers(0, 60, size=400)
    queries = np.arange(0, 400, 5)
    exact, exact_similarity = nearest_other(base, base[queries], groups[queries], groups, search_k=8)
    ivf, ivf_similarity = nearest_other(
        base, base[queries], groups[queries], groups, search_k=8, index="ivf", probes=1000
    )
    assert ivf.tolist() == exact.tolist()
    np.testing.assert_allclose(ivf_similarity, exact_similarity, rtol=1e-5)


def test_negatives_index_and_growth_scripts_run(work: Path) -> None:
    report = negatives_index.main(
        ["--corpus", str(work / "corpus"), "--probes", "2,1000", "--work", str(work)]
    )
    flat, few, every = report["rows"]
    assert flat["index"] == "flat" and few["probes"] == 2 and every["probes"] == 1000
    assert every["same_text_negative"] == 1.0 and every["same_image_negative"] == 1.0  # all lists = exact
    assert 0.0 <= few["same_image_negative"] <= 1.0
    reports = [work / "small.json", work / "large.json"]
    for path, prompts in zip(reports, (1, 2), strict=True):
        stage = {"stage": "pairs", "seconds": 0.5 * prompts**2, "peak_rss_mib": 100.0}
        path.write_text(json.dumps({"counts": {"train_images": 1000 * prompts}, "stages": [stage]}))
    (row,) = growth.main([str(path) for path in reports])
    assert row["exponent"] == pytest.approx(2.0)


def test_before_after_compares_a_commit_with_the_working_tree(work: Path) -> None:
    rows = before_after.main(
        ["--corpus", str(work / "corpus"), "--baseline", "HEAD", "--runs", "1", "--work", str(work)]
    )
    assert [row["function"].split()[0] for row in rows] == [
        "image_problems",
        "open_image",
        "embed_images",
        "nearest_within",
        "mine_negatives",
        "path_fingerprint",
        "path_fingerprint",
    ]
    assert all(row["before_seconds"] > 0 and row["after_seconds"] > 0 for row in rows)


def test_scaled_corpus_is_a_valid_layout_and_its_embeddings_are_the_stage_s(work: Path) -> None:
    source = work / "corpus"
    spec = ScaleSpec(train_prompts=45, captions=20, source=str(source))
    corpus = synthesize(work / "scaled", spec)
    metadata = pl.read_parquet(corpus.imagerewarddb / "metadata-train.parquet")
    assert metadata["prompt_id"].n_unique() == 45 == corpus.counts["imagerewarddb_train_prompts"]
    assert metadata.height > len(source_webp_bytes(source))  # the source's images are cycled
    art = work / "scaled-art"
    ingested = ingest_ratings(corpus.imagerewarddb, split="train", image_check="header", root=art)
    assert ingested.rows_kept == ingested.rows_in == metadata.height  # every image resolves and opens
    captions = pl.read_parquet(corpus.mjbench / "data" / "alignment-00000-of-00001.parquet")["caption"]
    assert captions.len() == 20 and captions.n_unique() == 20
    assert synthesize(work / "scaled", spec).seconds == 0.0  # the marker makes a second call reuse it

    scored = ratings(ingested.path, perspective="alignment", root=art)
    clip = ClipSpec()
    inputs = data_pipeline.PipelineInputs(
        corpus.imagerewarddb,
        corpus.mjbench,
        synthetic_embeddings=data_pipeline.SyntheticEmbeddings(
            source, data_pipeline.source_embeddings(source, clip, work)
        ),
    )
    images_path, texts_path = data_pipeline.synthesize_embed_output(
        scored.path, inputs, load_clip(clip), clip.batch_size, work / "synthetic-embed"
    )
    real = embed(scored.path, clip=clip, root=art)
    synthetic = pl.read_parquet(images_path).sort("image_id")
    computed = real.read().sort("image_id")
    assert synthetic["image_id"].to_list() == computed["image_id"].to_list()
    np.testing.assert_allclose(synthetic["embedding"].to_numpy(), computed["embedding"].to_numpy(), atol=1e-5)
    text = pl.read_parquet(texts_path).sort("prompt_id")
    np.testing.assert_allclose(
        text["embedding"].to_numpy(), real.read("text").sort("prompt_id")["embedding"].to_numpy(), atol=1e-5
    )


def test_embedding_smoke_compares_the_stage_with_the_bare_forward(work: Path) -> None:
    report = embedding.main(["--smoke", "--work", str(work)])
    run = report["runs"][0]
    assert report["images"] == 64
    assert run["stage_images_per_second"] > 0 and run["forward_images_per_second"] > 0
    assert run["forward_seconds"] == pytest.approx(run["image_forward_seconds"] + run["text_forward_seconds"])


def test_cache_rerun_finds_every_stage_cached(work: Path, prefect_harness: None) -> None:
    corpus = work / "corpus"
    report = cache_rerun.measure_reruns(corpus / "imagerewarddb", corpus / "mjbench", runs=1, work=work)
    run = report["runs"][0]
    assert run["same_outputs"] is True  # same keys: the rerun returned the first run's files
    assert run["fraction"] == pytest.approx(run["cached_seconds"] / run["first_seconds"])


GPU_TINY = ["--tiny", "--device", "cpu", "--batch-sizes", "1,2", "--warmup", "0", "--repeats", "1"]


def test_cache_integrity_smoke_times_every_operation_on_a_pairs_table(tmp_path: Path) -> None:
    table = cache_integrity.pairs_table(900)
    assert table.schema == pl.Schema(PAIRS_SCHEMA) and table["pair_id"].n_unique() == 900
    assert table["prompt_id"].n_unique() == 20 and table["chosen_prompt"].str.len_chars().min() > 20
    (row,) = cache_integrity.main(["--smoke", "--work", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert row["rows"] == 10_000 and row["MiB"] > 0
    assert (
        set(cache_integrity.COLUMNS) <= set(row) and json.loads((tmp_path / "r.json").read_text())["results"]
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "r.json"]  # the scratch tables are removed


def test_gpu_eval_tiny_runs_on_cpu(tmp_path: Path) -> None:
    report = tmp_path / "gpu_eval.json"
    result = gpu_eval.main([*GPU_TINY, "--out", str(report)])
    assert [backbone["name"] for backbone in result["backbones"]] == [
        "phi35v-native-tiny",
        "qwen2.5-vl-3b-sized-tiny",
    ]
    for backbone in result["backbones"]:
        timings = backbone["evaluation"]
        assert [timing["batch_size"] for timing in timings] == [1, 2]
        assert backbone["best_seconds_per_eval"] == min(timing["seconds_per_eval"] for timing in timings)
        assert (
            np.isfinite(backbone["lora_step"]["loss"]) and backbone["lora_step"]["trainable_parameters"] > 0
        )
        assert backbone["failures"] == {} and backbone["skipped"] == []
    assert result["complete"] is True
    assert result["device"]["versions"]["transformers"] == transformers.__version__
    assert json.loads(report.read_text()) == json.loads(json.dumps(result))


def test_gpu_eval_records_a_failed_measurement_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    measure = gpu_eval.measure_evaluation

    def out_of_memory_at_batch_2(model, size, batch_size, device, **options):
        if batch_size == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return measure(model, size, batch_size, device, **options)

    monkeypatch.setattr(gpu_eval, "measure_evaluation", out_of_memory_at_batch_2)
    report = tmp_path / "gpu_eval.json"
    result = gpu_eval.main([*GPU_TINY, "--backbones", "phi35v", "--out", str(report)])
    (backbone,) = result["backbones"]
    assert backbone["failures"] == {
        "evaluation batch 2": "OutOfMemoryError: CUDA out of memory. Tried to allocate 9.00 GiB"
    }
    assert [timing["batch_size"] for timing in backbone["evaluation"]] == [1]
    assert backbone["lora_step"] is not None  # measured after the failure
    assert result["complete"] is False
    assert json.loads(report.read_text())["backbones"][0]["failures"] == backbone["failures"]


def test_gpu_eval_stops_starting_measurements_when_the_budget_is_spent(tmp_path: Path) -> None:
    report = tmp_path / "gpu_eval.json"
    result = gpu_eval.main([*GPU_TINY, "--budget-seconds", "0", "--out", str(report)])
    assert [(backbone["skipped"], backbone["evaluation"]) for backbone in result["backbones"]] == [
        (["build"], []),
        (["build"], []),
    ]
    assert result["complete"] is False and json.loads(report.read_text())["complete"] is False


def test_gpu_eval_saves_the_report_after_every_measurement(tmp_path: Path, monkeypatch) -> None:
    report = tmp_path / "gpu_eval.json"
    snapshots: list[dict] = []
    save = gpu_eval.write_json

    def save_and_keep(path, payload):
        snapshots.append(json.loads(json.dumps(payload, default=str)))
        return save(path, payload)

    monkeypatch.setattr(gpu_eval, "write_json", save_and_keep)
    gpu_eval.main([*GPU_TINY, "--backbones", "qwen25vl", "--out", str(report)])
    measured = [
        len(snapshot["backbones"][0]["evaluation"]) if snapshot["backbones"] else 0 for snapshot in snapshots
    ]
    assert 1 in measured and 2 in measured  # a run killed after batch 1 would still have its figure
    assert any(snapshot["backbones"] and snapshot["backbones"][0]["lora_step"] for snapshot in snapshots)


def test_gpu_eval_full_size_configs_have_the_published_parameter_counts() -> None:
    counts = gpu_eval.dry_run(torch.bfloat16)
    # Phi-3.5-vision: 4.15B (CLIP ViT-L/14-336 0.30B + Phi-3.5-mini 3.82B); Qwen2.5-VL-3B: 3.75B.
    assert counts["phi35v-sized"]["total"] == pytest.approx(4.15e9, rel=0.01)
    assert counts["phi35v-sized"]["vision_tower"] == pytest.approx(0.304e9, rel=0.01)
    # The native build: the same 4.15B with the published image embedding (projector 4096 -> 3072 -> 3072).
    assert counts["phi35v-native"]["total"] == pytest.approx(4.15e9, rel=0.01)
    assert counts["phi35v-native"]["vision_tower"] == pytest.approx(0.304e9, rel=0.01)
    assert counts["phi35v-native"]["projector"] == 4096 * 3072 + 3072 + 3072 * 3072 + 3072
    assert counts["qwen2.5-vl-3b-sized"]["total"] == pytest.approx(3.75e9, rel=0.01)


def test_scoring_smoke_agrees_batched_and_one_by_one() -> None:
    from benchmarks import scoring

    result = scoring.main(["--smoke"])
    assert result["scoring"]["max_score_difference"] < 1e-5
    assert result["scoring"]["batched_items_per_s"] > 0 and result["training"]["one_forward_pairs_per_s"] > 0


def test_learnability_quick_runs_every_perspective_and_head(tmp_path: Path) -> None:
    from benchmarks import learnability

    assert learnability.main(["--quick", "--out", str(tmp_path / "learn")]) == 0
    results = json.loads((tmp_path / "learn" / "results.json").read_text())["results"]
    runs = {(row["perspective"], row["head"]) for row in results}
    assert runs == {(p, h) for p in learnability.PERSPECTIVES for h in learnability.HEADS}
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["steps"] > 0 for row in results)


def test_colour_probe_smoke_reports_every_feature_above_zero() -> None:
    from benchmarks import colour_probe

    report = colour_probe.main(["--smoke"])
    assert set(report["accuracy"]) == {"pixels 8x8", "e_v mean-pooled", "e_h (EOS)"}
    assert report["chance"] == pytest.approx(1 / 8) and report["images"] == 80
    assert all(0.0 <= accuracy <= 1.0 for accuracy in report["accuracy"].values())
    # Colour is in the raw pixels of 80 single-shape images: the probe beats chance there.
    assert report["accuracy"]["pixels 8x8"] > 2 * report["chance"]


def test_the_prepared_gpu_command_runs_from_a_bare_checkout(tmp_path: Path) -> None:
    """benchmarks/gpu_run.sh as the GPU machine runs it (project on PYTHONPATH, not installed), tiny on
    the CPU: the environment record and the report land in $OUT."""
    project = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    completed = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh", *GPU_TINY, "--backbones", "phi35v"],
        cwd=project,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    environment = (out / "environment.txt").read_text()
    assert f"transformers {transformers.__version__}" in environment
    report = json.loads((out / "gpu_eval.json").read_text())
    assert report["complete"] is True and report["budget_seconds"] == 300
    assert [timing["batch_size"] for timing in report["backbones"][0]["evaluation"]] == [1, 2]
    assert "phi35v-sized-tiny" in (out / "gpu_eval.log").read_text()
