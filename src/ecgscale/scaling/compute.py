"""What fits say: compute-optimal allocation, comparisons between fits, saturation, label scaling.

Every quantity is computed for the point estimate and for each bootstrap sample of the fit(s), so
its interval is the bootstrap percentile interval of the quantity itself (not a propagation of
parameter intervals, which would ignore their correlations).

Compute model: C = c(N) * D with c(N) = coef * N^exponent the training FLOPs per sample. The default
c(N) = 6 N is the language-model convention (6 FLOPs per parameter per token); for ECG models
`fit_flops_model` measures c(N) from the runs (training FLOPs / training records against N). Then
with L = E + A N^-alpha + B D^-beta and g = exponent, minimising L at fixed C gives

    N*(C) = G (C / coef)^(beta / (alpha + g beta)),
    G = (alpha A / (g beta B))^(1 / (alpha + g beta)),
    D*(C) = C / c(N*),  so D* is proportional to C^(alpha / (alpha + g beta)),

and of each extra unit of log compute a share alpha / (alpha + g beta) should go to data (the rest,
g beta / (alpha + g beta), to parameters); with g = 1 these are the familiar beta / (alpha + beta)
and alpha / (alpha + beta).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgscale.errors import UserError
from ecgscale.scaling.fits import AxisFit, Estimate, FitBase, JointFit, as_positive, fit_axis


@dataclass(frozen=True)
class FlopsModel:
    """Training FLOPs per sample c(N) = coef * N^exponent (C = c(N) * D). `max_rel_error` is the
    largest |c_fit / c_measured - 1| over the runs it was fitted to (0 for the default model)."""

    coef: float = 6.0
    exponent: float = 1.0
    r2_log: float = 1.0
    max_rel_error: float = 0.0

    def per_sample(self, n_params: np.ndarray | float) -> np.ndarray:
        """Training FLOPs per sample at N = `n_params`."""
        return self.coef * np.asarray(n_params, dtype=np.float64) ** self.exponent

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def fit_flops_model(
    n_params: np.ndarray | Sequence[float], flops_per_sample: np.ndarray | Sequence[float]
) -> FlopsModel:
    """Least-squares power law log c = log coef + exponent log N over runs (P,).

    flops_per_sample: training FLOPs per training sample of each run (total training FLOPs divided
    by the number of training samples), so that epochs and objective overheads are included.
    """
    n_arr = as_positive("n_params", n_params)
    c_arr = as_positive("flops_per_sample", flops_per_sample)
    if n_arr.size != c_arr.size:
        raise UserError(f"flops_per_sample: expected {n_arr.size} values, got {c_arr.size}")
    if np.unique(n_arr).size < 2:
        raise UserError("flops model: n_params takes one value; need at least 2 to fit c(N)")
    log_n, log_c = np.log(n_arr), np.log(c_arr)
    exponent, intercept = np.polyfit(log_n, log_c, 1)
    pred = intercept + exponent * log_n
    ss_tot = float(np.sum((log_c - log_c.mean()) ** 2))
    r2 = 1.0 - float(np.sum((log_c - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return FlopsModel(
        coef=float(np.exp(intercept)),
        exponent=float(exponent),
        r2_log=r2,
        max_rel_error=float(np.max(np.abs(np.exp(pred - log_c) - 1.0))),
    )


def _allocate(
    a_coef: np.ndarray | float,
    b_coef: np.ndarray | float,
    alpha: np.ndarray | float,
    beta: np.ndarray | float,
    compute: np.ndarray | float,
    flops: FlopsModel,
) -> tuple[np.ndarray, np.ndarray]:
    """(N*, D*) minimising A N^-alpha + B D^-beta subject to c(N) D = compute (all broadcast).

    Parameters with alpha or beta <= 0 have no interior optimum and give NaN.
    """
    a_coef, b_coef, alpha, beta, compute = (
        np.asarray(v, dtype=np.float64) for v in (a_coef, b_coef, alpha, beta, compute)
    )
    g = flops.exponent
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        denom = alpha + g * beta
        log_n = (
            np.log(alpha * a_coef / (g * beta * b_coef)) + beta * np.log(compute / flops.coef)
        ) / denom
        valid = (alpha > 0) & (beta > 0)
        n_opt = np.where(valid, np.exp(log_n), np.nan)
        d_opt = compute / flops.per_sample(n_opt)
    return n_opt, d_opt


def optimal_allocation(
    fit: JointFit,
    compute: np.ndarray | Sequence[float] | float,
    flops: FlopsModel | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The compute-optimal frontier of a joint fit's point estimate: (N*, D*) at each budget in
    `compute` (FLOPs) under c(N) = `flops` (default 6 N); NaN where an exponent is <= 0. For
    intervals use `compute_optimal`."""
    if not isinstance(fit, JointFit):
        raise UserError("optimal_allocation needs a joint fit L(N, D); got a one-axis fit")
    return _allocate(
        fit.A.value,
        fit.B.value,
        fit.alpha.value,
        fit.beta.value,
        np.asarray(compute, dtype=np.float64),
        flops or FlopsModel(),
    )


@dataclass(frozen=True)
class ComputeOptimal:
    """Compute-optimal allocation of a joint fit at each budget in `compute` (FLOPs).

    n_opt, d_opt, loss_opt, samples_per_param: one `Estimate` per budget. n_exponent, d_exponent:
    N* ~ C^a and D* ~ C^b. data_share: share of marginal (log) compute that should go to data (= b).
    """

    compute: tuple[float, ...]
    n_opt: tuple[Estimate, ...]
    d_opt: tuple[Estimate, ...]
    loss_opt: tuple[Estimate, ...]
    samples_per_param: tuple[Estimate, ...]
    n_exponent: Estimate
    d_exponent: Estimate
    data_share: Estimate
    flops: FlopsModel

    def to_dict(self) -> dict[str, Any]:
        return {
            "compute": list(self.compute),
            "n_opt": [e.to_dict() for e in self.n_opt],
            "d_opt": [e.to_dict() for e in self.d_opt],
            "loss_opt": [e.to_dict() for e in self.loss_opt],
            "samples_per_param": [e.to_dict() for e in self.samples_per_param],
            "n_exponent": self.n_exponent.to_dict(),
            "d_exponent": self.d_exponent.to_dict(),
            "data_share": self.data_share.to_dict(),
            "flops": self.flops.to_dict(),
        }


def compute_optimal(
    fit: JointFit,
    compute: np.ndarray | Sequence[float] | float,
    *,
    flops: FlopsModel | None = None,
) -> ComputeOptimal:
    """N*(C), D*(C), the predicted loss there, and the allocation exponents of a joint fit, with
    bootstrap intervals. compute: budget(s) C in FLOPs; flops: c(N), default 6 N (C = 6 N D)."""
    if not isinstance(fit, JointFit):
        raise UserError("compute_optimal needs a joint fit L(N, D); got a one-axis fit")
    flops = flops or FlopsModel()
    budgets = np.atleast_1d(np.asarray(compute, dtype=np.float64))
    if budgets.ndim != 1 or not np.all(np.isfinite(budgets)) or np.any(budgets <= 0):
        raise UserError("compute: expected positive finite FLOP budgets")
    g = flops.exponent
    point = np.array([fit.E.value, fit.A.value, fit.B.value, fit.alpha.value, fit.beta.value])
    # Row 0: point estimate, rows 1..: bootstrap samples; columns E, A, B, alpha, beta.
    params = np.vstack([point, fit.samples])
    e, a, b, al, be = (params[:, j, None] for j in range(5))
    n_opt, d_opt = _allocate(a, b, al, be, budgets[None, :], flops)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        loss = e + a * n_opt**-al + b * d_opt**-be
        ratio = d_opt / n_opt
        n_exp = (be / (al + g * be))[:, 0]
        d_exp = (al / (al + g * be))[:, 0]

    def per_budget(values: np.ndarray) -> tuple[Estimate, ...]:
        return tuple(
            Estimate.from_samples(values[0, j], values[1:, j]) for j in range(budgets.size)
        )

    return ComputeOptimal(
        compute=tuple(float(c) for c in budgets),
        n_opt=per_budget(n_opt),
        d_opt=per_budget(d_opt),
        loss_opt=per_budget(loss),
        samples_per_param=per_budget(ratio),
        n_exponent=Estimate.from_samples(n_exp[0], n_exp[1:]),
        d_exponent=Estimate.from_samples(d_exp[0], d_exp[1:]),
        data_share=Estimate.from_samples(d_exp[0], d_exp[1:]),
        flops=flops,
    )


@dataclass(frozen=True)
class ExponentComparison:
    """Ratio of an exponent between two fits, and what it means for matching improvements.

    ratio: exponent_x / exponent_y. multiplier: 10^ratio, the factor by which Y's resource must
    grow to match the reducible-loss reduction of a 10x increase of X's.
    """

    label_x: str
    label_y: str
    param: str
    ratio: Estimate
    multiplier: Estimate
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_x": self.label_x,
            "label_y": self.label_y,
            "param": self.param,
            "ratio": self.ratio.to_dict(),
            "multiplier": self.multiplier.to_dict(),
            "statement": self.statement,
        }


def compare_exponents(
    fit_x: FitBase,
    fit_y: FitBase,
    *,
    param: str = "alpha",
    label_x: str = "X",
    label_y: str = "Y",
    resource: str = "parameters",
) -> ExponentComparison:
    """Compare exponent `param` (e.g. alpha, beta, kappa) of two fits, with a bootstrap interval.

    The fits' bootstrap samples are paired by index: for fits of different data they are independent
    draws, so the pairs sample the ratio's distribution; for fits of the same runs with the same
    seed they form a paired bootstrap.
    """
    for fit in (fit_x, fit_y):
        if param not in fit.param_names:
            raise UserError(f"compare_exponents: {param!r} is not a parameter of {fit.param_names}")
    value_x, value_y = getattr(fit_x, param).value, getattr(fit_y, param).value
    n = min(fit_x.samples.shape[0], fit_y.samples.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_b = fit_x.sample(param)[:n] / fit_y.sample(param)[:n]
        ratio = value_x / value_y if value_y != 0 else float("nan")
        ratio_est = Estimate.from_samples(ratio, ratio_b)
        mult = Estimate.from_samples(10.0**ratio, 10.0**ratio_b)
    statement = (
        f"to match a 10x increase in {resource} of {label_x}, {label_y} needs "
        f"{mult.value:.3g}x (95 % interval {mult.low:.3g}x to {mult.high:.3g}x)"
    )
    return ExponentComparison(label_x, label_y, param, ratio_est, mult, statement)


@dataclass(frozen=True)
class Saturation:
    """Is the curve at the largest fitted size already within the interval of E?

    at: where it is evaluated (axis -> value); loss: predicted loss there; reducible: loss - E;
    saturated: the predicted loss is at or below the upper end of E's 95 % interval, i.e. the data
    cannot tell the remaining improvement from none.
    """

    at: dict[str, float]
    loss: Estimate
    reducible: Estimate
    e_high: float
    saturated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": dict(self.at),
            "loss": self.loss.to_dict(),
            "reducible": self.reducible.to_dict(),
            "e_high": self.e_high,
            "saturated": self.saturated,
        }


def saturation(fit: JointFit | AxisFit) -> Saturation:
    """Saturation at the largest fitted N and D (joint fit) or the largest x (one-axis fit)."""
    s = fit.samples
    if isinstance(fit, JointFit):
        n, d = fit.n_range[1], fit.d_range[1]
        at = {"N": n, "D": d}
        reducible = fit.A.value * n**-fit.alpha.value + fit.B.value * d**-fit.beta.value
        with np.errstate(over="ignore", invalid="ignore"):
            red_b = s[:, 1] * n ** -s[:, 3] + s[:, 2] * d ** -s[:, 4]
    elif isinstance(fit, AxisFit):
        x = fit.x_range[1]
        at = {fit.axis: x}
        reducible = fit.A.value * x**-fit.alpha.value
        with np.errstate(over="ignore", invalid="ignore"):
            red_b = s[:, 1] * x ** -s[:, 2]
    else:
        raise UserError("saturation needs a joint or one-axis scaling fit")
    loss = Estimate.from_samples(fit.E.value + reducible, s[:, 0] + red_b)
    return Saturation(
        at=at,
        loss=loss,
        reducible=Estimate.from_samples(reducible, red_b),
        e_high=fit.E.high,
        saturated=bool(loss.value <= fit.E.high),
    )


def fit_label_scaling(
    n_labels: np.ndarray | Sequence[float],
    loss: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence[str],
    **options: Any,
) -> dict[str, AxisFit]:
    """Loss against the number of pre-training labels, one fit L = E + A n^-alpha per group (e.g.
    "frequent" and "tail" labels). Arrays (P,); options: see `FitOptions`."""
    x = np.asarray(n_labels, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    if not (x.shape == y.shape == g.shape) or x.ndim != 1:
        raise UserError("label scaling: n_labels, loss and groups must be 1-D arrays of one length")
    out: dict[str, AxisFit] = {}
    for name in sorted(set(g.tolist())):
        mask = g == name
        try:
            out[name] = fit_axis(x[mask], y[mask], axis="labels", **options)
        except UserError as exc:
            raise UserError(f"label group {name!r}: {exc}") from exc
    return out
