"""Evaluation metrics on arrays, and percentile bootstrap intervals over records.

Shapes: binary and multi-label metrics take `y_true` 0/1 and `y_score` of the same shape,
`(records,)` or `(records, classes)`; multi-class metrics take integer labels `(records,)` and
class probabilities `(records, classes)`; regression metrics take `(records,)` or
`(records, targets)`.

Per-class metrics return a `ClassMetric`: the per-class values, the macro mean over the classes
where the metric is defined, and the indices of the classes skipped. Where a metric is defined is
that of the official PhysioNet/CinC Challenge 2021 evaluation (`evaluate_model.py`), which is also
scikit-learn's: AUROC needs positive and negative labels; AUPRC needs a positive label (a class
where every record is positive has AUPRC 1.0); F1 = 2 TP / (2 TP + FP + FN) needs a positive label
or a positive decision (a class without positives but with false alarms has F1 0, not skipped).

Bootstrap intervals resample records with replacement. A resample is represented by integer counts
`(replicates, records)`, so each statistic below (`weighted_*`, and
`ecgscale.evaluate.challenge2021.challenge_statistic`) evaluates a whole batch of resamples with
array operations instead of a Python loop over replicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from ecgscale.errors import UserError

Statistic = Callable[..., np.ndarray]
"""`statistic(*arrays, weights)` with weights `(replicates, records)` -> `(replicates,)`."""

_BOOTSTRAP_BATCH = 64


@dataclass(frozen=True, eq=False)
class ClassMetric:
    """A per-class metric with its macro mean.

    Attributes:
        macro: mean over the classes where the metric is defined (NaN when there is none).
        per_class: `(classes,)` float64, NaN for skipped classes.
        skipped: indices of the classes where the metric is undefined (module docstring).
    """

    macro: float
    per_class: np.ndarray
    skipped: tuple[int, ...]


def _binary_pair(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as `(records, classes)`; labels must be 0/1 and shapes must match."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim not in (1, 2) or y_true.shape[0] == 0:
        raise UserError(
            f"labels {y_true.shape} and scores {y_score.shape}: expected the same non-empty shape "
            "(records,) or (records, classes)"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise UserError("labels: expected 0/1 values for a binary or multi-label metric")
    if not np.isfinite(y_score).all():
        raise UserError("scores: expected finite values")
    if y_true.ndim == 1:
        return y_true[:, None].astype(bool), y_score[:, None]
    return y_true.astype(bool), y_score


def _single_valued(y: np.ndarray) -> np.ndarray:
    """`(classes,)` bool: the class has only positives or only negatives (AUROC undefined)."""
    return y.all(axis=0) | ~y.any(axis=0)


def _no_positive(y: np.ndarray) -> np.ndarray:
    """`(classes,)` bool: the class has no positive label (AUPRC undefined)."""
    return ~y.any(axis=0)


def _per_class(
    fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, s: np.ndarray, skip: np.ndarray
) -> ClassMetric:
    values = np.full(y.shape[1], np.nan)
    for j in np.flatnonzero(~skip):
        values[j] = fn(y[:, j], s[:, j])
    macro = float(np.mean(values[~skip])) if (~skip).any() else float("nan")
    return ClassMetric(macro, values, tuple(int(j) for j in np.flatnonzero(skip)))


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> ClassMetric:
    """Area under the ROC curve per class (scikit-learn); single-valued classes are skipped."""
    y, s = _binary_pair(y_true, y_score)
    return _per_class(roc_auc_score, y, s, _single_valued(y))


def auprc(y_true: np.ndarray, y_score: np.ndarray) -> ClassMetric:
    """Average precision (area under the precision-recall step curve, scikit-learn) per class.

    Classes without a positive label are skipped; a class with only positives has AUPRC 1.0 (as in
    the Challenge 2021 evaluation).
    """
    y, s = _binary_pair(y_true, y_score)
    return _per_class(average_precision_score, y, s, _no_positive(y))


def tune_thresholds(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds `(classes,)` that maximise F1 on (validation) data.

    A record is predicted positive when `score >= threshold`. The threshold lies halfway between the
    lowest score predicted positive at the F1 optimum and the next lower distinct score (-inf when
    every record is predicted positive), so that it generalises to unseen scores. A class with no
    positive gets +inf (never predicted). Ties in F1 go to the higher threshold.
    """
    y, s = _binary_pair(y_true, y_score)
    thresholds = np.full(y.shape[1], np.inf)
    for j in np.flatnonzero(y.any(axis=0)):
        order = np.argsort(-s[:, j], kind="stable")
        scores, hits = s[order, j], y[order, j]
        tp = np.cumsum(hits)
        ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])  # last index of each tie
        f1 = 2 * tp[ends] / (ends + 1 + tp[-1])  # 2TP / (TP + FP + P); TP + FP = index + 1
        best = ends[int(np.argmax(f1))]
        lower = scores[best + 1] if best + 1 < len(scores) else -np.inf
        thresholds[j] = 0.5 * (scores[best] + lower) if np.isfinite(lower) else -np.inf
    return thresholds


def f1_at_thresholds(
    y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray
) -> ClassMetric:
    """F1 = 2 TP / (2 TP + FP + FN) per class of `score >= threshold` decisions; skipped only
    where a class has neither a positive label nor a positive decision (Challenge 2021)."""
    y, s = _binary_pair(y_true, y_score)
    thresholds = np.broadcast_to(np.asarray(thresholds, np.float64), (y.shape[1],))
    weights = np.ones((1, y.shape[0]))
    per_class = _weighted_f1_per_class(y, s >= thresholds, weights)[0]
    skip = np.isnan(per_class)
    macro = float(np.mean(per_class[~skip])) if (~skip).any() else float("nan")
    return ClassMetric(macro, per_class, tuple(int(j) for j in np.flatnonzero(skip)))


def _is_multiclass(y_true: np.ndarray, y_prob: np.ndarray) -> bool:
    return np.ndim(y_true) == 1 and np.ndim(y_prob) == 2


def _multiclass_pair(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise UserError(
            f"labels {labels.shape} and scores {probs.shape}: expected (records,) class indices "
            "and (records, classes) scores"
        )
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError("labels: expected a non-empty array of integer class indices")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise UserError(f"labels: expected class indices in [0, {probs.shape[1] - 1}]")
    return labels, probs


def _check_probabilities(p: np.ndarray) -> None:
    if not np.all((p >= 0) & (p <= 1)):
        raise UserError("probabilities: expected values in [0, 1]")


def _brier_per_record(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """`(records,)` squared error: summed over classes (multi-class), mean over labels otherwise."""
    if _is_multiclass(y_true, y_prob):
        labels, probs = _multiclass_pair(y_true, y_prob)
        _check_probabilities(probs)
        onehot = np.eye(probs.shape[1])[labels]
        return ((probs - onehot) ** 2).sum(axis=1)
    y, p = _binary_pair(y_true, y_prob)
    _check_probabilities(p)
    return ((p - y) ** 2).mean(axis=1)


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared error of probabilities.

    Binary/multi-label (`y_true` 0/1 of `y_prob`'s shape): mean over records and labels, which is
    the macro mean of the per-label Brier scores. Multi-class (integer `y_true (records,)`,
    `y_prob (records, classes)`): Brier's original definition, the squared distance to the one-hot
    label summed over classes, averaged over records (range 0 to 2).
    """
    return float(_brier_per_record(y_true, y_prob).mean())


def _calibration_pairs(
    y_true: np.ndarray, y_prob: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities and float64 outcomes that ECE bins, both `(records, k)`: per label for
    binary/multi-label input, the top-label confidence and its correctness (k = 1) for
    multi-class."""
    if n_bins < 1:
        raise UserError(f"n_bins={n_bins}: expected a positive number of bins")
    if _is_multiclass(y_true, y_prob):
        labels, probs = _multiclass_pair(y_true, y_prob)
        _check_probabilities(probs)
        correct = probs.argmax(axis=1) == labels
        return probs.max(axis=1)[:, None], correct[:, None].astype(np.float64)
    y, p = _binary_pair(y_true, y_prob)
    _check_probabilities(p)
    return p, y.astype(np.float64)


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with `n_bins` equal-width probability bins on [0, 1].

    Bin b holds probabilities in `[b/n_bins, (b+1)/n_bins)` (the last bin includes 1).
    ECE = sum over bins of (records in bin / records) * |mean outcome - mean probability|.
    Binary/multi-label: computed per label on the probability of the positive class, then averaged
    over labels. Multi-class: the top-label ECE of Guo et al. (2017): the confidence (largest
    probability) against whether the arg-max class is correct.
    """
    p, outcome = _calibration_pairs(y_true, y_prob, n_bins)
    n, k = p.shape
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1) + n_bins * np.arange(k)
    gap = np.bincount(bins.ravel(), (outcome - p).ravel(), minlength=n_bins * k)
    return float(np.abs(gap).reshape(k, n_bins).sum(axis=1).mean() / n)


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Multi-class accuracy: the fraction of records whose arg-max score is the label."""
    labels, scores = _multiclass_pair(labels, scores)
    return float(np.mean(scores.argmax(axis=1) == labels))


def _regression_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2) or y_true.shape[0] < 2:
        raise UserError(
            f"targets {y_true.shape} and predictions {y_pred.shape}: expected the same shape "
            "(records,) or (records, targets) with at least 2 records"
        )
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise UserError("regression targets and predictions: expected finite values")
    return y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error in the target's units, averaged over targets (scikit-learn)."""
    return float(mean_absolute_error(*_regression_pair(y_true, y_pred)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, averaged over targets (scikit-learn)."""
    return float(r2_score(*_regression_pair(y_true, y_pred)))


# ----------------------------------------------------------------------------------------------
# Statistics under record weights `(replicates, records)`, vectorised over replicates.


def _counts_dtype(w: np.ndarray) -> type:
    """float32 for integer weights whose sums stay exact in float32 (bootstrap counts), else
    float64: the ranking sums below are then exact integers and run twice as fast."""
    exact = w.size == 0 or (float(w.sum(axis=1).max()) < 2**23 and np.array_equal(w, np.rint(w)))
    return np.float32 if exact else np.float64


def _ranking_from_sums(
    wp: np.ndarray, fp_ge: np.ndarray, fp_gt: np.ndarray, tp_ge: np.ndarray, n_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AUPRC `(B,)` of one class from, per positive record i `(B, P)`: its weight
    `wp`, the weighted negatives scoring `>= s_i` and `> s_i`, the weighted positives `>= s_i`;
    `n_neg` `(B,)` is the weighted number of negatives."""
    n_pos = wp.sum(axis=1, dtype=np.float64)
    # negatives above a positive, ties counting one half
    above = 0.5 * (wp * (fp_ge + fp_gt)).sum(axis=1, dtype=np.float64)
    tp = tp_ge.astype(np.float64)
    precision = np.divide(tp, tp + fp_ge, out=np.zeros_like(tp), where=tp > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        au = np.where((n_pos > 0) & (n_neg > 0), 1.0 - above / (n_pos * n_neg), np.nan)
        ap = np.where(n_pos > 0, (wp * precision).sum(axis=1) / n_pos, np.nan)
    return au, ap


def _ranking_sorted(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, n_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One class by cumulative sums over its records in descending score order: about three
    passes over `(B, records)`, whatever the number of positives."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    s_pos, s_neg = s[pos], s[neg]
    order_neg = np.argsort(-s_neg, kind="stable")
    cum_neg = np.zeros((w.shape[0], neg.size + 1), w.dtype)
    np.cumsum(w[:, neg[order_neg]], axis=1, out=cum_neg[:, 1:])
    desc_neg = -s_neg[order_neg]
    order_pos = np.argsort(-s_pos, kind="stable")
    desc_pos = -s_pos[order_pos]
    wp = w[:, pos[order_pos]]
    fp_ge = cum_neg[:, np.searchsorted(desc_neg, desc_pos, side="right")]
    fp_gt = cum_neg[:, np.searchsorted(desc_neg, desc_pos, side="left")]
    tp_ge = np.cumsum(wp, axis=1)[:, np.searchsorted(desc_pos, desc_pos, side="right") - 1]
    return _ranking_from_sums(wp, fp_ge, fp_gt, tp_ge, n_neg)


def _ranking_products(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, classes: np.ndarray, n_neg: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Classes with few positives by one matrix product over all records: for each positive i,
    the columns `[s >= s_i] & negative`, `[s >= s_i] & positive` (and `[s > s_i] & negative`
    where a negative ties a positive), so the cost grows with the positives, at BLAS speed."""
    blocks, layout = [], []
    for j in classes:
        pos = np.flatnonzero(y[:, j])
        s_pos = s[pos, j]
        ge = s[:, j, None] >= s_pos[None, :]
        neg = ~y[:, j, None]
        ties = bool(np.isin(s_pos, s[~y[:, j], j]).any())
        parts = [ge & neg, ge & ~neg] + ([(s[:, j, None] > s_pos[None, :]) & neg] if ties else [])
        blocks.append(np.concatenate(parts, axis=1))
        layout.append((pos, ties))
    sums = w @ np.concatenate(blocks, axis=1).astype(w.dtype)
    out, at = [], 0
    for (pos, ties), j in zip(layout, classes, strict=True):
        p = pos.size
        fp_ge, tp_ge = sums[:, at : at + p], sums[:, at + p : at + 2 * p]
        fp_gt = sums[:, at + 2 * p : at + 3 * p] if ties else fp_ge
        at += (3 if ties else 2) * p
        out.append(_ranking_from_sums(w[:, pos], fp_ge, fp_gt, tp_ge, n_neg[:, j]))
    return out


_FEW_POSITIVES = 100
"""Classes with up to this many positives use `_ranking_products`; others `_ranking_sorted`."""


def weighted_ranking(
    y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision per class `(replicates, classes)` under record weights.

    The definitions are scikit-learn's (`roc_auc_score`, ties counting one half;
    `average_precision_score`), so with integer counts as weights each value equals the metric
    of the resampled records. NaN where a replicate has no weighted positive of the class (both),
    or no weighted negative (AUROC; AUPRC is then 1.0). Vectorised over replicates: for each
    class, either cumulative sums in score order or, for a class with few positives, one matrix
    product shared with the other such classes.
    """
    y, s = _binary_pair(y_true, y_score)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    w = w.astype(_counts_dtype(w), copy=False)
    n_pos_all = w @ y.astype(w.dtype)
    n_neg = (w.sum(axis=1, dtype=np.float64)[:, None] - n_pos_all).astype(np.float64)
    au = np.full((w.shape[0], y.shape[1]), np.nan)
    ap = np.full_like(au, np.nan)
    positives = y.sum(axis=0)
    few = np.flatnonzero((positives > 0) & (positives <= _FEW_POSITIVES))
    # columns per matrix product: at most ~32 MiB of indicator matrix
    per_product = max(1, 2**23 // max(1, 3 * _FEW_POSITIVES * y.shape[0]))
    for start in range(0, few.size, per_product):
        group = few[start : start + per_product]
        for j, (a, p) in zip(group, _ranking_products(y, s, w, group, n_neg), strict=True):
            au[:, j], ap[:, j] = a, p
    for j in np.flatnonzero(positives > _FEW_POSITIVES):
        au[:, j], ap[:, j] = _ranking_sorted(y[:, j], s[:, j], w, n_neg[:, j])
    return au, ap


def class_macro(values: np.ndarray) -> np.ndarray:
    """Mean over classes `(replicates,)` of `(replicates, classes)` values, over the classes
    defined (not NaN) in each replicate; NaN for a replicate with none."""
    defined = np.isfinite(values)
    count = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro AUROC `(replicates,)` under record weights (ties count one half, as scikit-learn)."""
    return class_macro(weighted_ranking(y_true, y_score, weights)[0])


def weighted_auprc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro average precision `(replicates,)` under record weights (scikit-learn's definition; 1.0
    for a class that is all positive in a replicate, as `auprc`)."""
    return class_macro(weighted_ranking(y_true, y_score, weights)[1])


def _weighted_f1_per_class(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`(replicates, classes)` F1 = 2 TP / (2 TP + FP + FN) of bool decisions; NaN where a class
    has neither a weighted positive label nor a weighted positive decision."""
    yf, pf = y.astype(np.float64), pred.astype(np.float64)
    tp = weights @ (yf * pf)
    either = weights @ yf + weights @ pf  # 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(either > 0, 2 * tp / either, np.nan)


def weighted_f1_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """F1 per class `(replicates, classes)` of 0/1 decisions `y_pred` under record weights; NaN
    where a class has neither a weighted positive label nor a weighted positive decision."""
    y, pred = _binary_pair(y_true, y_pred)
    return _weighted_f1_per_class(y, pred > 0.5, np.atleast_2d(np.asarray(weights, np.float64)))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro F1 `(replicates,)` of 0/1 decisions `y_pred` (for example `score >= threshold`)."""
    return class_macro(weighted_f1_per_class(y_true, y_pred, weights))


def _weighted_mean(per_record: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = np.atleast_2d(np.asarray(weights, np.float64))
    return (w @ per_record) / w.sum(axis=1)


def weighted_brier(y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`brier_score` `(replicates,)` under record weights."""
    return _weighted_mean(_brier_per_record(y_true, y_prob), weights)


def weighted_ece(
    y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray, n_bins: int = 15
) -> np.ndarray:
    """`expected_calibration_error` `(replicates,)` under record weights (same bins and
    binary/multi-label/multi-class definitions)."""
    p, outcome = _calibration_pairs(y_true, y_prob, n_bins)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    n, k = p.shape
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    gap = outcome - p
    total = np.zeros(w.shape[0])
    step = max(1, 2**22 // (n * n_bins))  # labels per product: at most ~32 MiB of gaps by bin
    for start in range(0, k, step):
        part = slice(start, min(k, start + step))
        m = part.stop - part.start
        by_bin = np.zeros((n, m * n_bins))
        by_bin[np.arange(n)[:, None], bins[:, part] + n_bins * np.arange(m)] = gap[:, part]
        total += np.abs(w @ by_bin).sum(axis=1)
    return total / (k * w.sum(axis=1))


def weighted_accuracy(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multi-class `accuracy` `(replicates,)` under record weights."""
    labels, scores = _multiclass_pair(labels, scores)
    return _weighted_mean((scores.argmax(axis=1) == labels).astype(np.float64), weights)


def weighted_mae(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`mae` `(replicates,)` under record weights."""
    y, p = _regression_pair(y_true, y_pred)
    return _weighted_mean(np.abs(y - p).mean(axis=1), weights)


def weighted_mse(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean squared error `(replicates,)` under record weights, averaged over targets."""
    y, p = _regression_pair(y_true, y_pred)
    return _weighted_mean(((y - p) ** 2).mean(axis=1), weights)


def weighted_r2(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`r2` `(replicates,)` under record weights; NaN where a target is constant in a resample."""
    y, p = _regression_pair(y_true, y_pred)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    total = w.sum(axis=1, keepdims=True)
    mean = (w @ y) / total  # (B, targets)
    residual = w @ (y - p) ** 2
    spread = w @ y**2 - total * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(spread > 1e-12 * (w @ y**2), residual / spread, np.nan)
    return 1.0 - ratio.mean(axis=1)


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval.

    Attributes:
        estimate: the statistic on the data as given.
        low, high: the `(1 - level) / 2` and `(1 + level) / 2` percentiles over resamples.
        level: coverage, e.g. 0.95.
        n_boot: resamples drawn; n_valid: those where the statistic was defined (not NaN).
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int


def bootstrap_counts(n_records: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_boot, n_records)` float64 counts of each record in resamples drawn with replacement."""
    draws = rng.integers(0, n_records, size=(n_boot, n_records))
    flat = (draws + n_records * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_records)
    return counts.reshape(n_boot, n_records).astype(np.float64)


def bootstrap_ci(
    statistic: Statistic,
    *arrays: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of `statistic(*arrays, weights)` over records.

    `arrays` share their first axis (records). Resamples are drawn in batches from
    `numpy.random.default_rng(seed)`, so the interval depends only on the data, `n_boot` and `seed`.
    Resamples where the statistic is undefined (NaN, e.g. no positive left) are dropped and counted
    in `n_valid`.

    Example: `bootstrap_ci(weighted_auroc, y_true, y_score, seed=0)`.
    """
    if not 0 < level < 1:
        raise UserError(f"level={level}: expected a coverage strictly between 0 and 1")
    if n_boot < 1:
        raise UserError(f"n_boot={n_boot}: expected at least one resample")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise UserError(
            f"bootstrap arrays: expected {n} records in each, got {[len(a) for a in arrays]}"
        )
    estimate = float(statistic(*arrays, np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            statistic(*arrays, bootstrap_counts(n, min(_BOOTSTRAP_BATCH, n_boot - start), rng))
            for start in range(0, n_boot, _BOOTSTRAP_BATCH)
        ]
    )
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return Interval(estimate, float("nan"), float("nan"), level, n_boot, 0)
    low, high = np.quantile(valid, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, n_boot, int(valid.size))


# ----------------------------------------------------------------------------------------------
# Several statistics on one set of resamples

MIN_DEFINED = 0.9
"""Intervals that rest on fewer than this fraction of the resamples are flagged as unreliable
(typically a class with a handful of test positives, absent from many resamples)."""


@dataclass(frozen=True)
class Bootstrap:
    """Settings of percentile bootstrap intervals over test records.

    Attributes:
        n_boot: resamples of the test records, drawn with replacement.
        level: coverage of the interval, e.g. 0.95 for the 2.5 and 97.5 percentiles.
        seed: seed of `numpy.random.default_rng`; the intervals depend only on the data and these.
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.level < 1:
            raise UserError(f"level={self.level}: expected a coverage strictly between 0 and 1")
        if self.n_boot < 1:
            raise UserError(f"n_boot={self.n_boot}: expected at least one resample")


DEFAULT_BOOTSTRAP = Bootstrap()


@dataclass(frozen=True, eq=False)
class Intervals:
    """Percentile intervals of one statistic, of shape `()` (task-level) or `(classes,)`.

    Attributes:
        low, high: the `(1 - level) / 2` and `(1 + level) / 2` percentiles over the resamples
            where the statistic was defined; NaN where it never was.
        defined: the fraction of resamples where it was defined (not NaN).
    """

    low: np.ndarray
    high: np.ndarray
    defined: np.ndarray


def percentile_intervals(values: np.ndarray, level: float) -> Intervals:
    """Intervals of `(replicates, ...)` values over their first axis, ignoring NaN (numpy's
    default linear interpolation between order statistics)."""
    values = np.asarray(values, np.float64)
    defined = np.isfinite(values)
    count = defined.sum(axis=0)
    ordered = np.sort(np.where(defined, values, np.inf), axis=0)  # undefined sorted last
    bounds = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        position = q * np.maximum(count - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        lo = np.take_along_axis(ordered, below[None, ...], axis=0)[0]
        hi = np.take_along_axis(ordered, above[None, ...], axis=0)[0]
        with np.errstate(invalid="ignore"):
            value = np.where(above > below, lo + (position - below) * (hi - lo), lo)
        bounds.append(np.where(count > 0, value, np.nan))
    return Intervals(bounds[0], bounds[1], count / max(values.shape[0], 1))


def bootstrap_intervals(
    evaluate: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    n_records: int,
    settings: Bootstrap = DEFAULT_BOOTSTRAP,
) -> dict[str, Intervals]:
    """Percentile intervals of several statistics evaluated on the same resamples.

    `evaluate(counts)` takes `(replicates, n_records)` counts of each record in a batch of
    resamples (see `bootstrap_counts`) and returns named arrays `(replicates,)` or
    `(replicates, classes)`, NaN where a statistic is undefined in a resample. The resamples are
    drawn once from `numpy.random.default_rng(settings.seed)`, in batches of at most ~4M counts,
    so every statistic sees the same resamples and the result depends only on the data and the
    settings.
    """
    if n_records < 1:
        raise UserError("bootstrap: expected at least one record")
    rng = np.random.default_rng(settings.seed)
    rows = max(1, min(settings.n_boot, 2**22 // n_records))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, settings.n_boot, rows):
        counts = bootstrap_counts(n_records, min(rows, settings.n_boot - start), rng)
        for name, value in evaluate(counts).items():
            parts.setdefault(name, []).append(np.asarray(value, np.float64))
    return {
        name: percentile_intervals(np.concatenate(values), settings.level)
        for name, values in parts.items()
    }
