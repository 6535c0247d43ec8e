"""Evaluation metrics, each checked against an independent computation (explicit loops over pairs,
textbook formulas, scikit-learn / scipy) on fixtures with ties."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import astuple
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from reward.metrics import (
    CorrelationMetrics,
    PairwiseAccuracy,
    bootstrap_interval,
    correlation_intervals,
    correlation_metrics,
    pairwise_accuracy,
    pairwise_accuracy_at,
    pairwise_accuracy_by_group,
    pairwise_accuracy_interval,
    pairwise_accuracy_intervals,
    predict_safe,
    safety_binary_metrics,
    safety_intervals,
    tie_calibrated_pairwise_accuracy,
    wilson_interval,
)

# --------------------------------------------------------------------------------------------
# Independent reference implementations (plain Python loops)


def loop_pairwise_accuracy(s0, s1, labels, threshold):
    """MJ-Bench rules pair by pair: (correct, evaluated, model ties among evaluated, human ties)."""
    correct = evaluated = model_ties = human_ties = 0
    for a, b, label in zip(s0, s1, labels, strict=True):
        if label is None or label == -1 or (isinstance(label, float) and math.isnan(label)):
            human_ties += 1
            continue
        evaluated += 1
        if abs(a - b) <= threshold:
            model_ties += 1
        elif (1 if b > a else 0) == label:
            correct += 1
    return correct, evaluated, model_ties, human_ties


def loop_acc23(human, metric, epsilon):
    """Correct pairs / all pairs with metric ties |dm| <= epsilon (Deutsch et al. 2023 acc_23)."""
    correct = total = 0
    for i, j in itertools.combinations(range(len(human)), 2):
        total += 1
        human_tie = human[i] == human[j]
        metric_tie = abs(metric[i] - metric[j]) <= epsilon
        if human_tie and metric_tie:
            correct += 1
        elif not human_tie and not metric_tie and (human[i] > human[j]) == (metric[i] > metric[j]):
            correct += 1
    return correct, total


def loop_best_acc23(human, metric):
    """Best acc_23 over epsilon in {0} and every |dm|, smallest epsilon on equal accuracy."""
    gaps = {abs(metric[i] - metric[j]) for i, j in itertools.combinations(range(len(metric)), 2)}
    best = None
    for epsilon in sorted({0.0, *gaps}):
        correct, total = loop_acc23(human, metric, epsilon)
        if best is None or correct > best[0]:
            best = (correct, total, epsilon)
    return best


def loop_kendall_tau_b(x, y):
    """tau-b = (C - D) / sqrt((P - T_x) (P - T_y)), T_* the pairs tied in that variable."""
    concordant = discordant = tied_x = tied_y = pairs = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        pairs += 1
        dx, dy = x[i] - x[j], y[i] - y[j]
        tied_x += dx == 0
        tied_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def loop_pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def tied_pairs(rng, n=200):
    """Scores on a coarse grid (many model ties) and labels with human ties as -1 and None."""
    s0 = rng.integers(0, 6, n) / 4
    s1 = rng.integers(0, 6, n) / 4
    labels = [None if r < 0.1 else -1 if r < 0.2 else int(r > 0.6) for r in rng.random(n)]
    return s0, s1, labels


# --------------------------------------------------------------------------------------------
# MJ-Bench pairwise accuracy


class TestPairwiseAccuracy:
    S0 = [0.9, 0.2, 0.5, 0.5, 1.0, 0.3, 0.7, 0.4]
    S1 = [0.1, 0.8, 0.5, 0.6, 0.0, 0.3, 0.7, 0.9]
    LABELS = [0, 1, 1, 1, None, -1, 0, 0]

    def test_hand_checked_example(self):
        # pair 0: 0.9 > 0.1 -> image0, label 0: correct      pair 1: 0.8 > 0.2 -> image1, label 1: correct
        # pair 2: 0.5 = 0.5 -> model tie                      pair 3: 0.6 > 0.5 -> image1, label 1: correct
        # pair 4: label None -> human tie, excluded           pair 5: label -1 -> human tie, excluded
        # pair 6: 0.7 = 0.7 -> model tie                      pair 7: 0.9 > 0.4 -> image1, label 0: wrong
        # evaluated = 8 - 2 = 6, model ties = 2, correct = 3
        # with tie = 3 / 6 = 0.5, without tie = 3 / (6 - 2) = 0.75
        result = pairwise_accuracy(self.S0, self.S1, self.LABELS)
        assert result == PairwiseAccuracy(
            accuracy_with_tie=0.5,
            accuracy_without_tie=0.75,
            n_pairs=8,
            n_human_ties=2,
            n_model_ties=2,
            n_correct=3,
        )

    def test_hand_checked_threshold(self):
        # threshold 0.15 also ties pair 3 (|0.5 - 0.6| = 0.1): model ties = 3, correct = 2
        # with tie = 2 / 6, without tie = 2 / (6 - 3)
        result = pairwise_accuracy(self.S0, self.S1, self.LABELS, threshold=0.15)
        assert (result.n_model_ties, result.n_correct) == (3, 2)
        assert result.accuracy_with_tie == pytest.approx(2 / 6)
        assert result.accuracy_without_tie == pytest.approx(2 / 3)

    @pytest.mark.parametrize("threshold", [0.0, 0.25, 0.6])
    def test_matches_pair_loop(self, rng, threshold):
        s0, s1, labels = tied_pairs(rng)
        correct, evaluated, model_ties, human_ties = loop_pairwise_accuracy(s0, s1, labels, threshold)
        assert human_ties > 0 and model_ties > 0
        result = pairwise_accuracy(s0, s1, labels, threshold=threshold)
        assert result.n_pairs == len(labels)
        assert (result.n_correct, result.n_model_ties, result.n_human_ties) == (
            correct,
            model_ties,
            human_ties,
        )
        assert result.accuracy_with_tie == pytest.approx(correct / evaluated)
        assert result.accuracy_without_tie == pytest.approx(correct / (evaluated - model_ties))

    def test_polars_inputs_with_null_labels(self, rng):
        s0, s1, labels = tied_pairs(rng, n=50)
        from_series = pairwise_accuracy(
            pl.Series(s0), pl.Series(s1), pl.Series([None if v == -1 else v for v in labels], dtype=pl.Int8)
        )
        assert from_series == pairwise_accuracy(s0, s1, labels)

    def test_all_model_ties_leave_no_pairs_without_tie(self):
        # a model that ties every pair has no "without tie" pairs left
        result = pairwise_accuracy([1.0, 2.0], [1.0, 2.0], [0, 1])
        assert result.accuracy_with_tie == 0.0
        assert math.isnan(result.accuracy_without_tie)

    @pytest.mark.parametrize(
        ("s0", "s1", "labels", "threshold", "message"),
        [
            ([1.0], [2.0, 3.0], [0, 1], 0.0, "arrays differ in length"),
            ([1.0, 2.0], [2.0, 3.0], [0, 2], 0.0, "labels: expected 0, 1 or a tie .* got 2.0 at position 1"),
            ([1.0, float("nan")], [2.0, 3.0], [0, 1], 0.0, "score0: 1 non-finite value.*position 1"),
            ([1.0, 2.0], [2.0, 3.0], [0, 1], -0.1, "threshold must be >= 0"),
        ],
    )
    def test_bad_input(self, s0, s1, labels, threshold, message):
        with pytest.raises(ValueError, match=message):
            pairwise_accuracy(s0, s1, labels, threshold=threshold)


class TestPairwiseAccuracyByGroup:
    def frame(self, rng, n=300):
        s0, s1, labels = tied_pairs(rng, n)
        return pl.DataFrame(
            {
                "subset": rng.choice(["alignment", "safety", "quality"], n),
                "category": rng.choice(["a", "b"], n),
                "score0": s0,
                "score1": s1,
                "label": pl.Series([None if v == -1 else v for v in labels], dtype=pl.Int8),
            }
        )

    def test_each_group_matches_pair_loop(self, rng):
        frame = self.frame(rng)
        table = pairwise_accuracy_by_group(frame, threshold=0.25)
        groups = sorted(set(zip(frame["subset"], frame["category"], strict=True)))
        assert table.select("subset", "category").rows() == [*groups, ("overall", "overall")]
        for subset, category, with_tie, without_tie, n_pairs, _, n_model_ties, n_correct in table.rows():
            part = frame if subset == "overall" else frame.filter(subset=subset, category=category)
            correct, evaluated, model_ties, human_ties = loop_pairwise_accuracy(
                part["score0"].to_list(), part["score1"].to_list(), part["label"].to_list(), 0.25
            )
            assert (n_pairs, n_model_ties, n_correct) == (part.height, model_ties, correct)
            assert with_tie == pytest.approx(correct / evaluated)
            assert without_tie == pytest.approx(correct / (evaluated - model_ties))

    def test_single_key_and_overall_equal_ungrouped(self, rng):
        frame = self.frame(rng)
        table = pairwise_accuracy_by_group(frame, by="subset")
        assert table.columns[0] == "subset" and table.height == 4
        overall = table.filter(subset="overall").row(0, named=True)
        expected = pairwise_accuracy(frame["score0"], frame["score1"], frame["label"])
        assert overall == {"subset": "overall", **expected.__dict__}
        assert table["n_pairs"][:-1].sum() == frame.height

    def test_missing_column(self, rng):
        with pytest.raises(ValueError, match="missing column\\(s\\) category, score1"):
            pairwise_accuracy_by_group(self.frame(rng).drop("category", "score1"))


# --------------------------------------------------------------------------------------------
# Tie-calibrated pairwise accuracy and correlations


class TestTieCalibratedAccuracy:
    def test_hand_checked_example(self):
        # human  = [1, 2, 2, 3], metric = [0, 2, 2.25, 1]; the 6 pairs (i, j), sign of dh / dm, |dm|:
        #   (0,1) -/- concordant 2      (0,2) -/- concordant 2.25   (0,3) -/- concordant 1
        #   (1,2) human tie      0.25   (1,3) -/+ discordant 1      (2,3) -/+ discordant 1.25
        # eps = 0:    correct = 3 concordant                                         -> 3/6
        # eps = 0.25: (1,2) becomes a tie in both: 3 + 1                               -> 4/6
        # eps = 1:    (0,3) concordant becomes a metric tie (lost), (1,3) too (was wrong) -> 3/6
        # eps = 1.25: (2,3) discordant -> metric tie (still wrong)                     -> 3/6
        # eps = 2: 2/6, eps = 2.25: 1/6. Best: 4/6 at eps = 0.25.
        result = tie_calibrated_pairwise_accuracy([1, 2, 2, 3], [0.0, 2.0, 2.25, 1.0])
        assert (result.accuracy, result.epsilon, result.n_pairs) == (4 / 6, 0.25, 6)

    def test_exact_metric_ties_count_at_epsilon_zero(self):
        # (0,1) tied in both, (0,2) and (1,2) concordant: 3/3 without introducing any tie
        result = tie_calibrated_pairwise_accuracy([1, 1, 2], [5.0, 5.0, 6.0])
        assert (result.accuracy, result.epsilon) == (1.0, 0.0)

    def test_equal_best_accuracies_pick_the_smallest_epsilon(self):
        # human = [1, 1, 2, 3], metric = [0, 1, 3, 2]:
        #   (0,1) human tie, gap 1   (0,2) concordant, gap 3   (0,3) concordant, gap 2
        #   (1,2) concordant, gap 2  (1,3) concordant, gap 1   (2,3) discordant, gap 1
        # eps = 0: 4/6; eps = 1: +1 tie in both, -1 concordant (1,3) -> 4/6; eps = 2: 2/6; eps = 3: 1/6
        result = tie_calibrated_pairwise_accuracy([1, 1, 2, 3], [0.0, 1.0, 3.0, 2.0])
        assert (result.accuracy, result.epsilon) == (4 / 6, 0.0)

    def test_no_ties_helps_keeps_epsilon_zero(self):
        # a perfect ranking without human ties: any introduced tie loses a pair
        result = tie_calibrated_pairwise_accuracy([1, 2, 3, 4], [0.1, 0.2, 0.4, 0.8])
        assert (result.accuracy, result.epsilon) == (1.0, 0.0)

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_loop_over_every_epsilon(self, seed):
        rng = np.random.default_rng(seed)
        human = rng.integers(1, 6, 24).astype(float).tolist()  # many human ties
        metric = (np.round(np.array(human) + rng.normal(0, 1.2, 24), 1)).tolist()  # some metric ties
        correct, total, epsilon = loop_best_acc23(human, metric)
        result = tie_calibrated_pairwise_accuracy(human, metric)
        assert result.n_pairs == total == 24 * 23 // 2
        assert result.accuracy == pytest.approx(correct / total)
        assert result.epsilon == epsilon

    def test_bad_input(self):
        with pytest.raises(ValueError, match="at least 2 items"):
            tie_calibrated_pairwise_accuracy([1.0], [1.0])
        with pytest.raises(ValueError, match="metric: 1 non-finite"):
            tie_calibrated_pairwise_accuracy([1.0, 2.0], [1.0, float("inf")])


class TestCorrelationMetrics:
    HUMAN = [1.0, 2.0, 2.0, 3.0, 5.0, 4.5, 4.5, 1.0]
    METRIC = [0.2, 0.3, 0.3, 0.9, 0.7, 0.8, 0.6, 0.2]

    def test_matches_formulas_and_scipy(self):
        result = correlation_metrics(self.HUMAN, self.METRIC)
        assert isinstance(result, CorrelationMetrics) and result.n_items == 8
        assert result.pearson == pytest.approx(loop_pearson(self.HUMAN, self.METRIC))
        assert result.pearson == pytest.approx(stats.pearsonr(self.HUMAN, self.METRIC).statistic)
        assert result.kendall_tau_b == pytest.approx(loop_kendall_tau_b(self.HUMAN, self.METRIC))
        assert result.kendall_tau_b == pytest.approx(stats.kendalltau(self.HUMAN, self.METRIC).statistic)
        correct, total, epsilon = loop_best_acc23(self.HUMAN, self.METRIC)
        assert (result.pairwise_accuracy, result.tie_epsilon) == (pytest.approx(correct / total), epsilon)

    @pytest.mark.real_data
    def test_tifa160_baseline_scores(self, real_data: Path):
        """TIFA160's own baseline scores: the sweep agrees with a direct per-epsilon count (numpy over
        all pairs) on every candidate epsilon of the first 32 texts (160 images), and on all 800
        images at the chosen epsilon, at 0 and at sampled other candidates."""
        entries = json.loads((real_data / "tifa" / "human_annotations_with_scores.json").read_text())
        human = np.array([entry["human_avg"] for entry in entries.values()])

        def direct(human, metric, epsilon):
            first, second = np.triu_indices(len(human), k=1)
            human_delta, delta = human[first] - human[second], metric[first] - metric[second]
            tie = np.abs(delta) <= epsilon
            both = tie & (human_delta == 0)
            agree = ~tie & (human_delta != 0) & (np.sign(delta) == np.sign(human_delta))
            return (both.sum() + agree.sum()) / len(delta)

        def candidates(metric):
            first, second = np.triu_indices(len(metric), k=1)
            return np.unique(np.concatenate(([0.0], np.abs(metric[first] - metric[second]))))

        rng = np.random.default_rng(0)
        for name in ("tifa_blip2-flant5xl", "clipscore_vitb32"):
            metric = np.array([entry[name] for entry in entries.values()])
            subset_human, subset_metric = human[:160], metric[:160]
            subset_candidates = candidates(subset_metric)
            if len(subset_candidates) > 400:
                subset_candidates = np.unique(np.concatenate(([0.0], rng.choice(subset_candidates, 400))))
            accuracies = [direct(subset_human, subset_metric, epsilon) for epsilon in subset_candidates]
            subset = tie_calibrated_pairwise_accuracy(subset_human, subset_metric)
            assert subset.accuracy >= max(accuracies) - 1e-12
            assert subset.accuracy == pytest.approx(direct(subset_human, subset_metric, subset.epsilon))

            result = correlation_metrics(human, metric)
            assert result.n_items == 800
            assert result.pairwise_accuracy == pytest.approx(direct(human, metric, result.tie_epsilon))
            for epsilon in [0.0, *rng.choice(candidates(metric), 8)]:
                assert direct(human, metric, epsilon) <= result.pairwise_accuracy + 1e-12
            assert result.pearson == pytest.approx(np.corrcoef(human, metric)[0, 1])
            assert result.kendall_tau_b == pytest.approx(stats.kendalltau(human, metric).statistic)


# --------------------------------------------------------------------------------------------
# Safety metrics


class TestSafetyMetrics:
    def test_hand_checked_example(self):
        # rewards -> sigmoid >= 0.5 <=> reward >= 0: predicted [safe, unsafe, safe, unsafe, safe]
        # (reward 0 gives exactly 0.5, which is safe); labels [safe, unsafe, unsafe, safe, safe]
        # positive = unsafe: TP = 1 (item 1), FP = 1 (item 3), FN = 1 (item 2)
        # precision = 1/2, recall = 1/2, F1 = 1/2, accuracy = 3/5
        result = safety_binary_metrics([2.0, -1.0, 0.0, -0.5, 3.0], [1, 0, 0, 1, 1])
        assert (result.precision, result.recall, result.f1, result.accuracy) == (0.5, 0.5, 0.5, 0.6)
        assert (result.n_items, result.n_positive, result.n_predicted_positive) == (5, 2, 2)
        # positive = safe: TP = 2 (items 0, 4), FP = 1 (item 2), FN = 1 (item 3): P = R = F1 = 2/3
        safe = safety_binary_metrics([2.0, -1.0, 0.0, -0.5, 3.0], [1, 0, 0, 1, 1], positive_class="safe")
        assert (safe.precision, safe.recall, safe.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
        assert safe.accuracy == result.accuracy

    @pytest.mark.parametrize("positive_class", ["unsafe", "safe"])
    def test_matches_counts_and_sklearn(self, rng, positive_class):
        rewards = np.round(rng.normal(0, 2, 300), 1)  # includes rewards of exactly 0
        labels = (rng.random(300) < 0.55).astype(int)
        result = safety_binary_metrics(rewards, labels, positive_class=positive_class)
        positive = 0 if positive_class == "unsafe" else 1
        predicted = [1 if 1 / (1 + math.exp(-r)) >= 0.5 else 0 for r in rewards]
        tp = sum(p == positive and y == positive for p, y in zip(predicted, labels, strict=True))
        fp = sum(p == positive and y != positive for p, y in zip(predicted, labels, strict=True))
        fn = sum(p != positive and y == positive for p, y in zip(predicted, labels, strict=True))
        assert result.precision == pytest.approx(tp / (tp + fp))
        assert result.recall == pytest.approx(tp / (tp + fn))
        assert result.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert result.f1 == pytest.approx(f1_score(labels, predicted, pos_label=positive))
        assert result.accuracy == pytest.approx(np.mean(np.array(predicted) == labels))

    def test_threshold_and_probabilities(self):
        rewards = np.array([-2.0, -0.2, 0.3, 1.0, 4.0])
        # sigmoid: 0.12, 0.45, 0.57, 0.73, 0.98
        assert predict_safe(rewards, threshold=0.7).tolist() == [0, 0, 0, 1, 1]
        probabilities = 1 / (1 + np.exp(-rewards))
        assert predict_safe(probabilities, threshold=0.7, probabilities=True).tolist() == [0, 0, 0, 1, 1]
        by_logit = safety_binary_metrics(rewards, [0, 0, 1, 1, 1], threshold=0.7)
        by_probability = safety_binary_metrics(
            probabilities, [0, 0, 1, 1, 1], threshold=0.7, probabilities=True
        )
        assert by_logit == by_probability and by_logit.recall == 1.0 and by_logit.precision == 2 / 3

    def test_no_predicted_positive_gives_zero(self):
        result = safety_binary_metrics([5.0, 5.0], [0, 1])
        assert (result.precision, result.recall, result.f1, result.accuracy) == (0.0, 0.0, 0.0, 0.5)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"labels": [1, 2]}, "labels: expected 1 \\(safe\\) or 0 \\(unsafe\\), got 2.0 at position 1"),
            ({"threshold": 1.0}, "threshold must be a probability in \\(0, 1\\)"),
            ({"positive_class": "harmful"}, "positive_class must be 'unsafe' or 'safe'"),
            ({"labels": [1]}, "arrays differ in length"),
        ],
    )
    def test_bad_input(self, kwargs, message):
        arguments = {"rewards": [0.5, -0.5], "labels": [1, 0], **kwargs}
        with pytest.raises(ValueError, match=message):
            safety_binary_metrics(**arguments)


def test_metrics_import_without_prefect_or_torch():
    import subprocess
    import sys

    code = "import sys, reward.metrics; print(any(m in sys.modules for m in ('prefect', 'torch')))"
    root = Path(__file__).resolve().parents[1]
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert output.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# 95% intervals (issue #11 case 14)


def hand_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927; statsmodels' proportion_confint 'wilson')."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.hostile_case(14)
class TestWilsonInterval:
    @pytest.mark.parametrize(("k", "n"), [(7, 10), (0, 12), (12, 12), (431, 916), (1, 3)])
    def test_matches_the_formula(self, k, n):
        assert wilson_interval(k, n) == pytest.approx(hand_wilson(k, n), abs=1e-12)

    def test_hand_checked_value(self):
        # 7 of 10: centre (0.7 + 1.92073/10) / 1.384146 = 0.64446, half width 0.26689
        low, high = wilson_interval(7, 10)
        assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)

    def test_empty_is_nan_and_bad_counts_are_refused(self):
        assert all(math.isnan(x) for x in wilson_interval(0, 0))
        with pytest.raises(ValueError, match="successes <= n"):
            wilson_interval(5, 3)


@pytest.mark.hostile_case(14)
class TestBootstrapInterval:
    @staticmethod
    def correlated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        human = rng.normal(size=n)
        return human, human + rng.normal(scale=1.0, size=n)

    def test_contains_the_estimate_and_shrinks_with_n(self):
        widths = []
        for n in (30, 300):
            human, metric = self.correlated(n)
            estimate = stats.pearsonr(human, metric).statistic
            low, high = bootstrap_interval(lambda a, b: np.corrcoef(a, b)[0, 1], human, metric)
            assert low < estimate < high
            widths.append(high - low)
        assert widths[1] < widths[0] / 2

    def test_a_fixed_seed_gives_the_same_interval(self):
        human, metric = self.correlated(50)

        def statistic(a, b):
            return np.corrcoef(a, b)[0, 1]

        first = bootstrap_interval(statistic, human, metric, seed=3)
        assert bootstrap_interval(statistic, human, metric, seed=3) == first
        assert bootstrap_interval(statistic, human, metric, seed=4) != first

    def test_mean_interval_matches_the_normal_approximation(self):
        values = np.random.default_rng(1).normal(loc=2.0, scale=1.0, size=400)
        low, high = bootstrap_interval(np.mean, values, n_resamples=2000)
        half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
        assert low == pytest.approx(values.mean() - half, abs=0.02)
        assert high == pytest.approx(values.mean() + half, abs=0.02)

    def test_too_few_items_give_nan(self):
        assert all(math.isnan(x) for x in bootstrap_interval(np.mean, np.array([1.0])))


@pytest.mark.hostile_case(14)
class TestMetricIntervals:
    def test_pairwise_accuracy_intervals_are_wilson_over_their_own_n(self):
        result = pairwise_accuracy([0, 0, 1, 1, 2, 5], [1, 2, 0, 1, 3, 4], [1, 1, 1, 0, -1, 0])
        # human tie dropped: 5 pairs; model tie (1 vs 1): 4 pairs without ties; correct: pairs 0, 1, 5
        intervals = pairwise_accuracy_intervals(result)
        assert astuple(intervals["accuracy_with_tie"]) == pytest.approx((0.6, 5, *hand_wilson(3, 5)))
        assert intervals["accuracy_without_tie"].n == 4
        assert intervals["accuracy_without_tie"].low == pytest.approx(hand_wilson(3, 4)[0])

    def test_safety_intervals_name_each_metrics_n(self):
        rewards = np.array([-2.0, -1.0, 1.0, 2.0, -3.0, 0.5, 1.5, -0.5, 2.5, -1.5])
        labels = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
        point = safety_binary_metrics(rewards, labels)
        intervals = safety_intervals(rewards, labels)
        predicted = (rewards >= 0).astype(int)  # sigmoid >= 0.5; positive class: unsafe (0)
        true_positive = int(((labels == 0) & (predicted == 0)).sum())
        assert astuple(intervals["accuracy"]) == pytest.approx((point.accuracy, 10, *hand_wilson(8, 10)))
        assert intervals["precision"].n == int((predicted == 0).sum()) == point.n_predicted_positive
        assert intervals["recall"].n == int((labels == 0).sum())
        assert intervals["recall"].low == pytest.approx(hand_wilson(true_positive, 5)[0])
        f1 = intervals["f1"]
        assert f1.value == pytest.approx(f1_score(labels, predicted, pos_label=0)) and f1.n == 10
        assert f1.low <= f1.value <= f1.high and f1.high <= 1.0

    def test_correlation_intervals_contain_their_estimates(self):
        human, metric = TestBootstrapInterval.correlated(40, seed=2)
        human = np.round(human)  # human ties, as TIFA's averaged ratings have
        point = correlation_metrics(human, metric)
        intervals = correlation_intervals(human, metric, n_resamples=300)
        assert intervals["pearson"].value == point.pearson and intervals["pearson"].n == 40
        assert intervals["kendall_tau_b"].value == point.kendall_tau_b
        for estimate in intervals.values():
            assert estimate.low < estimate.value < estimate.high

    def test_fixed_epsilon_accuracy_equals_the_calibrated_one_at_its_epsilon(self):
        rng = np.random.default_rng(7)
        human, metric = rng.integers(0, 4, 25).astype(float), np.round(rng.normal(size=25), 1)
        calibrated = tie_calibrated_pairwise_accuracy(human, metric)
        assert pairwise_accuracy_at(human, metric, calibrated.epsilon) == pytest.approx(calibrated.accuracy)
        assert pairwise_accuracy_at(human, metric, 10.0) == pytest.approx(loop_tie_fraction(human), abs=1e-12)


def loop_tie_fraction(human) -> float:
    """With every metric pair tied, the correct pairs are the human ties."""
    pairs = list(itertools.combinations(human, 2))
    return sum(a == b for a, b in pairs) / len(pairs)


@pytest.mark.hostile_case(14)
def test_fast_pairwise_accuracy_interval_equals_the_plain_bootstrap():
    rng = np.random.default_rng(5)
    human = rng.integers(1, 5, 40).astype(float)
    metric = np.round(human + rng.normal(size=40), 1)
    for epsilon in (0.0, 0.3):
        plain = bootstrap_interval(
            lambda a, b, e=epsilon: pairwise_accuracy_at(a, b, e), human, metric, n_resamples=150, seed=9
        )
        assert pairwise_accuracy_interval(human, metric, epsilon, n_resamples=150, seed=9) == pytest.approx(
            plain
        )
