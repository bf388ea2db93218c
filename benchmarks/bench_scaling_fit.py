"""Joint-fit time with 4,000 bootstrap resamples on the Chinchilla data (target: under 30 s).

Usage: .venv/bin/python benchmarks/bench_scaling_fit.py [--points 245|240] [--n-boot 4000]
       [--loop-resamples 100]

Side by side, in one run:
- ecgscale: `fit_joint` as users call it (675-start grid, 4,000 resamples optimised together as one
  batched L-BFGS problem from 3 starts each, leave-largest-out refits), wall and CPU time;
- loop: the conventional scipy L-BFGS-B fit per resample (same summed log-space Huber objective and
  analytic gradient, one start per resample at the full-data optimum), timed on `--loop-resamples`
  resamples and projected to 4,000.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from ecgscale.scaling import fit_joint

DATA = (
    Path(__file__).resolve().parents[1].parent / "shared/reference/chinchilla_epoch_extracted.csv"
)
DELTA = 1e-3


def _load(points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(DATA)
    if points == 240:  # Epoch's protocol: drop the 5 highest-loss points
        df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-5]]
    n = df["Model Size"].to_numpy()
    return n, df["Training FLOP"].to_numpy() / (6 * n), df["loss"].to_numpy()


def _huber_objective(theta: np.ndarray, log_n, log_d, log_l, w) -> tuple[float, np.ndarray]:
    """Summed weighted Huber loss of log L - LSE(a - alpha log N, b - beta log D, e), gradient."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    ex = np.exp(terms - top)
    total = ex.sum(axis=0)
    r = top + np.log(total) - log_l
    dh = np.clip(r, -DELTA, DELTA)
    f = float(np.sum(w * dh * (r - 0.5 * dh)))
    c = w * dh * ex / total
    grad = np.array(
        [c[0].sum(), c[1].sum(), c[2].sum(), -(c[0] * log_n).sum(), -(c[1] * log_d).sum()]
    )
    return f, grad


def _loop(n, d, loss, start: np.ndarray, counts: np.ndarray) -> float:
    """Seconds for scipy L-BFGS-B over the resamples in `counts` (rows of multinomial counts)."""
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    t0 = time.perf_counter()
    for w in counts:
        minimize(_huber_objective, start, args=(log_n, log_d, log_l, w), jac=True,
                 method="L-BFGS-B")  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, choices=(245, 240), default=245)
    parser.add_argument("--n-boot", type=int, default=4000)
    parser.add_argument("--loop-resamples", type=int, default=100)
    args = parser.parse_args()
    n, d, loss = _load(args.points)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    fit = fit_joint(n, d, loss, n_boot=args.n_boot, seed=0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    start = np.array([np.log(fit.A.value), np.log(fit.B.value), np.log(fit.E.value),
                      fit.alpha.value, fit.beta.value])  # fmt: skip
    loop_s = _loop(n, d, loss, start, fit.boot_counts[: args.loop_resamples].astype(np.float64))
    projected = loop_s / args.loop_resamples * args.n_boot

    print(f"Chinchilla joint fit, {loss.size} points, {args.n_boot} bootstrap resamples")
    for name, est in fit.estimates().items():
        print(
            f"  {name:5s} {est.value:10.4g}  SE {est.se:8.3g}  95 % [{est.low:.4g}, {est.high:.4g}]"
        )
    print(f"  warnings: {list(fit.warnings) or 'none'}")
    print()
    print(f"{'method':48s} {'wall s':>8s} {'CPU s':>8s}")
    print(f"{'ecgscale fit_joint (grid + batched bootstrap)':48s} {wall:8.1f} {cpu:8.1f}")
    label = f"scipy L-BFGS-B loop, {args.loop_resamples} resamples measured"
    print(f"{label:48s} {loop_s:8.1f} {'':>8s}")
    print(f"{'scipy loop projected to ' + str(args.n_boot):48s} {projected:8.1f} {'':>8s}")
    print(
        f"speed-up, whole fit_joint vs the loop's bootstrap alone: {projected / wall:.1f}x (wall)"
    )
    verdict = "meets" if wall < 30 else "misses"
    print(f"target: under 30 s wall -> {verdict} ({wall:.1f} s)")


if __name__ == "__main__":
    main()
