"""Time of one multi-label linear probe on 20,000 x 512 features, against scikit-learn.

    .venv/bin/python benchmarks/bench_probe.py [--records 20000] [--dim 512] [--labels 5 26]
        [--threads N] [--exact]

Synthetic features (64 latent factors mixed into `dim` correlated dimensions, float32) and labels
drawn from a planted logistic model; 70/15/15 train/validation/test split. For each label count:

* ecgscale probe: the whole job - standardise, fit the default C grid along a warm-started path,
  choose C on validation, report on test (`linear_probe` with default options);
* ecgscale at one C: the same solver at the chosen C only (`c_grid=[C]`);
* scikit-learn: `OneVsRestClassifier(LogisticRegression(C=C))` (lbfgs, default tolerance) at the
  chosen C on the same standardised features, one fit per label - a single C, not a path.

The ratio column divides scikit-learn's single-C time by each ecgscale time. The agreement columns
compare test probabilities and test BCE of the single-C fits. A warm-up probe on a tiny problem
runs first, so that the one-off cost of torch's first optimizer step (importing torch._dynamo,
printed) is not charged to the first row. `--threads` caps torch and the BLAS behind numpy and
scikit-learn alike (default: leave both as they are); on a busy machine one thread is fastest.
`--exact` also fits scikit-learn to tol=1e-10 (slow) and prints how far each single-C fit's test
probabilities are from that exact optimum.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from threadpoolctl import threadpool_limits

from ecgscale.evaluate.probe import linear_probe


def make_data(
    n: int, dim: int, labels: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 64))
    x = latent @ rng.normal(size=(64, dim)) + rng.normal(size=(n, dim))
    logits = latent @ rng.normal(scale=0.25, size=(64, labels)) - rng.uniform(1, 4, size=labels)
    y = (rng.random((n, labels)) < 1 / (1 + np.exp(-logits))).astype(np.int8)
    order = rng.permutation(n)
    cut1, cut2 = int(0.7 * n), int(0.85 * n)
    return x.astype(np.float32), y, (order[:cut1], order[cut1:cut2], order[cut2:])


def bce(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 26])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--exact", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    print(
        f"{args.records} x {args.dim} float32 features; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at start {os.getloadavg()[0]:.1f}"
    )
    x, y, (tr, va, te) = make_data(200, 16, 2)
    start = time.perf_counter()
    linear_probe(x, y, "multilabel", tr, va, te)
    print(f"warm-up probe (one-off torch optimizer import): {time.perf_counter() - start:.1f} s\n")

    header = (
        f"{'labels':>6} {'probe (s)':>10} {'fits':>5} {'C':>8} {'probe@C (s)':>12} "
        f"{'sklearn@C (s)':>14} {'ratio probe':>12} {'ratio @C':>9} {'max |dp|':>9} {'dBCE':>9}"
    )
    print(header)
    for k in args.labels:
        x, y, (tr, va, te) = make_data(args.records, args.dim, k)
        start = time.perf_counter()
        probe = linear_probe(x, y, "multilabel", tr, va, te)
        t_probe = time.perf_counter() - start

        start = time.perf_counter()
        single = linear_probe(x, y, "multilabel", tr, va, te, c_grid=[probe.c])
        t_single = time.perf_counter() - start

        start = time.perf_counter()
        mean, std = x[tr].mean(0, dtype=np.float64), x[tr].std(0, dtype=np.float64)
        xs_tr, xs_te = (x[tr] - mean) / std, (x[te] - mean) / std
        ovr = OneVsRestClassifier(LogisticRegression(C=probe.c, max_iter=1000)).fit(xs_tr, y[tr])
        p_sk = ovr.predict_proba(xs_te)
        t_sk = time.perf_counter() - start

        diff = np.abs(single.test_outputs - p_sk).max()
        dloss = single.test_loss - bce(y[te], p_sk)
        print(
            f"{k:>6} {t_probe:>10.2f} {len(probe.val_losses):>5} {probe.c:>8.1e} "
            f"{t_single:>12.2f} {t_sk:>14.2f} {t_sk / t_probe:>12.1f} {t_sk / t_single:>9.1f} "
            f"{diff:>9.1e} {dloss:>9.1e}"
        )
        if args.exact:
            tight = LogisticRegression(C=probe.c, tol=1e-10, max_iter=100_000)
            p_exact = OneVsRestClassifier(tight).fit(xs_tr, y[tr]).predict_proba(xs_te)
            ours, theirs = np.abs(single.test_outputs - p_exact), np.abs(p_sk - p_exact)
            print(
                f"{'':>6} max |p - exact|: ecgscale {ours.max():.1e}, "
                f"scikit-learn (default tol) {theirs.max():.1e}"
            )
    print(f"\nload average at end {os.getloadavg()[0]:.1f} (the machine may be shared)")


if __name__ == "__main__":
    main()
