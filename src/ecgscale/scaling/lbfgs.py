"""Batched L-BFGS with box bounds: thousands of small independent problems optimised together.

Why: a bootstrap of a scaling-law fit is thousands of 3-5 parameter problems that differ only in
their weights. Optimising them one at a time with scipy costs minutes of interpreter overhead; here
every problem has its own L-BFGS memory, line search and stopping state, and each loop is one
vectorised objective evaluation over all problems still running, each at its own trial point. A
problem whose line search ends takes its next direction at once, so no problem waits for another's
line search; problems that have stopped are dropped from later evaluations.

Bounds are handled by projection (a projected-gradient L-BFGS): components at a bound whose gradient
points outward are frozen for the step and trial points are clipped into the box. A bound with
lower == upper fixes that parameter. The line search brackets a weak-Wolfe point (Lewis & Overton):
it halves the step when Armijo fails and doubles it when the curvature condition fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun(x, rows) -> (f, g): objective (R,) and gradient (R, p) at x (R, p) of problems `rows` (R,).
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

_C1 = 1e-4  # Armijo (sufficient decrease) constant
_C2 = 0.9  # weak-Wolfe curvature constant


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Final state of every problem: `x` (B, p), `f` (B,), iterations (B,), and `converged` (B,):
    True when it stopped on a tolerance or at a line search that found no decrease (the usual end at
    floating-point precision), False when it hit `max_iter` or started at a non-finite f."""

    x: np.ndarray
    f: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


def _direction(
    pg: np.ndarray, s_mem: np.ndarray, y_mem: np.ndarray, rho: np.ndarray, gamma: np.ndarray
) -> np.ndarray:
    """-H pg for each row by the L-BFGS two-loop recursion, batched over rows; memory slot m-1 is
    the newest and slots with rho == 0 are empty (they contribute nothing)."""
    m = rho.shape[1]
    q = pg.copy()
    coef = np.empty_like(rho)
    for j in range(m - 1, -1, -1):
        coef[:, j] = rho[:, j] * np.einsum("ij,ij->i", s_mem[:, j], q)
        q -= coef[:, j, None] * y_mem[:, j]
    r = gamma[:, None] * q
    for j in range(m):
        b = rho[:, j] * np.einsum("ij,ij->i", y_mem[:, j], r)
        r += s_mem[:, j] * (coef[:, j] - b)[:, None]
    return -r


def minimize_batch(
    fun: BatchObjective,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    max_iter: int = 2000,
    memory: int = 10,
    ftol: float = 1e-13,
    gtol: float = 1e-12,
    max_ls: int = 40,
) -> BatchResult:
    """Minimise B independent objectives from `x0` (B, p) within [lower, upper] ((B, p) or (p,)).

    A problem stops when its projected gradient's largest component is <= `gtol`, when one step
    lowers f by no more than `ftol * max(|f|, 1e-300)`, or when its line search finds no decrease
    within `max_ls` trials. `max_iter` bounds the iterations (accepted steps) of each problem.
    """
    x = np.array(x0, dtype=np.float64)
    n_prob, p = x.shape
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (n_prob, p))
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (n_prob, p))
    fixed = lower == upper
    np.clip(x, lower, upper, out=x)
    f, g = fun(x, np.arange(n_prob))

    s_mem = np.zeros((n_prob, memory, p))
    y_mem = np.zeros((n_prob, memory, p))
    rho = np.zeros((n_prob, memory))  # 1 / (s . y); 0 marks an empty slot
    gamma = np.zeros(n_prob)  # 0: no curvature pair yet (the first step is scaled by 1/|pg|)
    n_iter = np.zeros(n_prob, dtype=np.int64)
    active = np.isfinite(f)
    converged = np.zeros(n_prob, dtype=bool)
    # Line-search state: direction, slope, step and its bracket, trials, best Armijo point so far.
    d = np.zeros((n_prob, p))
    slope = np.zeros(n_prob)
    t = np.ones(n_prob)
    t_lo = np.zeros(n_prob)
    t_hi = np.full(n_prob, np.inf)
    n_ls = np.zeros(n_prob, dtype=np.int64)
    x_c, f_c, g_c = x.copy(), f.copy(), g.copy()
    found = np.zeros(n_prob, dtype=bool)

    def new_direction(rows: np.ndarray) -> None:
        """Start an iteration at x[rows]: stop rows at a stationary point, else set a direction."""
        xa, ga = x[rows], g[rows]
        frozen = fixed[rows] | ((xa <= lower[rows]) & (ga > 0)) | ((xa >= upper[rows]) & (ga < 0))
        pg = np.where(frozen, 0.0, ga)
        small = np.abs(pg).max(axis=1) <= gtol
        active[rows[small]] = False
        converged[rows[small]] = True
        rows, pg, frozen = rows[~small], pg[~small], frozen[~small]
        if rows.size == 0:
            return
        norm = np.linalg.norm(pg, axis=1)
        fresh = gamma[rows] == 0
        scale = np.where(fresh, 1.0 / norm, gamma[rows])
        step = _direction(pg, s_mem[rows], y_mem[rows], rho[rows], scale)
        step[frozen] = 0.0
        sl = np.einsum("ij,ij->i", pg, step)
        bad = ~(sl < 0)
        if bad.any():  # not a descent direction: forget the memory, take a scaled gradient step
            reset = rows[bad]
            rho[reset] = 0.0
            gamma[reset] = 0.0
            step[bad] = -pg[bad] / norm[bad, None]
            sl[bad] = -norm[bad]
        d[rows], slope[rows] = step, sl
        t[rows], t_lo[rows], t_hi[rows], n_ls[rows] = 1.0, 0.0, np.inf, 0
        found[rows] = False

    def end_line_search(rows: np.ndarray) -> None:
        """Accept each row's best Armijo point, update its memory, then stop it or continue."""
        n_iter[rows] += 1
        stalled = rows[~found[rows]]
        active[stalled] = False
        converged[stalled] = True
        rows = rows[found[rows]]
        step, dg = x_c[rows] - x[rows], g_c[rows] - g[rows]
        f_old, f_new = f[rows], f_c[rows]
        x[rows], f[rows], g[rows] = x_c[rows], f_new, g_c[rows]
        sy = np.einsum("ij,ij->i", step, dg)
        yy = np.einsum("ij,ij->i", dg, dg)
        take = (yy > 0) & (sy > 1e-12 * yy)
        upd = rows[take]
        if upd.size:
            s_mem[upd] = np.roll(s_mem[upd], -1, axis=1)
            y_mem[upd] = np.roll(y_mem[upd], -1, axis=1)
            rho[upd] = np.roll(rho[upd], -1, axis=1)
            s_mem[upd, -1], y_mem[upd, -1], rho[upd, -1] = step[take], dg[take], 1.0 / sy[take]
            gamma[upd] = sy[take] / yy[take]
        scale_f = np.maximum(np.maximum(np.abs(f_old), np.abs(f_new)), 1e-300)
        tiny = (f_old - f_new) <= ftol * scale_f
        active[rows[tiny]] = False
        converged[rows[tiny]] = True
        out_of_iter = rows[~tiny & (n_iter[rows] >= max_iter)]
        active[out_of_iter] = False
        new_direction(rows[~tiny & (n_iter[rows] < max_iter)])

    new_direction(np.flatnonzero(active))
    while True:
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        xa, fa = x[rows], f[rows]
        raw = xa + t[rows, None] * d[rows]
        xt = np.clip(raw, lower[rows], upper[rows])
        ft, gt = fun(xt, rows)
        decrease = np.einsum("ij,ij->i", g[rows], xt - xa)
        armijo = np.isfinite(ft) & (ft <= fa + _C1 * decrease) & (ft <= fa)
        clipped = (xt != raw).any(axis=1)
        curv = clipped | (np.einsum("ij,ij->i", gt, d[rows]) >= _C2 * slope[rows])
        better = armijo & (~found[rows] | (ft < f_c[rows]))
        sel = rows[better]
        x_c[sel], f_c[sel], g_c[sel] = xt[better], ft[better], gt[better]
        found[sel] = True
        t_hi[rows[~armijo]] = t[rows[~armijo]]
        grow = rows[armijo & ~curv]
        t_lo[grow] = t[grow]
        t[rows] = np.where(np.isinf(t_hi[rows]), 2.0 * t_lo[rows], 0.5 * (t_lo[rows] + t_hi[rows]))
        n_ls[rows] += 1
        finished = armijo & curv | (n_ls[rows] >= max_ls)
        if finished.any():
            end_line_search(rows[finished])

    return BatchResult(x=x, f=f, n_iter=n_iter, converged=converged)
