"""Linear probes on frozen features: the test loss that scaling laws fit, and the task's metrics.

A probe takes a feature matrix `(records, dim)`, the targets and three index arrays (train,
validation, test). Features are standardised with the training mean and standard deviation. Then:

* binary / multi-label: L2-regularised logistic regression, one-vs-rest over labels;
* multi-class: L2-regularised multinomial logistic regression;
* regression (e.g. age): ridge regression on the target standardised with training statistics.

The regularisation follows scikit-learn's convention: for each C of a log grid the probe minimises
`C * sum_i loss_i + ||W||^2 / 2` (intercepts unpenalised; loss_i the record's BCE summed over
labels, cross-entropy, or half the squared error), so `C` means the same as in
`LogisticRegression(C=...)` and `Ridge(alpha=1/C)`. One C is chosen for the whole task, the one
with the lowest validation loss; the test loss and metrics of that model are reported.

Logistic fits run full-batch L-BFGS in torch over all labels at once (the objective is a sum of
independent per-label objectives), from the smallest C upwards, each fit warm-started from the
previous one; the path stops once the validation loss has not improved for `patience` grid points.
The path only ranks the C values, so it runs in float32 to a loose tolerance; the chosen fit is then
polished in float64 to a tight one.
The features are rotated into the eigenbasis of the training Gram matrix (which keeps the L2 norm)
and each weight is rescaled by the square root of its Hessian diagonal, so that L-BFGS sees a
nearly isotropic problem and needs some 20-30 gradient evaluations per C. Ridge uses the same
eigendecomposition for the whole grid in closed form.

Labels that take a single value in the training split cannot be fitted (the intercept diverges);
they get a constant prediction, the Jeffreys-prior probability `(positives + 1/2) / (records + 1)`,
and are listed in `ProbeResult.constant_labels`. Multi-class classes absent from the training split
get `1/2 / (records + classes/2)` each, and the fitted softmax shares the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ecgscale.errors import ConfigError, UserError
from ecgscale.evaluate import metrics as M

Kind = Literal["binary", "multilabel", "multiclass", "regression"]
KINDS: tuple[str, ...] = ("binary", "multilabel", "multiclass", "regression")
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 1, 11))
"""Half-decade steps from 1e-4 to 10 (inverse L2 strength on standardised features)."""


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe.

    Attributes:
        kind: the task kind.
        test_loss: mean BCE over test records and labels (binary, multi-label), mean cross-entropy
            (multi-class), or mean squared error of the target standardised with training
            statistics, averaged over targets (regression); natural logarithms.
        val_loss: the same on the validation split, for the final fit at the chosen C.
        c: the chosen inverse regularisation strength.
        c_grid: the grid searched; val_losses: the validation loss of the path fit at each C the
            path reached (it stops early, so this may be shorter than `c_grid`; empty when every
            label was single-valued in training and nothing was fitted).
        metrics: task metrics on the test split with their bootstrap intervals (see
            `linear_probe`); None where undefined.
        per_class: per-label test metrics (`auroc`, `auprc`, `f1`; None where skipped), with
            their intervals and `n_pos`, the test positives of each label (see `linear_probe`).
        skipped_classes: labels single-valued on the test split (left out of AUROC/AUPRC macros).
        constant_labels: labels (or multi-class classes) absent or single-valued in training.
        label_names: one name per label/class/target.
        thresholds: per-label decision thresholds tuned for F1 on the validation split
            (binary/multi-label only).
        n_train, n_val, n_test: records per split.
        test_outputs: test probabilities `(test, labels)` / `(test, classes)`, or predictions in
            target units `(test, targets)` for regression; not part of equality.
        outputs: the fitted probe as a function of raw features (`outputs(features)` gives what
            `test_outputs` holds for any records); not part of equality.
    """

    kind: str
    test_loss: float
    val_loss: float
    c: float
    c_grid: tuple[float, ...]
    val_losses: tuple[float, ...]
    metrics: Mapping[str, float | None]
    per_class: Mapping[str, tuple[float | None, ...]]
    skipped_classes: tuple[int, ...]
    constant_labels: tuple[int, ...]
    label_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    n_train: int
    n_val: int
    n_test: int
    test_outputs: np.ndarray = field(compare=False, repr=False)
    outputs: LinearOutputs = field(compare=False, repr=False)


@dataclass(frozen=True)
class LinearOutputs:
    """A fitted probe: raw features `(records, dim)` -> probabilities or target-unit predictions.

    Features are standardised with `mean` and `scale`, then `x @ weight + bias` gives the logits of
    the `fitted` columns (regression: the predictions); the other columns get `fill` (the
    Jeffreys prior per label; for multi-class, the share of each class absent in training).
    """

    kind: str
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    fitted: np.ndarray
    fill: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.standardised((np.asarray(features, dtype=np.float64) - self.mean) / self.scale)

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """The outputs of already standardised features."""
        logits = x @ self.weight + self.bias
        if self.kind == "regression":
            return logits
        probs = np.broadcast_to(self.fill, (len(x), len(self.fill))).copy()
        if self.kind == "multiclass":
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[:, self.fitted] = (1.0 - self.fill.sum()) * z / z.sum(axis=1, keepdims=True)
        else:
            probs[:, self.fitted] = 1.0 / (1.0 + np.exp(-logits))
        return probs


@dataclass(frozen=True)
class FractionResult:
    """One probe of a label-fraction study: `fraction` of the training labels, draw `draw`."""

    fraction: float
    draw: int
    result: ProbeResult


# ----------------------------------------------------------------------------------------------
# Input checks


def _indices(name: str, idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise UserError(f"{name} indices: expected a non-empty 1-D integer array, got {idx.shape}")
    if idx.min() < 0 or idx.max() >= n:
        raise UserError(f"{name} indices: expected values in [0, {n - 1}]")
    if np.unique(idx).size != idx.size:
        raise UserError(f"{name} indices: expected no repeated record")
    return idx


def _check_splits(n: int, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> tuple:
    splits = tuple(_indices(k, v, n) for k, v in (("train", train), ("val", val), ("test", test)))
    a, b, c = splits
    if np.intersect1d(a, b).size or np.intersect1d(a, c).size or np.intersect1d(b, c).size:
        raise UserError("probe splits: expected disjoint train, val and test indices")
    return splits


def _targets(kind: str, targets: np.ndarray, n: int, n_classes: int | None) -> np.ndarray:
    """Targets as `(records, labels)` float64 0/1, `(records,)` int64 classes, or
    `(records, targets)` float64."""
    y = np.asarray(targets)
    if y.shape[:1] != (n,):
        raise UserError(f"targets {y.shape}: expected {n} records, as many as the features")
    if kind == "multiclass":
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise UserError("multiclass targets: expected (records,) non-negative class indices")
        k = int(y.max()) + 1 if n_classes is None else n_classes
        if y.max() >= k:
            raise UserError(f"multiclass targets: class {y.max()} >= n_classes={k}")
        return y.astype(np.int64)
    y = y.reshape(n, -1)
    if kind == "binary" and y.shape[1] != 1:
        raise UserError(f"binary targets {targets.shape}: expected one label per record")
    if kind in ("binary", "multilabel") and not np.isin(y, (0, 1)).all():
        raise UserError(f"{kind} targets: expected 0/1 values")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise UserError(f"{kind} targets: expected finite values (drop records without a target)")
    return y


def _standardise(x: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and standard deviation `(dim,)`; constant features get a scale of 1."""
    x_train = np.asarray(x[train], dtype=np.float64)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    return mean, np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)


# ----------------------------------------------------------------------------------------------
# Logistic path


def _logistic_objective(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed loss over records (BCE summed over labels, or cross-entropy)."""
    if kind == "multiclass":
        return F.cross_entropy(logits, y, reduction="sum")
    return F.binary_cross_entropy_with_logits(logits, y, reduction="sum")


def _eigenbasis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues `(rank,)` and eigenvectors `(dim, rank)` of `X'X` over the span of the rows.

    Directions outside the span carry no signal; the L2 penalty sets their weights to 0, so
    dropping them is exact and makes probes on few records cheap.
    """
    eigval, eigvec = np.linalg.eigh(x.T @ x)
    keep = eigval > 1e-10 * max(float(eigval.max()), np.finfo(np.float64).tiny)
    return eigval[keep], eigvec[:, keep]


def _lbfgs(
    kind: str,
    z: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    c: float,
    curvature: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise `mean_i loss_i + ||W||^2 / (2 C n)` (scikit-learn's objective / (C n)).

    `z` holds the features in the eigenbasis of `X'X`, a rotation that keeps `||W||`. L-BFGS runs
    on `Q = W * S` with `S[i, j] = sqrt(eigval_i * curvature_j / n + 1 / (C n))`, the square root of
    the Hessian's diagonal when label j's loss has curvature `curvature_j`; the problem is then
    close to isotropic and converges in few iterations. Returns the new `(W, bias)`.
    """
    n = z.shape[0]
    lam = 1.0 / (c * n)
    scale = torch.sqrt(curvature[None, :] * z.pow(2).sum(0)[:, None] / n + lam)
    q = (weight * scale).requires_grad_(True)
    b = bias.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [q, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = q / scale
        loss = _logistic_objective(kind, z @ w + b, y) / n + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (q / scale).detach(), b.detach()


def _mean_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over records (and labels, for BCE) of the loss, the quantity reported."""
    total = _logistic_objective(kind, logits, y).item()
    return total / (y.shape[0] if kind == "multiclass" else y.numel())


@dataclass(frozen=True, eq=False)
class _Path:
    weight: np.ndarray
    bias: np.ndarray
    best: int
    val_losses: tuple[float, ...]


@dataclass(frozen=True)
class _Solver:
    """L-BFGS settings: a cheap path to choose C, then a float64 polish at the chosen C."""

    patience: int
    path_dtype: torch.dtype
    path_tol: float
    tol: float
    max_iter: int


def _targets_tensor(kind: str, y: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(y) if kind == "multiclass" else torch.as_tensor(y, dtype=dtype)


def _logistic_path(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    prior: np.ndarray,
    c_grid: Sequence[float],
    solver: _Solver,
) -> _Path:
    """Fit along the C grid (ascending) with warm starts and pick the lowest validation loss.

    The path runs in `solver.path_dtype` to `solver.path_tol`, enough to rank the C values; the
    chosen fit is then polished in float64 to `solver.tol` from where the path left it.
    `prior` `(outputs,)` is the training prevalence of each fitted label/class: the intercepts start
    at its logit (log for multi-class) and `prior * (1 - prior)` is the curvature of each loss.
    """
    _, basis = _eigenbasis(x_train)
    z_tr, z_va = x_train @ basis, x_val @ basis

    def tensors(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return (
            torch.as_tensor(z_tr, dtype=dtype),
            _targets_tensor(kind, y_train, dtype),
            torch.as_tensor(z_va, dtype=dtype),
            _targets_tensor(kind, y_val, dtype),
            torch.as_tensor(prior * (1 - prior), dtype=dtype),
        )

    zt, yt, zv, yv, curvature = tensors(solver.path_dtype)
    start = np.log(prior) if kind == "multiclass" else np.log(prior) - np.log1p(-prior)
    weight = torch.zeros(basis.shape[1], prior.size, dtype=solver.path_dtype)
    bias = torch.as_tensor(start, dtype=solver.path_dtype)
    losses: list[float] = []
    best, best_state, since_best = -1, (weight, bias), 0
    for i, c in enumerate(c_grid):
        weight, bias = _lbfgs(
            kind, zt, yt, weight, bias, c, curvature, solver.path_tol, solver.max_iter
        )
        losses.append(_mean_loss(kind, zv @ weight + bias, yv))
        if best < 0 or losses[i] < losses[best]:
            best, best_state, since_best = i, (weight, bias), 0
        else:
            since_best += 1
            if since_best >= solver.patience:
                break
    zt, yt, _, _, curvature = tensors(torch.float64)
    w, b = best_state
    w, b = _lbfgs(
        kind, zt, yt, w.double(), b.double(), c_grid[best], curvature, solver.tol, solver.max_iter
    )
    return _Path(basis @ w.numpy(), b.numpy(), best, tuple(losses))


def _jeffreys(positives: np.ndarray, n: int) -> np.ndarray:
    return (positives + 0.5) / (n + 1.0)


# ----------------------------------------------------------------------------------------------
# Metrics per kind


def _defined(value: float) -> float | None:
    """None for an undefined (NaN) metric, so that results compare equal and store as NULL."""
    return None if np.isnan(value) else float(value)


def _classification_metrics(
    kind: str,
    y_test: np.ndarray,
    p_test: np.ndarray,
    y_val: np.ndarray,
    p_val: np.ndarray,
    bootstrap: M.Bootstrap | None = M.DEFAULT_BOOTSTRAP,
) -> tuple[dict[str, float | None], dict[str, tuple[float | None, ...]], tuple[int, ...], tuple]:
    """Test metrics, per-class metrics, skipped classes and (binary/multi-label) thresholds.

    Multi-class AUROC/AUPRC are one-vs-rest and its F1 uses arg-max decisions; binary and
    multi-label F1 uses per-label thresholds tuned on the validation split. With `bootstrap`,
    the metrics also get their percentile intervals over test records (`with_intervals`) and the
    per-class metrics the test positives of each class (`n_pos`).
    """
    if kind == "multiclass":
        k = p_test.shape[1]
        truth = np.eye(k)[y_test]
        decisions, thresholds = np.eye(k)[p_test.argmax(axis=1)], np.full(k, 0.5)
        extra = {"accuracy": M.accuracy(y_test, p_test)}
    else:
        truth, decisions = y_test, p_test
        thresholds = M.tune_thresholds(y_val, p_val)
        extra = {}
    au, ap = M.auroc(truth, p_test), M.auprc(truth, p_test)
    f1 = M.f1_at_thresholds(truth, decisions, thresholds)
    metrics = {
        **extra,
        "auroc": au.macro,
        "auprc": ap.macro,
        "f1": f1.macro,
        "brier": M.brier_score(y_test, p_test),
        "ece": M.expected_calibration_error(y_test, p_test),
    }
    per_class_values = {"auroc": au.per_class, "auprc": ap.per_class, "f1": f1.per_class}
    tuned = () if kind == "multiclass" else tuple(thresholds.tolist())
    defined = {k: _defined(v) for k, v in metrics.items()}
    per_class = {k: tuple(_defined(v) for v in values) for k, values in per_class_values.items()}
    if bootstrap is None:
        return defined, per_class, au.skipped, tuned
    losses = _loss_per_record(kind, y_test, p_test)
    hits = np.asarray(decisions >= thresholds, np.float64)

    def evaluate(counts: np.ndarray) -> dict[str, np.ndarray]:
        auroc, auprc = M.weighted_ranking(truth, p_test, counts)
        f1_pc = M.weighted_f1_per_class(truth, hits, counts)
        stats = {
            "loss": (counts @ losses) / counts.sum(axis=1),
            "auroc": M.class_macro(auroc),
            "auprc": M.class_macro(auprc),
            "f1": M.class_macro(f1_pc),
            "brier": M.weighted_brier(y_test, p_test, counts),
            "class/auroc": auroc,
            "class/auprc": auprc,
            "class/f1": f1_pc,
        }
        if kind == "multiclass":
            stats["accuracy"] = M.weighted_accuracy(y_test, p_test, counts)
        return stats

    intervals = M.bootstrap_intervals(evaluate, len(p_test), bootstrap)
    metrics_out = with_intervals(
        {"loss": _probability_loss(kind, y_test, p_test), **metrics}, intervals, bootstrap
    )
    del metrics_out["loss"]  # reported as the test loss; only its interval is added here
    per_class.update(class_intervals(per_class_values, intervals))
    per_class["n_pos"] = tuple(float(v) for v in truth.sum(axis=0))
    return metrics_out, per_class, au.skipped, tuned


def with_intervals(
    metrics: Mapping[str, float],
    intervals: Mapping[str, M.Intervals],
    bootstrap: M.Bootstrap,
) -> dict[str, float | None]:
    """Task-level `metrics` with, for each one that has an interval, `<metric>_lo` and
    `<metric>_hi`, and `<metric>_defined` (the fraction of resamples where it was defined) where
    that is below 1; then `n_boot` and `ci_level`. None where undefined (NaN), so undefined
    values stay out of the tidy table."""
    out: dict[str, float | None] = {k: _defined(v) for k, v in metrics.items()}
    for name, value in metrics.items():
        if name not in intervals or _defined(value) is None:
            continue
        found = intervals[name]
        out[f"{name}_lo"] = _defined(float(found.low))
        out[f"{name}_hi"] = _defined(float(found.high))
        if float(found.defined) < 1:
            out[f"{name}_defined"] = float(found.defined)
    out["n_boot"], out["ci_level"] = float(bootstrap.n_boot), float(bootstrap.level)
    return out


def class_intervals(
    per_class: Mapping[str, np.ndarray], intervals: Mapping[str, M.Intervals]
) -> dict[str, tuple[float | None, ...]]:
    """Per-class `<metric>_lo`, `<metric>_hi` (and `<metric>_defined` where some class was
    undefined in a resample) from the `class/<metric>` intervals; None where the class's own
    value is undefined."""
    out: dict[str, tuple[float | None, ...]] = {}
    for name, values in per_class.items():
        found = intervals.get(f"class/{name}")
        if found is None:
            continue
        keep = ~np.isnan(np.asarray(values, np.float64))
        for suffix, bound in (("lo", found.low), ("hi", found.high)):
            out[f"{name}_{suffix}"] = tuple(
                _defined(float(v)) if ok else None for v, ok in zip(bound, keep, strict=True)
            )
        if (found.defined[keep] < 1).any():
            pairs = zip(found.defined, keep, strict=True)
            out[f"{name}_defined"] = tuple(float(d) if ok and d < 1 else None for d, ok in pairs)
    return out


def _regression_metrics(
    y_test: np.ndarray,
    pred: np.ndarray,
    scale: np.ndarray,
    bootstrap: M.Bootstrap | None = M.DEFAULT_BOOTSTRAP,
) -> dict[str, float | None]:
    """`mae`, `mse` (target units), `r2` of `(test, targets)` predictions; with `bootstrap`, their
    intervals and that of the test loss (squared error of targets standardised by `scale`)."""
    metrics = {
        "mae": M.mae(y_test, pred),
        "mse": float(((pred - y_test) ** 2).mean()),
        "r2": M.r2(y_test, pred),
    }
    if bootstrap is None:
        return {k: _defined(v) for k, v in metrics.items()}
    losses = (((pred - y_test) / scale) ** 2).mean(axis=1)

    def evaluate(counts: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "loss": (counts @ losses) / counts.sum(axis=1),
            "mae": M.weighted_mae(y_test, pred, counts),
            "mse": M.weighted_mse(y_test, pred, counts),
            "r2": M.weighted_r2(y_test, pred, counts),
        }

    intervals = M.bootstrap_intervals(evaluate, len(pred), bootstrap)
    out = with_intervals({"loss": float(losses.mean()), **metrics}, intervals, bootstrap)
    del out["loss"]
    return out


# ----------------------------------------------------------------------------------------------
# Public API


def linear_probe(
    features: np.ndarray,
    targets: np.ndarray,
    kind: Kind,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    label_names: Sequence[str] | None = None,
    n_classes: int | None = None,
    patience: int = 2,
    tol: float = 1e-5,
    path_tol: float = 1e-3,
    path_dtype: torch.dtype = torch.float32,
    max_iter: int = 500,
    bootstrap: M.Bootstrap | None = M.DEFAULT_BOOTSTRAP,
) -> ProbeResult:
    """Fit a linear probe on `features[train]`, choose C on `val`, report on `test`.

    Args:
        features: `(records, dim)` frozen representations.
        targets: binary `(records,)` 0/1; multilabel `(records, labels)` 0/1; multiclass
            `(records,)` class indices; regression `(records,)` or `(records, targets)`.
        kind: one of `KINDS`.
        train, val, test: disjoint record indices into `features` and `targets`.
        c_grid: inverse regularisation strengths, searched in ascending order.
        label_names: names of the labels / classes / targets (default "0", "1", ...).
        n_classes: number of classes for multiclass (default: largest index + 1).
        patience: stop the logistic path after this many grid points without a better validation
            loss (ridge evaluates the whole grid, at no extra cost).
        tol: L-BFGS tolerance of the final float64 fit at the chosen C, on the largest entry of
            the gradient of the preconditioned per-record objective.
        path_tol, path_dtype: tolerance and torch dtype of the fits along the C path, which only
            rank the C values (float32 at 1e-3 by default: about 4 times cheaper than float64).
        max_iter: L-BFGS iterations per fit.
        bootstrap: percentile bootstrap over test records for the metrics' intervals
            (`ecgscale.evaluate.metrics.Bootstrap`: 1000 resamples, 95 %, seed 0); None: no
            intervals.

    Metrics on the test split: binary/multilabel `auroc`, `auprc` (macros over labels that take
    both values), `f1` (at validation-tuned thresholds), `brier`, `ece`; multiclass `accuracy`,
    `auroc`, `auprc` (one-vs-rest macros), `f1` (macro, arg-max decisions), `brier`, `ece`;
    regression `mae`, `mse` (target units, averaged over targets), `r2`.

    With `bootstrap`, every metric but `ece` and the test loss get `<metric>_lo` and
    `<metric>_hi` (the interval's ends; `loss_lo`, `loss_hi` for the test loss), `<metric>_defined`
    where some resamples left it undefined (the fraction that did not), and `n_boot`, `ci_level`;
    `per_class` gets the same `_lo`/`_hi` (`_defined`) for `auroc`, `auprc`, `f1` and `n_pos`,
    the test positives of each class. All statistics are evaluated on the same resamples.
    ECE has none: binned calibration error is biased upwards on resamples (every bin's gap is an
    absolute value), so its percentile interval often lies above the estimate and would mislead
    (`ecgscale.evaluate.metrics.weighted_ece` computes it for those who want it).
    """
    if kind not in KINDS:
        raise ConfigError(f"probe kind {kind!r}: expected one of {', '.join(KINDS)}")
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UserError(f"features {x.shape}: expected a (records, dim) array")
    if not np.isfinite(x).all():
        raise UserError("features: expected finite values")
    grid = sorted(float(c) for c in c_grid)
    if not grid or grid[0] <= 0:
        raise ConfigError(f"c_grid {list(c_grid)}: expected positive values")
    if patience < 1:
        raise ConfigError(f"patience={patience}: expected at least 1")
    n = x.shape[0]
    train, val, test = _check_splits(n, train, val, test)
    y = _targets(kind, targets, n, n_classes)
    mean, scale = _standardise(x, train)

    def rows(idx: np.ndarray) -> np.ndarray:
        return (np.asarray(x[idx], dtype=np.float64) - mean) / scale

    x_tr, x_va, x_te = rows(train), rows(val), rows(test)
    if kind == "regression":
        return _ridge_probe(
            x_tr, x_va, x_te, y[train], y[val], y[test], grid, label_names, (mean, scale),
            bootstrap,
        )  # fmt: skip
    return _logistic_probe(
        kind, x_tr, x_va, x_te, y[train], y[val], y[test], grid, label_names,
        n_classes=int(y.max()) + 1 if kind == "multiclass" and n_classes is None else n_classes,
        solver=_Solver(patience, path_dtype, path_tol, tol, max_iter),
        standardisation=(mean, scale), bootstrap=bootstrap,
    )  # fmt: skip


def _names(label_names: Sequence[str] | None, k: int) -> tuple[str, ...]:
    if label_names is None:
        return tuple(str(j) for j in range(k))
    if len(label_names) != k:
        raise UserError(f"label_names: {len(label_names)} names for {k} labels")
    return tuple(str(name) for name in label_names)


def _logistic_probe(
    kind: str,
    x_tr: np.ndarray,
    x_va: np.ndarray,
    x_te: np.ndarray,
    y_tr: np.ndarray,
    y_va: np.ndarray,
    y_te: np.ndarray,
    grid: list[float],
    label_names: Sequence[str] | None,
    *,
    n_classes: int | None,
    solver: _Solver,
    standardisation: tuple[np.ndarray, np.ndarray],
    bootstrap: M.Bootstrap | None,
) -> ProbeResult:
    n_tr = len(x_tr)
    if kind == "multiclass":
        assert n_classes is not None
        k = n_classes
        counts = np.bincount(y_tr, minlength=k)
        fitted = np.flatnonzero(counts > 0)
        remap = np.full(k, -1)
        remap[fitted] = np.arange(fitted.size)
        target_tr, target_va = remap[y_tr], remap[y_va]  # -1: untrained class, left out below
    else:
        k = y_tr.shape[1]
        counts = y_tr.sum(axis=0)
        fitted = np.flatnonzero((counts > 0) & (counts < n_tr))
        target_tr, target_va = y_tr[:, fitted], y_va[:, fitted]
    names = _names(label_names, k)
    constant = tuple(int(j) for j in np.setdiff1d(np.arange(k), fitted))
    can_fit = fitted.size >= (2 if kind == "multiclass" else 1)

    if can_fit:
        prior = counts[fitted] / n_tr
        keep = np.isin(y_va, fitted) if kind == "multiclass" else slice(None)
        path = _logistic_path(
            kind, x_tr, target_tr, x_va[keep], target_va[keep], prior, grid, solver
        )
        weight, bias, best, val_losses = path.weight, path.bias, path.best, path.val_losses
    else:  # nothing to fit: every prediction is the training prior
        weight, bias = np.zeros((x_tr.shape[1], fitted.size)), np.zeros(fitted.size)
        best, val_losses = 0, ()

    if kind == "multiclass":
        fill = np.full(k, 0.5 / (n_tr + 0.5 * k))
        fill[fitted] = 0.0
    else:
        fill = _jeffreys(counts, n_tr)
    outputs = LinearOutputs(kind, *standardisation, weight, bias, fitted, fill)
    p_va, p_te = outputs.standardised(x_va), outputs.standardised(x_te)
    val_loss, test_loss = _probability_loss(kind, y_va, p_va), _probability_loss(kind, y_te, p_te)
    metrics, per_class, skipped, thresholds = _classification_metrics(
        kind, y_te, p_te, y_va, p_va, bootstrap
    )
    return ProbeResult(
        kind=kind,
        test_loss=test_loss,
        val_loss=val_loss,
        c=grid[best],
        c_grid=tuple(grid),
        val_losses=val_losses,
        metrics=MappingProxyType(metrics),
        per_class=MappingProxyType(per_class),
        skipped_classes=skipped,
        constant_labels=constant,
        label_names=names,
        thresholds=thresholds,
        n_train=n_tr,
        n_val=len(x_va),
        n_test=len(x_te),
        test_outputs=p_te,
        outputs=outputs,
    )


def _probability_loss(kind: str, y: np.ndarray, p: np.ndarray) -> float:
    """Mean BCE over records and labels, or mean cross-entropy, from probabilities."""
    if kind == "multiclass":
        tiny = np.finfo(np.float64).tiny
        return float(-np.log(np.maximum(p[np.arange(len(y)), y], tiny)).mean())
    return float(bce_per_label(y, p).mean())


def _loss_per_record(kind: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """`(records,)` loss of each record: BCE averaged over labels, or cross-entropy; their mean
    is `_probability_loss`."""
    tiny = np.finfo(np.float64).tiny
    if kind == "multiclass":
        return -np.log(np.maximum(p[np.arange(len(y)), y], tiny))
    below_one = np.minimum(p, np.nextafter(1.0, 0.0))
    return -(y * np.log(np.maximum(p, tiny)) + (1 - y) * np.log1p(-below_one)).mean(axis=1)


def bce_per_label(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Mean BCE over records of each label `(labels,)` (natural log) from 0/1 targets and
    probabilities `(records, labels)`; probabilities of exactly 0 or 1 are kept finite."""
    tiny = np.finfo(np.float64).tiny
    below_one = np.minimum(p, np.nextafter(1.0, 0.0))  # p rounded to 1 would give 0 * -inf
    return -(y * np.log(np.maximum(p, tiny)) + (1 - y) * np.log1p(-below_one)).mean(axis=0)


def _ridge_probe(
    x_tr: np.ndarray,
    x_va: np.ndarray,
    x_te: np.ndarray,
    y_tr: np.ndarray,
    y_va: np.ndarray,
    y_te: np.ndarray,
    grid: list[float],
    label_names: Sequence[str] | None,
    standardisation: tuple[np.ndarray, np.ndarray],
    bootstrap: M.Bootstrap | None,
) -> ProbeResult:
    """Ridge on standardised targets: `W = (X'X + I/C)^-1 X'y` via one eigendecomposition."""
    y_mean, y_scale = _standardise(y_tr, np.arange(len(y_tr)))
    t_tr, t_va = (y_tr - y_mean) / y_scale, (y_va - y_mean) / y_scale
    eigval, eigvec = np.linalg.eigh(x_tr.T @ x_tr)
    projected = eigvec.T @ (x_tr.T @ t_tr)  # (dim, targets)
    va_basis = x_va @ eigvec
    losses = []
    for c in grid:
        coef = projected / (np.maximum(eigval, 0.0) + 1.0 / c)[:, None]
        losses.append(float(((va_basis @ coef - t_va) ** 2).mean()))
    best = int(np.argmin(losses))
    weight = eigvec @ (projected / (np.maximum(eigval, 0.0) + 1.0 / grid[best])[:, None])
    targets = np.arange(y_tr.shape[1])
    outputs = LinearOutputs(
        "regression", *standardisation, weight * y_scale, y_mean, targets, np.empty(0)
    )
    pred_te = outputs.standardised(x_te)
    test_loss = float((((pred_te - y_te) / y_scale) ** 2).mean())
    metrics = _regression_metrics(y_te, pred_te, y_scale, bootstrap)
    return ProbeResult(
        kind="regression",
        test_loss=test_loss,
        val_loss=losses[best],
        c=grid[best],
        c_grid=tuple(grid),
        val_losses=tuple(losses),
        metrics=MappingProxyType(metrics),
        per_class=MappingProxyType({}),
        skipped_classes=(),
        constant_labels=(),
        label_names=_names(label_names, y_tr.shape[1]),
        thresholds=(),
        n_train=len(x_tr),
        n_val=len(x_va),
        n_test=len(x_te),
        test_outputs=pred_te,
        outputs=outputs,
    )


# ----------------------------------------------------------------------------------------------
# Label fractions


def coverage_subsample(
    indicators: np.ndarray | None, n: int, m: int, rng: np.random.Generator
) -> np.ndarray:
    """`m` of `n` records, sorted, drawn so that each class keeps a positive where possible.

    `indicators` is `(n, classes)` bool (None: plain random draw). Classes are visited from the
    rarest; each one not yet covered by a drawn record gets one of its positives at random, until
    `m` records are drawn; the rest are drawn uniformly from the remaining records.
    """
    chosen: list[int] = []
    if indicators is not None:
        counts = indicators.sum(axis=0)
        covered = np.zeros(indicators.shape[1], dtype=bool)
        for j in np.argsort(counts, kind="stable"):
            if len(chosen) >= m:
                break
            if counts[j] == 0 or covered[j]:
                continue
            pick = int(rng.choice(np.flatnonzero(indicators[:, j])))
            chosen.append(pick)
            covered |= indicators[pick]
    rest = np.setdiff1d(np.arange(n), chosen)
    fill = rng.permutation(rest)[: m - len(chosen)]
    return np.sort(np.concatenate([np.asarray(chosen, dtype=np.int64), fill]))


def _indicators(kind: str, y: np.ndarray, n_classes: int | None) -> np.ndarray | None:
    """Class membership `(records, classes)` used to keep every class in a subsample."""
    y = np.asarray(y)
    if kind == "regression":
        return None
    if kind == "multiclass":
        k = int(y.max()) + 1 if n_classes is None else n_classes
        return np.eye(k, dtype=bool)[y]
    y = y.reshape(len(y), -1).astype(bool)
    return np.concatenate([y, ~y], axis=1) if kind == "binary" else y


def label_fraction_probes(
    features: np.ndarray,
    targets: np.ndarray,
    kind: Kind,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    draws: int = 5,
    seed: int = 0,
    **probe_options: Any,
) -> tuple[FractionResult, ...]:
    """Linear probes on a fraction of the training labels, repeated over seeded draws.

    Each draw keeps `max(1, round(fraction * len(train)))` training records, chosen by
    `coverage_subsample` (every class keeps a positive where possible; binary tasks keep both
    values). The validation and test splits are used whole. Draw `d` of fraction `f` uses
    `numpy.random.default_rng((seed, round(f * 1e6), d))`, so results do not depend on which other
    fractions are run. A fraction of 1 is one probe on all training records (draws would be
    identical). `probe_options` go to `linear_probe`.
    """
    subsets = fraction_subsets(
        targets, kind, train, fractions=fractions, draws=draws, seed=seed,
        n_classes=probe_options.get("n_classes"),
    )  # fmt: skip
    return tuple(
        FractionResult(
            f, d, linear_probe(features, targets, kind, subset, val, test, **probe_options)
        )
        for f, d, subset in subsets
    )


def fraction_subsets(
    targets: np.ndarray,
    kind: Kind,
    train: np.ndarray,
    *,
    fractions: Sequence[float],
    draws: int,
    seed: int,
    n_classes: int | None = None,
) -> list[tuple[float, int, np.ndarray]]:
    """`(fraction, draw, training indices)` of the label-fraction protocol (see
    `label_fraction_probes`): draw `d` of fraction `f` keeps `max(1, round(f * len(train)))`
    records chosen by `coverage_subsample` with `default_rng((seed, round(f * 1e6), d))`; a
    fraction that keeps every record has one draw."""
    if draws < 1:
        raise ConfigError(f"draws={draws}: expected at least 1")
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"fractions {list(fractions)}: expected values in (0, 1]")
    train = _indices("train", train, len(np.asarray(targets)))
    indicators = _indicators(kind, np.asarray(targets)[train], n_classes)
    out = []
    for f in fractions:
        m = max(1, round(f * len(train)))
        for d in range(1 if m >= len(train) else draws):
            rng = np.random.default_rng((seed, round(f * 1e6), d))
            out.append((float(f), d, train[coverage_subsample(indicators, len(train), m, rng)]))
    return out
