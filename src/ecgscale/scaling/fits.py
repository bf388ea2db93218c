"""Scaling-law fits with bootstrap intervals: L(N, D) = E + A N^-alpha + B D^-beta, one-axis laws.

Every fit is the same model family, written in log space as in Hoffmann et al. (2022) and Besiroglu
et al. (2024):

    log L = logsumexp(a_1 - alpha_1 log x_1, ..., a_K - alpha_K log x_K, e),   A_k = e^a_k, E = e^e,

with K = 2 (x = N, D) for the joint fit and K = 1 for a one-axis fit. The objective is the Huber
loss (delta = 1e-3) of the log residuals, *summed* over points (averaging made L-BFGS stop early in
the original Chinchilla fit). It is minimised with a batched L-BFGS (`lbfgs.minimize_batch`,
float64, analytic gradients) from a grid of starting points; the best end point wins.

Uncertainty comes from a nonparametric bootstrap over points (runs): each resample is the same
objective with multinomial counts as weights, so all resamples are optimised together as one
batched problem. Each resample starts from a few points (the point estimate, other distinct
full-data optima, the point estimate with rescaled exponents); every start runs 30 iterations, then
the best start of each resample runs to convergence. Intervals are bootstrap percentiles (95 %),
standard errors the bootstrap standard deviations.

Internally the log axes are centred (a_k then is the log of term k at the geometric-mean x_k),
which decorrelates a_k from alpha_k; parameters are boxed so that a law the data cannot pin down
shows up as an estimate or interval at a bound (reported in `warnings`), not a runaway optimiser.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ecgscale.errors import ConfigError, UserError
from ecgscale.scaling.lbfgs import minimize_batch

HUBER_DELTA = 1e-3
MIN_DECADES = 1.5  # spans below this many decades of N or D get a warning
EXPONENT_BOUNDS = (0.0, 5.0)
_LOG_SCALE_BELOW = 12.0  # log-scale terms may go this far below log(min loss): e^-12 ~ zero
_LOG_SCALE_ABOVE = 2.0  # ... and this far above log(max loss)
# A parameter is "poorly identified" when its bootstrap SE exceeds this multiple of |estimate|.
_REL_SE_LIMIT = {"scale": 0.5, "exponent": 0.5, "coefficient": 1.0}
_CHUNK_ELEMENTS = 32_768  # points x problems evaluated at once (L2-sized temporaries)
# Bootstrap: every start gets this many iterations; then only each resample's best start goes on.
_SCREEN_ITER = 30


@dataclass(frozen=True)
class Estimate:
    """A parameter: point estimate, bootstrap standard error and 95 % percentile interval."""

    value: float
    se: float
    low: float
    high: float

    def __float__(self) -> float:
        return self.value

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "se": self.se, "low": self.low, "high": self.high}

    @classmethod
    def from_samples(cls, value: float, samples: np.ndarray) -> Estimate:
        """Summarise bootstrap `samples` (n_boot,) around `value`, ignoring NaN (failed) ones."""
        finite = samples[np.isfinite(samples)]
        if finite.size < 2:
            return cls(float(value), float("nan"), float("nan"), float("nan"))
        low, high = np.percentile(finite, [2.5, 97.5])
        return cls(float(value), float(np.std(finite, ddof=1)), float(low), float(high))


@dataclass(frozen=True)
class Extrapolation:
    """Leave-the-largest-out check: refit without the points at the largest value of `axis`
    (`threshold`) and predict them. Errors are in natural-log loss; `max_rel_error` is
    max |predicted / observed - 1| over the held-out points."""

    axis: str
    threshold: float
    n_held_out: int
    rmse_log: float
    bias_log: float
    max_rel_error: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False, kw_only=True)
class FitBase:
    """Diagnostics shared by all fits.

    rmse_log, r2_log: goodness of fit of log loss. objective: the summed Huber loss at the optimum.
    boot_failed: share of resamples without a converged finite fit. samples (n_boot, n_params):
    bootstrap estimates in `param_names` order, NaN where a resample failed. boot_counts
    (n_boot, n_points): the multinomial resampling counts, so that a later fit on the same points
    can reuse exactly the same resamples (see `fit_transfer`).
    """

    param_names: ClassVar[tuple[str, ...]] = ()

    n_points: int
    rmse_log: float
    r2_log: float
    objective: float
    converged: bool
    boot_failed: float
    extrapolation: tuple[Extrapolation, ...]
    warnings: tuple[str, ...]
    samples: np.ndarray = field(repr=False)
    boot_counts: np.ndarray = field(repr=False)

    def estimates(self) -> dict[str, Estimate]:
        """Name -> `Estimate` for every parameter."""
        return {name: getattr(self, name) for name in self.param_names}

    def sample(self, name: str) -> np.ndarray:
        """Bootstrap estimates (n_boot,) of parameter `name`."""
        return self.samples[:, self.param_names.index(name)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: parameters with intervals and all diagnostics (no raw samples)."""
        return {
            "params": {k: v.to_dict() for k, v in self.estimates().items()},
            "n_points": self.n_points,
            "n_boot": int(self.samples.shape[0]),
            "rmse_log": self.rmse_log,
            "r2_log": self.r2_log,
            "objective": self.objective,
            "converged": self.converged,
            "boot_failed": self.boot_failed,
            "extrapolation": [e.to_dict() for e in self.extrapolation],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, eq=False, kw_only=True)
class JointFit(FitBase):
    """L(N, D) = E + A N^-alpha + B D^-beta; n_range and d_range are those of the fitted points."""

    param_names: ClassVar[tuple[str, ...]] = ("E", "A", "B", "alpha", "beta")

    E: Estimate
    A: Estimate
    B: Estimate
    alpha: Estimate
    beta: Estimate
    n_range: tuple[float, float]
    d_range: tuple[float, float]

    def predict(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        """Predicted loss at parameter count(s) `n` and sample count(s) `d` (broadcast)."""
        n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
        return (
            self.E.value + self.A.value * n**-self.alpha.value + self.B.value * d**-self.beta.value
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "joint",
            "law": "L = E + A N^-alpha + B D^-beta",
            "n_range": list(self.n_range),
            "d_range": list(self.d_range),
            **super().to_dict(),
        }


@dataclass(frozen=True, eq=False, kw_only=True)
class AxisFit(FitBase):
    """L(x) = E + A x^-alpha along one axis (`axis`: "N", "D" or a named count such as labels).

    For a fit along D, `A` and `alpha` play the roles of B and beta of the joint law.
    """

    param_names: ClassVar[tuple[str, ...]] = ("E", "A", "alpha")

    axis: str
    E: Estimate
    A: Estimate
    alpha: Estimate
    x_range: tuple[float, float]

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """Predicted loss at `x` (same units as the fitted axis)."""
        return self.E.value + self.A.value * np.asarray(x, dtype=np.float64) ** -self.alpha.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "axis",
            "axis": self.axis,
            "law": f"L = E + A {self.axis}^-alpha",
            "x_range": list(self.x_range),
            **super().to_dict(),
        }


def hoffmann_grid() -> np.ndarray:
    """Hoffmann et al.'s 4,500 joint-fit starts as rows (a, b, e, alpha, beta), a and b uncentred:
    alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}."""
    exps = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    scales = np.arange(0.0, 25.01, 5.0)
    return np.array(
        [(a, b, e, al, be) for al, be, e, a, b in itertools.product(exps, exps, es, scales, scales)]
    )


# ----------------------------------------------------------------------------------------------
# The batched objective
# ----------------------------------------------------------------------------------------------


class _HuberLSE:
    """Summed Huber loss of log L - logsumexp(a_k - alpha_k z_k, e) for a batch of problems.

    z: centred log axes (Gz, P, K); y: log loss (P,); w: point weights (Gw, P); group (B,): row ->
    index into z and w (those with a leading size 1 are shared). Parameters per row:
    (a_1..a_K, e, alpha_1..alpha_K).
    """

    def __init__(
        self, z: np.ndarray, y: np.ndarray, w: np.ndarray, group: np.ndarray, delta: float
    ) -> None:
        self.z, self.y, self.w, self.group, self.delta = z, y, w, group, delta

    def __call__(self, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Row chunks keep every temporary in cache (large fresh arrays cost page faults, not flops).
        step = max(1, _CHUNK_ELEMENTS // self.y.size)
        if x.shape[0] <= step:
            return self._evaluate(x, self.group[rows])
        f = np.empty(x.shape[0])
        grad = np.empty_like(x)
        for lo in range(0, x.shape[0], step):
            sl = slice(lo, lo + step)
            f[sl], grad[sl] = self._evaluate(x[sl], self.group[rows[sl]])
        return f, grad

    def _evaluate(self, x: np.ndarray, grp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # No max-shift in the logsumexp: the box bounds keep every term far inside float64's range.
        n_axes = self.z.shape[2]
        w = self.w[grp] if self.w.shape[0] > 1 else self.w
        z = self.z[grp] if self.z.shape[0] > 1 else self.z  # (R or 1, P, K)
        exp_e = np.exp(x[:, n_axes])
        terms = []
        total = np.empty((x.shape[0], self.y.size))
        total[:] = exp_e[:, None]
        for k in range(n_axes):
            term = np.multiply(x[:, n_axes + 1 + k, None], z[:, :, k])
            np.subtract(x[:, k, None], term, out=term)
            np.exp(term, out=term)
            total += term
            terms.append(term)
        resid = np.log(total)
        resid -= self.y
        dh = np.minimum(np.maximum(resid, -self.delta), self.delta)  # Huber derivative
        resid -= 0.5 * dh
        resid *= dh  # Huber = dh (r - dh/2)
        resid *= w
        f = resid.sum(axis=1)
        dh *= w
        dh /= total  # d f / d total, per point
        grad = np.empty_like(x)
        grad[:, n_axes] = dh.sum(axis=1) * exp_e
        for k, term in enumerate(terms):
            term *= dh
            grad[:, k] = term.sum(axis=1)
            term *= z[:, :, k]
            grad[:, n_axes + 1 + k] = -term.sum(axis=1)
        return f, grad


@dataclass(frozen=True)
class FitOptions:
    """Knobs shared by every fit.

    n_boot: bootstrap resamples (0: no intervals). seed: seed of the multinomial resampling.
    resamples: explicit resample indices (n_boot, n_points) instead of seeded draws (e.g. to repeat
    a published bootstrap). starts: starting points (n_starts, 2K+1) as (a_1..a_K, e, alpha_1..K)
    with uncentred a_k = log A_k, e = log E; default a data-scaled grid. boot_starts: starts per
    resample (the point estimate, other distinct full-data optima, then the point estimate with
    rescaled exponents); after 30 iterations each resample's best start goes on. huber_delta:
    Huber threshold in log loss. max_iter: L-BFGS iterations per problem. extrapolate: run the
    leave-largest-out check.
    """

    n_boot: int = 4000
    seed: int = 0
    resamples: np.ndarray | None = None
    starts: np.ndarray | None = None
    boot_starts: int = 3
    huber_delta: float = HUBER_DELTA
    max_iter: int = 2000
    extrapolate: bool = True

    def __post_init__(self) -> None:
        if self.n_boot < 0 or self.boot_starts < 1 or self.huber_delta <= 0 or self.max_iter < 1:
            raise ConfigError(
                "fit options: expected n_boot >= 0, boot_starts >= 1, huber_delta > 0 and "
                "max_iter >= 1"
            )


def fit_options(options: dict[str, Any]) -> FitOptions:
    """`FitOptions` from keyword options; an unknown name is a `ConfigError`."""
    try:
        return FitOptions(**options)
    except TypeError as exc:
        raise ConfigError(f"fit options: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# The fitting engine (shared by joint, one-axis and transfer fits)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Core:
    """Raw engine result. natural: (E, A_1..A_K, alpha_1..alpha_K); samples: (n_boot, 2K+1) in the
    same order; at_bound: names of parameters whose estimate or interval reaches a bound;
    refit_starts: the bootstrap's start set as uncentred `FitOptions.starts`, for refits of subsets
    of the points (a held-out refit is a perturbation of the data, like a resample)."""

    natural: np.ndarray
    refit_starts: np.ndarray
    samples: np.ndarray
    counts: np.ndarray
    objective: float
    converged: bool
    boot_failed: float
    at_bound: tuple[str, ...]
    rmse_log: float
    r2_log: float

    def estimates(self, names: Sequence[str]) -> dict[str, Estimate]:
        return {
            name: Estimate.from_samples(self.natural[j], self.samples[:, j])
            for j, name in enumerate(names)
        }

    def diagnostics(
        self, n_points: int, extrapolation: tuple[Extrapolation, ...], warnings: Sequence[str]
    ) -> dict[str, Any]:
        """The `FitBase` fields of a fit of `n_points` points made by this engine result."""
        return {
            "n_points": n_points,
            "rmse_log": self.rmse_log,
            "r2_log": self.r2_log,
            "objective": self.objective,
            "converged": self.converged,
            "boot_failed": self.boot_failed,
            "extrapolation": extrapolation,
            "warnings": tuple(warnings),
            "samples": self.samples,
            "boot_counts": self.counts,
        }


def _default_grid(n_axes: int, log_y: np.ndarray) -> np.ndarray:
    """Centred starting grid scaled to the data: E a fraction of the smallest loss, each term at the
    centre of its axis a fraction of the mean loss, exponents from shallow to steep (675 joint
    starts, 45 one-axis starts)."""
    y_mean = np.log(np.mean(np.exp(log_y)))
    exps = (0.1, 0.3, 0.6, 1.0, 2.0)
    es = log_y.min() + np.log([0.05, 0.5, 0.9])
    terms = y_mean + np.log([0.02, 0.2, 1.0])
    return np.array(list(itertools.product(*([terms] * n_axes), es, *([exps] * n_axes))))


def _bounds(n_axes: int, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box for centred (a_k, e, alpha_k): log-scale terms within [min log L - 12, max log L + 2]."""
    low_scale, high_scale = log_y.min() - _LOG_SCALE_BELOW, log_y.max() + _LOG_SCALE_ABOVE
    lower = np.array([low_scale] * (n_axes + 1) + [EXPONENT_BOUNDS[0]] * n_axes)
    upper = np.array([high_scale] * (n_axes + 1) + [EXPONENT_BOUNDS[1]] * n_axes)
    return lower, upper


def _distinct_best(x: np.ndarray, f: np.ndarray, count: int, tol: float = 1e-2) -> list[np.ndarray]:
    """Up to `count` lowest-f end points that differ by more than `tol` in some parameter."""
    picked: list[np.ndarray] = []
    for i in np.argsort(f):
        if len(picked) == count or not np.isfinite(f[i]):
            break
        if all(np.abs(x[i] - p).max() > tol for p in picked):
            picked.append(x[i])
    return picked


def _boot_starts(ends: np.ndarray, f_ends: np.ndarray, count: int) -> np.ndarray:
    """Starts shared by every resample: the point estimate, the next-best distinct full-data optima,
    then the point estimate with its exponents scaled by 2, 1/2, 3, 1/3, ... (the centred
    parameterisation keeps each term's value at the centre of its axis, so these stay plausible
    while probing the flat exponent directions in which resamples differ most)."""
    picked = _distinct_best(ends, f_ends, count)
    theta = picked[0]
    n_axes = (theta.size - 1) // 2
    factor = 2.0
    while len(picked) < count:
        for scale in (factor, 1.0 / factor):
            start = theta.copy()
            start[n_axes + 1 :] *= scale
            picked.append(start)
        factor += 1.0
    return np.array(picked[:count])


def _solve(
    z: np.ndarray,
    log_y: np.ndarray,
    w: np.ndarray,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    opts: FitOptions,
    screen_iter: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Optimise G problems (G = max(len(z), len(w), len(lower))) from every start (S, p).

    lower, upper: (1 or G, p). screen_iter: run every start only this many iterations, then only
    the best start of each problem to convergence (None: every start to convergence). Returns per
    problem the best end point (G, p), its objective (G,) and convergence (G,), plus every
    (screened) end point (G*S, p) and its objective (G*S,).
    """
    n_groups = max(z.shape[0], w.shape[0], lower.shape[0])
    n_starts = starts.shape[0]
    screen = screen_iter is not None and n_starts > 1
    group = np.repeat(np.arange(n_groups), n_starts)
    x0 = np.tile(starts, (n_groups, 1))
    low = np.repeat(lower, n_starts, axis=0) if lower.shape[0] > 1 else lower[0]
    high = np.repeat(upper, n_starts, axis=0) if upper.shape[0] > 1 else upper[0]
    fun = _HuberLSE(z, log_y, w, group, opts.huber_delta)
    res = minimize_batch(fun, x0, low, high, max_iter=screen_iter if screen else opts.max_iter)
    f_all = np.where(np.isfinite(res.f), res.f, np.inf)
    flat = np.arange(n_groups) * n_starts + np.argmin(f_all.reshape(n_groups, n_starts), axis=1)
    if not screen:
        return res.x[flat], f_all[flat], res.converged[flat], res.x, f_all
    fun = _HuberLSE(z, log_y, w, np.arange(n_groups), opts.huber_delta)
    best = minimize_batch(fun, res.x[flat], lower, upper, max_iter=opts.max_iter)
    f_best = np.where(np.isfinite(best.f), best.f, np.inf)
    return best.x, f_best, best.converged, res.x, f_all


def _to_natural(theta: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Centred (a_k, e, alpha_k) rows -> natural (E, A_k, alpha_k) rows."""
    n_axes = centre.size
    log_a = theta[..., :n_axes] + theta[..., n_axes + 1 :] * centre
    with np.errstate(over="ignore"):
        return np.concatenate(
            [np.exp(theta[..., n_axes : n_axes + 1]), np.exp(log_a), theta[..., n_axes + 1 :]],
            axis=-1,
        )


def _internal_names(names: Sequence[str]) -> list[str]:
    """Natural names (E, A_k..., alpha_k...) in internal order (a_k..., e, alpha_k...)."""
    n_axes = (len(names) - 1) // 2
    return [*names[1 : 1 + n_axes], names[0], *names[1 + n_axes :]]


def _at_edge(theta: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(R, p) mask: parameter within 1e-6 of its lower or upper bound."""
    return (np.abs(theta - lower) <= 1e-6) | (np.abs(theta - upper) <= 1e-6)


def bootstrap_counts(n_points: int, opts: FitOptions) -> np.ndarray:
    """Resampling counts (n_boot, n_points): from `opts.resamples` or seeded multinomial draws."""
    dtype = np.uint16 if n_points < 65_535 else np.uint32
    if opts.resamples is not None:
        idx = np.asarray(opts.resamples)
        if idx.ndim != 2 or idx.shape[1] != n_points or idx.min() < 0 or idx.max() >= n_points:
            raise ConfigError(f"resamples: expected indices of shape (n_boot, {n_points}) in range")
        counts = np.zeros((idx.shape[0], n_points), dtype=dtype)
        np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1)
        return counts
    rng = np.random.default_rng(opts.seed)
    probs = np.full(n_points, 1.0 / n_points)
    return rng.multinomial(n_points, probs, size=opts.n_boot).astype(dtype)


def run_engine(
    log_x: np.ndarray,
    log_y: np.ndarray,
    opts: FitOptions,
    *,
    names: Sequence[str],
    counts: np.ndarray | None = None,
    boot_log_x: np.ndarray | None = None,
    fixed_e: np.ndarray | None = None,
) -> Core:
    """Fit log_y (P,) on log axes log_x (P, K) and bootstrap it.

    counts: resampling counts (n_boot, P), default from `opts`. boot_log_x (n_boot, P, K): axes per
    resample (default: log_x). fixed_e (1 + n_boot,): e = log E pinned for the point fit and each
    resample. `names` are the natural parameter names (E, A_k..., alpha_k...), used in warnings.
    """
    n_points, n_axes = log_x.shape
    centre = log_x.mean(axis=0)
    z = (log_x - centre)[None]
    lower, upper = _bounds(n_axes, log_y)
    if opts.starts is None:
        starts = _default_grid(n_axes, log_y)
    else:
        starts = np.array(np.atleast_2d(opts.starts), dtype=np.float64)
        if starts.shape[1] != 2 * n_axes + 1:
            raise ConfigError(f"starts: expected {2 * n_axes + 1} columns, got {starts.shape[1]}")
        starts[:, :n_axes] -= starts[:, n_axes + 1 :] * centre
    if counts is None:
        counts = bootstrap_counts(n_points, opts)
    n_boot = counts.shape[0]
    # Row 0 bounds the point fit, rows 1.. the resamples (they differ only when e is pinned).
    lower, upper = np.tile(lower, (1 + n_boot, 1)), np.tile(upper, (1 + n_boot, 1))
    if fixed_e is not None:
        lower[:, n_axes] = upper[:, n_axes] = np.log(fixed_e)
    fixed = lower[0] == upper[0]

    ones = np.ones((1, n_points))
    best, f_best, conv, ends, f_ends = _solve(z, log_y, ones, starts, lower[:1], upper[:1], opts)
    theta = best[0]
    terms = theta[:n_axes] - theta[n_axes + 1 :] * z[0]
    resid = np.logaddexp.reduce(np.column_stack([terms, np.full(n_points, theta[n_axes])]), axis=1)
    resid -= log_y
    ss_tot = float(np.sum((log_y - log_y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan")

    bound = _at_edge(theta[None], lower[:1], upper[:1])[0] & ~fixed
    samples = np.full((n_boot, theta.size), np.nan)
    failed = 0.0
    starts_b = _boot_starts(ends, f_ends, opts.boot_starts)
    if n_boot:
        z_boot = z if boot_log_x is None else boot_log_x - centre
        w_boot = counts.astype(np.float64)
        theta_b, f_b, conv_b, _, _ = _solve(
            z_boot, log_y, w_boot, starts_b, lower[1:], upper[1:], opts, _SCREEN_ITER
        )
        ok = np.isfinite(f_b)
        failed = float(1.0 - np.mean(ok & conv_b))
        theta_b[~ok] = np.nan
        samples = _to_natural(theta_b, centre)
        bound |= (_at_edge(theta_b, lower[1:], upper[1:]).mean(axis=0) > 0.025) & ~fixed
    at_bound = tuple(name for name, hit in zip(_internal_names(names), bound, strict=True) if hit)
    refit_starts = starts_b.copy()
    refit_starts[:, :n_axes] += refit_starts[:, n_axes + 1 :] * centre  # back to uncentred
    return Core(
        natural=_to_natural(theta, centre),
        refit_starts=refit_starts,
        samples=samples,
        counts=counts,
        objective=float(f_best[0]),
        converged=bool(conv[0]),
        boot_failed=failed,
        at_bound=at_bound,
        rmse_log=float(np.sqrt(np.mean(resid**2))),
        r2_log=r2,
    )


def predict_natural(natural: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """Loss (P,) at log axes log_x (P, K) for natural parameters (E, A_k..., alpha_k...)."""
    n_axes = log_x.shape[1]
    coef, exps = natural[1 : 1 + n_axes], natural[1 + n_axes :]
    return natural[0] + np.sum(coef * np.exp(-exps * log_x), axis=1)


# ----------------------------------------------------------------------------------------------
# Input checks, warnings and the leave-the-largest-out check
# ----------------------------------------------------------------------------------------------


def as_positive(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    """`values` as a 1-D float64 array of finite positive numbers, or a `UserError` naming it."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise UserError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise UserError(f"{name}: expected finite positive values (the fit is in log space)")
    return arr


def check_points(axes: dict[str, np.ndarray], n_points: int, n_params: int) -> None:
    """Every axis has one value per point and at least 3 distinct values; more points than
    parameters. Raises a `UserError` saying which requirement failed."""
    for name, values in axes.items():
        if values.size != n_points:
            raise UserError(f"{name}: expected {n_points} values (one per loss), got {values.size}")
        distinct = np.unique(values).size
        if distinct < 3:
            raise UserError(
                f"too few points to fit: {name} takes {distinct} distinct value(s), need at least 3"
            )
    if n_points <= n_params:
        raise UserError(f"too few points to fit: {n_points} points for {n_params} parameters")


def fit_warnings(
    core: Core, names: Sequence[str], roles: Sequence[str], spans: dict[str, np.ndarray]
) -> list[str]:
    """Warnings on sample size, span (of each array in `spans`), identifiability, convergence.

    roles: per name "scale" (E), "coefficient" (A, B, K) or "exponent" (alpha, beta, kappa); the
    relative-SE limit of each role is in `_REL_SE_LIMIT`.
    """
    out: list[str] = []
    n_points = core.counts.shape[1]
    if n_points < 3 * len(names):
        out.append(f"only {n_points} points for {len(names)} parameters")
    for axis, values in spans.items():
        decades = float(np.log10(values.max() / values.min()))
        if decades < MIN_DECADES:
            out.append(f"{axis} spans {decades:.2f} decades (< {MIN_DECADES})")
    out += [f"{name} reaches its bound: not identifiable from these data" for name in core.at_bound]
    for (name, est), role in zip(core.estimates(names).items(), roles, strict=True):
        limit = _REL_SE_LIMIT[role]
        if np.isfinite(est.se) and est.se > limit * abs(est.value):
            out.append(
                f"{name} is poorly identified: SE {est.se:.3g} > {limit:g} x |{est.value:.3g}|"
            )
    if not core.converged:
        out.append("the point fit stopped at the iteration limit")
    if core.boot_failed > 0.05:
        out.append(f"{100 * core.boot_failed:.1f} % of bootstrap resamples failed to converge")
    return out


def leave_largest_out(
    holdouts: dict[str, tuple[np.ndarray, float]],
    loss: np.ndarray,
    refit_predict: Callable[[np.ndarray], np.ndarray],
) -> tuple[tuple[Extrapolation, ...], list[str]]:
    """For each axis label -> (held-out mask, its threshold): refit on the other points with
    `refit_predict(keep)` (which returns predictions at ~keep, or raises `UserError` when the rest
    cannot be fitted) and score the held-out predictions."""
    out: list[Extrapolation] = []
    notes: list[str] = []
    for axis, (held, threshold) in holdouts.items():
        try:
            pred = refit_predict(~held)
        except UserError:
            notes.append(f"leave-largest-{axis}-out check skipped: too few points remain")
            continue
        err = np.log(pred) - np.log(loss[held])
        out.append(
            Extrapolation(
                axis=axis,
                threshold=float(threshold),
                n_held_out=int(held.sum()),
                rmse_log=float(np.sqrt(np.mean(err**2))),
                bias_log=float(np.mean(err)),
                max_rel_error=float(np.max(np.abs(pred / loss[held] - 1.0))),
            )
        )
    return tuple(out), notes


# ----------------------------------------------------------------------------------------------
# Public fits
# ----------------------------------------------------------------------------------------------


def _fit_law(
    axes: dict[str, np.ndarray], loss: np.ndarray, opts: FitOptions, names: tuple[str, ...]
) -> tuple[Core, tuple[Extrapolation, ...], tuple[str, ...]]:
    """Shared body of the joint and one-axis fits: engine, leave-largest-out, warnings."""
    check_points(axes, loss.size, len(names))
    log_x, log_y = np.log(np.column_stack(list(axes.values()))), np.log(loss)
    core = run_engine(log_x, log_y, opts, names=names)
    extrap: tuple[Extrapolation, ...] = ()
    notes: list[str] = []
    if opts.extrapolate:
        refit_opts = replace(
            opts, n_boot=0, resamples=None, extrapolate=False, starts=core.refit_starts
        )

        def refit_predict(keep: np.ndarray) -> np.ndarray:
            check_points({k: v[keep] for k, v in axes.items()}, int(keep.sum()), len(names))
            part = run_engine(log_x[keep], log_y[keep], refit_opts, names=names)
            return predict_natural(part.natural, log_x[~keep])

        holdouts = {k: (v == v.max(), float(v.max())) for k, v in axes.items()}
        extrap, notes = leave_largest_out(holdouts, loss, refit_predict)
    roles = ["scale"] + ["coefficient"] * len(axes) + ["exponent"] * len(axes)
    warns = fit_warnings(core, names, roles, axes)
    return core, extrap, tuple(warns + notes)


def fit_joint(
    n_params: np.ndarray | Sequence[float],
    n_samples: np.ndarray | Sequence[float],
    loss: np.ndarray | Sequence[float],
    **options: Any,
) -> JointFit:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta to points (N, D, loss), one per run.

    n_params: encoder parameters N (P,); n_samples: training samples D (P,) (records for ECG
    models, tokens for language models); loss: (P,) positive. Options: see `FitOptions`.
    """
    opts = fit_options(options)
    n_arr, d_arr = as_positive("N", n_params), as_positive("D", n_samples)
    y = as_positive("loss", loss)
    core, extrap, warns = _fit_law({"N": n_arr, "D": d_arr}, y, opts, JointFit.param_names)
    return JointFit(
        **core.diagnostics(y.size, extrap, warns),
        n_range=(float(n_arr.min()), float(n_arr.max())),
        d_range=(float(d_arr.min()), float(d_arr.max())),
        **core.estimates(JointFit.param_names),
    )


def fit_axis(
    x: np.ndarray | Sequence[float],
    loss: np.ndarray | Sequence[float],
    *,
    axis: str = "N",
    **options: Any,
) -> AxisFit:
    """Fit L(x) = E + A x^-alpha to points (x, loss): x is N, D or another count (e.g. labels).

    `axis` names x in reports and warnings. Options: see `FitOptions`.
    """
    opts = fit_options(options)
    x_arr, y = as_positive(axis, x), as_positive("loss", loss)
    core, extrap, warns = _fit_law({axis: x_arr}, y, opts, AxisFit.param_names)
    return AxisFit(
        **core.diagnostics(y.size, extrap, warns),
        axis=axis,
        x_range=(float(x_arr.min()), float(x_arr.max())),
        **core.estimates(AxisFit.param_names),
    )
