"""Metrics against scikit-learn and hand values; bootstrap statistics and intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from ecgscale.errors import UserError
from ecgscale.evaluate import metrics as M


@pytest.fixture(scope="module")
def multilabel() -> tuple[np.ndarray, np.ndarray]:
    """400 records, 4 labels: three informative (with tied scores), the last never positive."""
    rng = np.random.default_rng(0)
    y = (rng.random((400, 4)) < [0.1, 0.3, 0.5, 0.0]).astype(int)
    score = np.round(rng.normal(size=y.shape) + 1.5 * y, 1)
    return y, 1 / (1 + np.exp(-score))


def test_auroc_auprc_match_sklearn_and_report_skipped(multilabel: tuple) -> None:
    y, p = multilabel
    for metric, reference in ((M.auroc, roc_auc_score), (M.auprc, average_precision_score)):
        result = metric(y, p)
        expected = [reference(y[:, j], p[:, j]) for j in range(3)]
        np.testing.assert_allclose(result.per_class[:3], expected, rtol=1e-12)
        assert np.isnan(result.per_class[3]) and result.skipped == (3,)
        assert result.macro == pytest.approx(np.mean(expected), rel=1e-12)
    single = M.auroc(y[:, 1], p[:, 1])
    assert single.per_class.shape == (1,) and single.skipped == ()


def test_tuned_threshold_reaches_best_f1(multilabel: tuple) -> None:
    y, p = multilabel
    thresholds = M.tune_thresholds(y, p)
    assert thresholds[3] == np.inf  # no positive: never predicted
    f1 = M.f1_at_thresholds(y, p, thresholds)
    for j in range(3):
        best = max(f1_score(y[:, j], p[:, j] >= t) for t in np.unique(p[:, j]))
        assert f1.per_class[j] == pytest.approx(best, rel=1e-12)
        assert f1.per_class[j] == pytest.approx(f1_score(y[:, j], p[:, j] >= thresholds[j]))
        below = p[:, j][p[:, j] < thresholds[j]]
        assert below.size == 0 or thresholds[j] > below.max()  # halfway, not on a score
    assert f1.skipped == (3,)


def test_classes_are_kept_or_skipped_as_challenge_2021_defines_them() -> None:
    """AUROC needs both label values; AUPRC a positive (all positive: 1.0); F1 a positive label or
    a positive decision (false alarms on a class without positives: 0). Bootstrap statistics at
    unit weights agree."""
    y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    p = np.array(
        [[0.9, 0.8, 0.7, 0.1], [0.2, 0.6, 0.2, 0.1], [0.4, 0.3, 0.1, 0.2], [0.6, 0.1, 0.3, 0.3]]
    )
    au, ap = M.auroc(y, p), M.auprc(y, p)
    assert au.skipped == (0, 2, 3) and au.macro == pytest.approx(0.75)
    assert ap.skipped == (2, 3) and ap.per_class[0] == 1.0
    assert ap.macro == pytest.approx((1.0 + average_precision_score(y[:, 1], p[:, 1])) / 2)
    f1 = M.f1_at_thresholds(y, p, np.array([0.5, 0.5, 0.5, 0.5]))
    # label 0: TP 2, FN 2 -> 2/3; label 1: TP 1, FP 1, FN 1 -> 1/2; label 2: one false alarm -> 0;
    # label 3: no positive label or decision -> skipped
    np.testing.assert_allclose(f1.per_class[:3], [2 / 3, 1 / 2, 0.0])
    assert f1.skipped == (3,) and f1.macro == pytest.approx((2 / 3 + 1 / 2) / 3)
    ones = np.ones((1, 4))
    assert M.weighted_auroc(y, p, ones)[0] == pytest.approx(au.macro)
    assert M.weighted_auprc(y, p, ones)[0] == pytest.approx(ap.macro)
    assert M.weighted_f1(y, p >= 0.5, ones)[0] == pytest.approx(f1.macro)
    # a resample of the positives of label 1 only: all positive, AUPRC 1.0, AUROC skipped
    only = np.array([[1.0, 0.0, 1.0, 0.0]])
    assert M.weighted_auprc(y[:, 1], p[:, 1], only)[0] == 1.0
    assert np.isnan(M.weighted_auroc(y[:, 1], p[:, 1], only)[0])


def test_brier_matches_sklearn_and_multiclass_definition() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((50, 3)) < 0.4).astype(int)
    p = rng.random((50, 3))
    per_label = [brier_score_loss(y[:, j], p[:, j]) for j in range(3)]
    assert M.brier_score(y, p) == pytest.approx(np.mean(per_label), rel=1e-12)
    # Multi-class: records (label 0, probs .7 .2 .1) and (label 2, .5 .5 0):
    # (.3^2 + .2^2 + .1^2) = 0.14 and (.5^2 + .5^2 + 1^2) = 1.5, mean 0.82.
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert M.brier_score(np.array([0, 2]), probs) == pytest.approx(0.82)


def test_ece_hand_values() -> None:
    """Two bins (n_bins=2). Probabilities .2 .3 .8 .9 with outcomes 0 1 1 1.

    bin [0, .5): mean p .25, mean outcome .5, gap .25, weight 2/4; bin [.5, 1]: mean p .85,
    outcome 1, gap .15, weight 2/4. ECE = .5 * .25 + .5 * .15 = 0.2.
    """
    p = np.array([0.2, 0.3, 0.8, 0.9])
    y = np.array([0, 1, 1, 1])
    assert M.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.2)
    # a probability of exactly 1 falls in the last bin; one perfectly confident record: ECE 0.
    assert M.expected_calibration_error(np.array([1]), np.array([1.0]), n_bins=2) == 0.0
    # Multi-label: the mean of per-label ECEs (second label: same data reversed).
    both = M.expected_calibration_error(np.c_[y, 1 - y], np.c_[p, 1 - p], n_bins=2)
    assert both == pytest.approx(0.2)
    # Multi-class top-label: confidences .6 (correct) and .9 (wrong), one bin:
    # |mean correct .5 - mean confidence .75| = .25.
    probs = np.array([[0.6, 0.4], [0.9, 0.1]])
    ece = M.expected_calibration_error(np.array([0, 1]), probs, n_bins=1)
    assert ece == pytest.approx(0.25)


def test_ece_small_for_calibrated_probabilities() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert M.expected_calibration_error(y, p) < 0.01
    assert M.expected_calibration_error(y, p**3) > 0.1


def test_accuracy_and_regression_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=60)
    scores = rng.random((60, 4))
    assert M.accuracy(labels, scores) == accuracy_score(labels, scores.argmax(axis=1))
    y = rng.normal(size=(60, 2))
    pred = y + rng.normal(scale=0.5, size=y.shape)
    assert M.mae(y, pred) == pytest.approx(mean_absolute_error(y, pred))
    assert M.r2(y, pred) == pytest.approx(r2_score(y, pred))
    assert M.r2(y[:, 0], pred[:, 0]) == pytest.approx(r2_score(y[:, 0], pred[:, 0]))


def test_weighted_statistics_equal_metrics_of_repeated_records(multilabel: tuple) -> None:
    """Integer weights are resamples: each statistic must equal the metric on repeated rows."""
    y, p = multilabel
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 3, size=(3, len(y))).astype(float)
    labels, probs = rng.integers(0, 3, size=len(y)), rng.dirichlet(np.ones(3), size=len(y))
    target, pred = rng.normal(size=len(y)), rng.normal(size=len(y))
    decisions = (p >= 0.5).astype(int)
    stats = {
        "auroc": M.weighted_auroc(y, p, counts),
        "auprc": M.weighted_auprc(y, p, counts),
        "f1": M.weighted_f1(y, decisions, counts),
        "brier": M.weighted_brier(y, p, counts),
        "accuracy": M.weighted_accuracy(labels, probs, counts),
        "mae": M.weighted_mae(target, pred, counts),
        "r2": M.weighted_r2(target, pred, counts),
    }
    for b in range(3):
        r = np.repeat(np.arange(len(y)), counts[b].astype(int))
        expected = {
            "auroc": np.mean([roc_auc_score(y[r, j], p[r, j]) for j in range(3)]),
            "auprc": np.mean([average_precision_score(y[r, j], p[r, j]) for j in range(3)]),
            # F1 keeps the never-positive label 3 with its false alarms (F1 0), as Challenge 2021
            "f1": np.nanmean(
                [f1_score(y[r, j], decisions[r, j], zero_division=np.nan) for j in range(4)]
            ),
            "brier": M.brier_score(y[r], p[r]),
            "accuracy": accuracy_score(labels[r], probs[r].argmax(axis=1)),
            "mae": mean_absolute_error(target[r], pred[r]),
            "r2": r2_score(target[r], pred[r]),
        }
        for name, value in expected.items():
            assert stats[name][b] == pytest.approx(value, rel=1e-10), name


def test_weighted_auroc_skips_classes_without_positives_in_a_resample() -> None:
    y = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    s = np.array([[0.9, 0.2], [0.1, 0.5], [0.8, 0.3], [0.3, 0.6]])
    counts = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    # resample 1: class 1 keeps record 0 (positive, .2) and record 1 (negative, .5): AUROC 0;
    # class 0: perfect 1. Mean 0.5. Resample 2 has a single record: undefined.
    out = M.weighted_auroc(y, s, counts)
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


def test_bootstrap_is_seeded_and_covers_the_estimate(multilabel: tuple) -> None:
    y, p = multilabel
    a = M.bootstrap_ci(M.weighted_auroc, y, p, n_boot=300, seed=7)
    b = M.bootstrap_ci(M.weighted_auroc, y, p, n_boot=300, seed=7)
    c = M.bootstrap_ci(M.weighted_auroc, y, p, n_boot=300, seed=8)
    assert a == b and a != c
    assert a.estimate == pytest.approx(M.auroc(y, p).macro)
    assert a.low < a.estimate < a.high and a.n_valid == 300
    # a quarter of the records gives a wider interval
    small = M.bootstrap_ci(M.weighted_auroc, y[:100], p[:100], n_boot=300, seed=7)
    assert small.high - small.low > a.high - a.low


def test_bootstrap_drops_undefined_resamples() -> None:
    y = np.zeros(20, dtype=int)
    y[0] = 1  # one positive: many resamples lose it
    s = np.linspace(0, 1, 20)
    interval = M.bootstrap_ci(M.weighted_auroc, y, s, n_boot=200, seed=0)
    assert 0 < interval.n_valid < 200


def test_bad_inputs_fail_in_one_line() -> None:
    with pytest.raises(UserError, match="expected the same non-empty shape"):
        M.auroc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(UserError, match="0/1"):
        M.auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        M.brier_score(np.array([0, 1]), np.array([0.5, 1.5]))
    with pytest.raises(UserError, match="class indices"):
        M.accuracy(np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(UserError, match="at least one resample"):
        M.bootstrap_ci(M.weighted_mae, np.zeros(3), np.zeros(3), n_boot=0)
