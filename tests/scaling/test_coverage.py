"""Interval coverage: data simulated from known parameters, refitted many times; the 95 % bootstrap
intervals must contain the truth in about 95 % of repetitions."""

from __future__ import annotations

import numpy as np

from ecgscale.scaling import fit_axis

TRUTH = {"E": 1.5, "A": 20.0, "alpha": 0.4}
REPETITIONS = 100


def test_bootstrap_intervals_cover_the_truth() -> None:
    x = np.geomspace(1e5, 1e8, 24)
    clean = TRUTH["E"] + TRUTH["A"] * x ** -TRUTH["alpha"]
    rng = np.random.default_rng(2024)
    hits = dict.fromkeys(TRUTH, 0)
    narrow_hits = dict.fromkeys(TRUTH, 0)
    for rep in range(REPETITIONS):
        # Log-normal noise of 0.05 %, inside the Huber threshold: the least-squares regime.
        loss = clean * np.exp(rng.normal(0, 5e-4, x.size))
        fit = fit_axis(x, loss, n_boot=200, seed=rep, boot_starts=1, extrapolate=False)
        for name, value in TRUTH.items():
            est = getattr(fit, name)
            hits[name] += est.low <= value <= est.high
            # A broken (68 %) interval from the same samples, to show the test can fail.
            low, high = np.percentile(fit.sample(name), [16, 84])
            narrow_hits[name] += low <= value <= high
    for name in TRUTH:
        assert 0.85 <= hits[name] / REPETITIONS <= 1.0, (name, hits[name])
        assert narrow_hits[name] / REPETITIONS < 0.85, (name, narrow_hits[name])
