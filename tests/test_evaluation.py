"""The evaluation harness without Prefect: size-sorted batched scoring, the reward-model adapter, the
benchmark readers and the metrics tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from reward.baselines import ClipScoreScorer
from reward.benchmarks import (
    MetricOptions,
    benchmark_metrics,
    get_benchmark,
    headline_estimates,
    headline_values,
    not_applicable,
    pairs_metrics,
    read_benchmark,
)
from reward.config import HeadConfig, LoraSettings, LossConfig
from reward.evaluation import (
    EvaluationError,
    RewardModelScorer,
    Scorer,
    batch_order,
    reward_model_scorers,
    score_items,
    score_table,
)
from reward.metrics import pairwise_accuracy, wilson_interval
from reward.scoring import RewardScorer
from reward.tiny import build_tiny_backbone
from tests.reward_support import one_torch_thread, save, trained_model  # noqa: F401

#: Image sizes of the test items, three of each, deliberately interleaved.
SIZES = [
    (32, 32),
    (16, 16),
    (24, 40),
    (16, 16),
    (32, 32),
    (24, 40),
    (40, 24),
    (16, 16),
    (32, 32),
    (24, 40),
    (40, 24),
    (40, 24),
]


def pixel_score(image: Image.Image, prompt: str) -> float:
    return float(np.asarray(image.convert("RGB"), dtype=np.float64).mean() / 255 + 0.01 * len(prompt))


class PixelScorer:
    """A deterministic scorer that records the batches it is given (sizes and prompts)."""

    name = "pixels"

    def __init__(self) -> None:
        self.batches: list[list[tuple[tuple[int, int], str]]] = []

    def score(self, images, prompts) -> np.ndarray:  # noqa: ANN001
        self.batches.append([(image.size, prompt) for image, prompt in zip(images, prompts, strict=True)])
        return np.array([pixel_score(image, prompt) for image, prompt in zip(images, prompts, strict=True)])


@pytest.fixture()
def items(tmp_path: Path) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    uris, prompts = [], []
    for index, (width, height) in enumerate(SIZES):
        path = tmp_path / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        uris.append(str(path))
        prompts.append("a prompt " + "x" * int(rng.integers(0, 20)))
    return uris, prompts


def expected_scores(uris: list[str], prompts: list[str]) -> np.ndarray:
    return np.array([pixel_score(Image.open(uri), prompt) for uri, prompt in zip(uris, prompts, strict=True)])


# --------------------------------------------------------------------------------------------
# Batching and ordering


def test_batches_are_homogeneous_and_scores_come_back_in_input_order(items) -> None:
    uris, prompts = items
    scorer = PixelScorer()
    result = score_items(scorer, uris, prompts, batch_size=3)
    np.testing.assert_allclose(result.scores, expected_scores(uris, prompts))
    assert result.failures == {} and result.distinct_items == len(uris)
    assert [len(batch) for batch in scorer.batches] == [3, 3, 3, 3]
    assert all(len({size for size, _ in batch}) == 1 for batch in scorer.batches)  # one size per batch
    areas = [batch[0][0][0] * batch[0][0][1] for batch in scorer.batches]
    assert areas == sorted(areas)
    for batch in scorer.batches:  # within a size, prompts by length
        lengths = [len(prompt) for _, prompt in batch]
        assert lengths == sorted(lengths)

    unsorted = PixelScorer()
    plain = score_items(unsorted, uris, prompts, batch_size=3, sort=False)
    np.testing.assert_array_equal(plain.scores, result.scores)
    assert [size for batch in unsorted.batches for size, _ in batch] == SIZES  # input order


def test_sorted_scoring_equals_unsorted_scoring_with_clipscore(items) -> None:
    uris, prompts = items
    scorer = ClipScoreScorer()
    sorted_scores = score_items(scorer, uris, prompts, batch_size=4).scores
    np.testing.assert_allclose(
        sorted_scores, score_items(scorer, uris, prompts, batch_size=5, sort=False).scores, atol=1e-6
    )
    single = np.array(
        [
            scorer.score([Image.open(uri).convert("RGB")], [prompt])[0]
            for uri, prompt in zip(uris, prompts, strict=True)
        ]
    )
    np.testing.assert_allclose(sorted_scores, single, atol=1e-6)


def test_batch_order_sorts_by_area_then_width_then_prompt_length_stably() -> None:
    sizes = [(4, 4), (2, 8), (8, 2), (4, 4), (2, 2)]
    lengths = [5, 1, 1, 5, 9]
    # (2, 2) is smallest; area 16: width 2, then 4 (two ties keep input order), then 8
    assert batch_order(sizes, lengths).tolist() == [4, 1, 0, 3, 2]


def test_each_distinct_item_is_scored_once(items) -> None:
    uris, prompts = items
    twice_uris, twice_prompts = uris[:4] + uris[:4], prompts[:4] + prompts[:4]
    twice_prompts[-1] = "another prompt"  # same image, other prompt: a distinct item
    scorer = PixelScorer()
    result = score_items(scorer, twice_uris, twice_prompts, batch_size=16)
    assert result.distinct_items == 5 and sum(len(batch) for batch in scorer.batches) == 5
    np.testing.assert_allclose(result.scores, expected_scores(twice_uris, twice_prompts))


def test_an_unreadable_image_fails_only_its_items(items, tmp_path: Path) -> None:
    uris, prompts = items
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(uris[0]).read_bytes()[:60])  # a valid header, no image data
    bad = [str(tmp_path / "missing.png"), str(truncated)]
    result = score_items(
        PixelScorer(), [bad[0], *uris[:3], bad[1], bad[0]], ["p", *prompts[:3], "q", "r"], batch_size=2
    )
    assert sorted(result.failures) == [0, 4, 5]
    assert "missing.png" in result.failures[0] and "file not found" in result.failures[0]
    assert "truncated.png" in result.failures[4]
    assert np.isnan(result.scores[[0, 4, 5]]).all()
    np.testing.assert_allclose(result.scores[1:4], expected_scores(uris[:3], prompts[:3]))


class BrokenScorer:
    name = "broken"

    def __init__(self, output) -> None:  # noqa: ANN001
        self.output = output

    def score(self, images, prompts) -> np.ndarray:  # noqa: ANN001
        return self.output(len(images))


def test_a_scorer_breaking_the_protocol_is_named(items) -> None:
    uris, prompts = items
    with pytest.raises(EvaluationError, match=r"scorer 'broken' returned shape \(3, 2\) for 3 items"):
        score_items(BrokenScorer(lambda n: np.zeros((n, 2))), uris[:3], prompts[:3])
    nan_first = score_items(
        BrokenScorer(lambda n: np.r_[np.nan, np.ones(n - 1)]), uris[:2], prompts[:2], sort=False
    )
    assert nan_first.failures == {0: "broken gave a non-finite score (nan)"} and nan_first.scores[1] == 1.0
    with pytest.raises(EvaluationError, match="got 2 images but 1 prompts"):
        score_items(PixelScorer(), uris[:2], prompts[:1])
    with pytest.raises(EvaluationError, match="batch_size must be >= 1, got 0"):
        score_items(PixelScorer(), uris[:2], prompts[:2], batch_size=0)


def test_progress_bar_reports_items_per_second(items, capsys) -> None:
    uris, prompts = items
    score_items(PixelScorer(), uris, prompts, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "pixels" in err and "item/s" in err and f"{len(uris)}/{len(uris)}" in err
    score_items(PixelScorer(), uris, prompts, batch_size=4)
    assert capsys.readouterr().err == ""


def test_score_table_scores_both_images_of_a_pair(items, tmp_path: Path) -> None:
    uris, prompts = items
    table = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "caption": prompts[:3],
            "image0_uri": uris[:3],
            "image1_uri": [uris[3], str(tmp_path / "gone.png"), uris[5]],
            "label": [0, 1, None],
        }
    )
    result = score_table(PixelScorer(), table, "pairs", batch_size=2)
    assert result.scored["item_id"].to_list() == ["a", "c"]
    np.testing.assert_allclose(
        result.scored["score0"], expected_scores([uris[0], uris[2]], [prompts[0], prompts[2]])
    )
    np.testing.assert_allclose(
        result.scored["score1"], expected_scores([uris[3], uris[5]], [prompts[0], prompts[2]])
    )
    assert result.failures.rows() == [(1, "image1_uri", result.failures["reason"][0])]
    assert "gone.png" in result.failures["reason"][0]
    with pytest.raises(
        EvaluationError, match="a ratings benchmark table needs column\\(s\\) image_uri, prompt"
    ):
        score_table(PixelScorer(), table, "ratings")
    with pytest.raises(EvaluationError, match="caption is missing in row 1"):
        score_table(PixelScorer(), table.with_columns(pl.Series("caption", ["x", None, "y"])), "pairs")


# --------------------------------------------------------------------------------------------
# The reward model as a scorer


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    backbone = build_tiny_backbone(root / "tiny", "llava")
    torch.set_num_threads(1)
    folders = {}
    for name, seed in (("alignment", 0), ("fidelity", 1)):
        model = trained_model(
            backbone, perspective=name, head=HeadConfig(), lora=LoraSettings(rank=2, dropout=0.0), seed=seed
        )
        folders[name] = save(model, root / name, backbone)
    gpm = trained_model(backbone, perspective="ranking", head=HeadConfig(gpm_dim=2), lora=None, seed=2)
    folders["ranking"] = save(gpm, root / "ranking", backbone, LossConfig("gpm"))
    return folders


def test_reward_model_scorers_share_one_lazy_base_and_skip_gpm(model_folders, items) -> None:
    uris, prompts = items
    scorers, skipped = reward_model_scorers(
        {
            "Alignment (ours)": model_folders["alignment"],
            "fidelity": model_folders["fidelity"],
            "gpm": model_folders["ranking"],
        },
        device="cpu",
        batch_size=4,
    )
    assert [scorer.name for scorer in scorers] == ["Alignment (ours)", "fidelity"]
    assert all(isinstance(scorer, Scorer) for scorer in scorers)
    assert scorers[0].source is scorers[1].source and not scorers[0].source.loaded
    assert (
        list(skipped) == ["gpm"]
        and "GPM" in skipped["gpm"]
        and str(model_folders["ranking"]) in skipped["gpm"]
    )

    pictures = [Image.open(uri).convert("RGB") for uri in uris[:5]]
    reference = RewardScorer.from_pretrained(model_folders["alignment"], device="cpu")
    direct = reference.score(pictures, prompts[:5])
    np.testing.assert_allclose(scorers[0].score(pictures, prompts[:5]), direct, atol=1e-6)
    assert scorers[0].source.loaded
    harness = score_items(scorers[0], uris[:5], prompts[:5], batch_size=2)
    np.testing.assert_allclose(harness.scores, direct, atol=1e-5)
    other = RewardScorer.from_pretrained(model_folders["fidelity"], device="cpu").score(pictures, prompts[:5])
    np.testing.assert_allclose(scorers[1].score(pictures, prompts[:5]), other, atol=1e-6)
    assert not np.allclose(direct, other)


def test_reward_model_scorer_is_the_perspectives_scalar_reward(model_folders) -> None:
    scorers, _ = reward_model_scorers({"fidelity": model_folders["fidelity"]}, device="cpu")
    (scorer,) = scorers
    assert isinstance(scorer, RewardModelScorer) and scorer.perspective == "fidelity"
    assert scorer.score([Image.new("RGB", (20, 30), "red")], ["a red square"]).shape == (1,)


# --------------------------------------------------------------------------------------------
# Benchmarks


def test_demo_benchmarks_read_into_their_kind_of_table(demo_corpus: Path) -> None:
    for name, folder, kind, columns in [
        (
            "mjbench-alignment",
            "mjbench",
            "pairs",
            {"caption", "image0_uri", "image1_uri", "label", "category"},
        ),
        ("mjbench-quality", "mjbench", "pairs", {"caption", "image0_uri", "image1_uri", "label"}),
        ("tifa160", "tifa160", "ratings", {"prompt", "image_uri", "human_avg"}),
        ("unsafebench-test", "unsafebench", "safety", {"prompt", "image_uri", "label"}),
    ]:
        benchmark = get_benchmark(name)
        assert (benchmark.kind, benchmark.demo_dataset) == (kind, folder)
        read = read_benchmark(name, demo_corpus / folder)
        assert read.table.height > 0 and columns <= set(read.table.columns) and read.rejects.is_empty()
        if kind == "pairs":
            assert set(read.table["subset"]) == {name.removeprefix("mjbench-")}
    assert set(read_benchmark("unsafebench-test", demo_corpus / "unsafebench").table["split"]) == {"test"}


def test_tifa_listing_without_scores_is_rejected_row_by_row(tmp_path: Path) -> None:
    listing = {
        f"t{i}_model": {"text_id": f"t{i}", "image_path": f"t{i}.png", "text": f"prompt {i}"}
        for i in range(3)
    }
    (tmp_path / "tifa160.json").write_text(json.dumps(listing))
    read = read_benchmark("tifa160", tmp_path / "tifa160.json")
    assert read.table.is_empty() and read.rows_in == 3
    assert set(read.rejects["field"]) == {"human_avg"} and "no human score" in read.rejects["reason"][0]


def test_unsafe_diffusion_keeps_the_test_hold_out(tmp_path: Path) -> None:
    from data.readers import HoldoutSplit

    labels = [1, 0, 0, 1, 0, 1, 1, 0, 0, 0]
    pl.DataFrame({"final_label": labels}).write_csv(tmp_path / "labels.csv")
    for row in range(len(labels)):
        (tmp_path / f"{row}.png").touch()  # present (a missing image would be a reject of its own)
    read = read_benchmark("unsafe-diffusion", tmp_path / "labels.csv")
    test_rows = sorted(HoldoutSplit().test_rows(len(labels)).tolist())
    assert sorted(read.table["source_row"].to_list()) == test_rows and read.rows_in == len(labels)
    assert read.table["label"].to_list() == [1 - labels[row] for row in sorted(test_rows)]  # 1 = safe
    assert read.rejects.height == len(labels) - len(test_rows)
    assert set(read.rejects["field"]) == {"split"} and "test hold-out" in read.rejects["reason"][0]


def test_smid_list_finds_its_images_under_image_root(tmp_path: Path) -> None:
    rows = [
        {"path": "/home/authors/smid/img_1.jpg", "label": 1, "prompt": ""},
        {"path": "/x/img_2.jpg", "label": 0, "prompt": ""},
    ]
    (tmp_path / "smid_test.json").write_text(json.dumps(rows))
    (tmp_path / "images").mkdir()
    for name in ("img_1.jpg", "img_2.jpg"):
        (tmp_path / "images" / name).touch()  # present (a missing image would be a reject of its own)
    read = read_benchmark("smid", tmp_path / "smid_test.json", image_root=tmp_path / "images")
    assert read.table["image_uri"].to_list() == [
        str(tmp_path / "images" / "img_1.jpg"),
        str(tmp_path / "images" / "img_2.jpg"),
    ]
    assert read.table["label"].to_list() == [1, 0]


def test_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(
        EvaluationError, match="unknown benchmark 'drawbench'; choose from mjbench-alignment, .*smid"
    ):
        get_benchmark("drawbench")


# --------------------------------------------------------------------------------------------
# Metrics tables


def scored_pairs() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    n = 40
    labels = rng.integers(0, 2, n).astype(float)
    labels[[3, 17]] = np.nan  # human ties
    score0 = rng.normal(size=n)
    score1 = np.where(rng.random(n) < 0.2, score0, rng.normal(size=n))  # some model ties
    return pl.DataFrame(
        {
            "subset": ["alignment"] * 25 + ["quality"] * 15,
            "category": rng.choice(["a", "b", "c"], n).tolist(),
            "score0": score0,
            "score1": score1,
            "label": pl.Series([None if np.isnan(x) else int(x) for x in labels], dtype=pl.Int8),
        }
    )


def test_pairs_metrics_cover_overall_subsets_and_categories() -> None:
    scores = scored_pairs()
    table = pairs_metrics(scores, tie_threshold=0.0)
    for row in table.iter_rows(named=True):
        part = scores
        if row["level"] != "overall":
            part = part.filter(pl.col("subset") == row["subset"])
        if row["level"] == "category":
            part = part.filter(pl.col("category") == row["category"])
        expected = pairwise_accuracy(part["score0"], part["score1"], part["label"])
        assert (row["accuracy_with_tie"], row["n_pairs"], row["n_model_ties"]) == pytest.approx(
            (expected.accuracy_with_tie, expected.n_pairs, expected.n_model_ties), nan_ok=True
        )
    levels = table.group_by("level").len().sort("level").rows()
    assert levels == [("category", 6), ("overall", 1), ("subset", 2)]
    overall = table.filter(pl.col("level") == "overall").row(0, named=True)
    assert overall["n_pairs"] == 40 and overall["n_human_ties"] == 2 and overall["n_model_ties"] > 0


def test_headline_values_name_the_safety_positive_class() -> None:
    scores = pl.DataFrame({"score": [-2.0, 1.0, 3.0, -1.0], "label": [0, 1, 0, 1]})
    metrics = benchmark_metrics("safety", scores, MetricOptions(positive_class="safe"))
    values = headline_values("safety", metrics)
    assert [(h.label, v) for h, v in values] == [
        ("F1 (safe = positive)", pytest.approx(0.5)),
        ("accuracy", 0.5),
    ]
    pairs = headline_values("pairs", pairs_metrics(scored_pairs()))
    assert [h.column for h, _ in pairs] == ["accuracy_with_tie", "accuracy_without_tie"]
    with pytest.raises(EvaluationError, match="no scored rows"):
        benchmark_metrics("ratings", scores.clear())


@pytest.mark.hostile_case(14)
def test_every_reported_metric_has_its_n_and_95_interval() -> None:
    """Issue #11 case 14: per-category accuracies carry Wilson intervals over their own n; safety and
    correlation rows carry n and an interval around the value."""
    scores = scored_pairs()
    table = pairs_metrics(scores)
    for row in table.iter_rows(named=True):
        with_tie = row["n_pairs"] - row["n_human_ties"]
        without_tie = with_tie - row["n_model_ties"]
        assert (row["accuracy_with_tie_n"], row["accuracy_without_tie_n"]) == (with_tie, without_tie)
        assert (row["accuracy_with_tie_low"], row["accuracy_with_tie_high"]) == pytest.approx(
            wilson_interval(row["n_correct"], with_tie)
        )
        assert row["accuracy_with_tie_low"] <= row["accuracy_with_tie"] <= row["accuracy_with_tie_high"]
    overall = headline_estimates("pairs", table)
    assert [(h.column, e.n) for h, e in overall] == [
        ("accuracy_with_tie", 38),
        ("accuracy_without_tie", 38 - 8),
    ]

    rng = np.random.default_rng(0)
    safety = pl.DataFrame({"score": rng.normal(size=60), "label": rng.integers(0, 2, 60)})
    metrics = benchmark_metrics("safety", safety, MetricOptions(bootstrap_resamples=200))
    for headline, estimate in headline_estimates("safety", metrics):
        assert estimate.n == 60 and estimate.low <= estimate.value <= estimate.high, headline
    again = benchmark_metrics("safety", safety, MetricOptions(bootstrap_resamples=200))
    assert again.equals(metrics)  # the bootstrap seed is fixed

    ratings = pl.DataFrame({"human_avg": rng.normal(size=30)}).with_columns(
        score=pl.col("human_avg") + pl.Series(rng.normal(size=30))
    )
    correlations = benchmark_metrics("ratings", ratings, MetricOptions(bootstrap_resamples=200))
    assert {
        f"{m}_{s}" for m in ("pearson", "kendall_tau_b", "pairwise_accuracy") for s in ("n", "low", "high")
    } <= set(correlations.columns)
    assert correlations["pearson_low"][0] < correlations["pearson"][0] < correlations["pearson_high"][0]


@pytest.mark.hostile_case(14)
def test_safety_metrics_do_not_apply_to_a_score_that_is_not_a_safety_logit() -> None:
    assert not_applicable("safety", safety_logit=False).startswith("not applicable")
    assert not_applicable("safety", safety_logit=True) is None
    assert not_applicable("pairs", safety_logit=False) is None
