"""Joint and one-axis fits: the published Chinchilla replication, known truths, diagnostics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgscale.errors import ConfigError, UserError
from ecgscale.scaling import fit_axis, fit_joint, hoffmann_grid

CHINCHILLA = (
    Path(__file__).resolve().parents[2].parent / "shared/reference/chinchilla_epoch_extracted.csv"
)


@pytest.fixture(scope="module")
def chinchilla() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch's protocol (shared/reference/SOURCES.md): D = C / 6N; keep losses strictly below the
    5th-largest, which drops exactly the 5 highest-loss points."""
    assert CHINCHILLA.is_file(), f"expected the reference data at {CHINCHILLA}"
    df = pd.read_csv(CHINCHILLA)
    assert len(df) == 245
    df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-5]]
    n = df["Model Size"].to_numpy()
    return n, df["Training FLOP"].to_numpy() / (6 * n), df["loss"].to_numpy()


def test_chinchilla_reproduces_the_published_replication(chinchilla) -> None:
    n, d, loss = chinchilla
    assert loss.size == 240
    # Epoch's resamples: np.random.seed(42), then np.random.choice(240 indices, 240) 4,000 times.
    legacy = np.random.RandomState(42)
    resamples = np.array([legacy.choice(240, 240, replace=True) for _ in range(4000)])
    fit = fit_joint(n, d, loss, resamples=resamples, extrapolate=False)

    # Epoch's L-BFGS routine (i) ends at summed Huber 0.00101827403 (notebook cell 18).
    assert fit.objective == pytest.approx(0.00101827403, rel=1e-6)
    # Besiroglu et al. (2024), table of estimates; tolerances cover their two routines' spread.
    assert fit.E.value == pytest.approx(1.8172, abs=0.005)
    assert fit.alpha.value == pytest.approx(0.3478, abs=0.003)
    assert fit.beta.value == pytest.approx(0.3658, abs=0.003)
    assert fit.A.value == pytest.approx(482.01, rel=0.03)
    assert fit.B.value == pytest.approx(2085.43, rel=0.05)
    # Bootstrap standard errors (notebook cell 25) and 95 % percentile intervals (cell 26).
    published_se = {"E": 0.02566, "A": 124.52, "B": 1293.28, "alpha": 0.01540, "beta": 0.02060}
    for name, se in published_se.items():
        assert getattr(fit, name).se == pytest.approx(se, rel=0.03), name
    published_ci = {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
    for name, (low, high) in published_ci.items():
        est = getattr(fit, name)
        assert (est.low, est.high) == pytest.approx((low, high), abs=0.002), name
    assert fit.boot_failed == 0.0
    assert fit.warnings == ()


def test_chinchilla_default_grid_and_hoffmann_grid_agree(chinchilla) -> None:
    n, d, loss = chinchilla
    default = fit_joint(n, d, loss, n_boot=0, extrapolate=False)
    hoffmann = fit_joint(n, d, loss, n_boot=0, extrapolate=False, starts=hoffmann_grid()[::45])
    assert hoffmann_grid().shape == (4500, 5)
    assert hoffmann.objective == pytest.approx(default.objective, rel=1e-9)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(hoffmann, name).value == pytest.approx(
            getattr(default, name).value, rel=1e-5
        )


def _joint_data(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e8, 6), np.geomspace(1e4, 1e7, 6)))
    loss = 0.5 + 20 * n**-0.3 + 50 * d**-0.4
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0, noise, n.size))


def test_joint_fit_recovers_known_parameters() -> None:
    n, d, loss = _joint_data(noise=0.002)
    fit = fit_joint(n, d, loss, n_boot=300)
    truth = {"E": 0.5, "A": 20.0, "B": 50.0, "alpha": 0.3, "beta": 0.4}
    for name, value in truth.items():  # interval coverage itself is tested in test_coverage.py
        est = getattr(fit, name)
        assert abs(est.value - value) < 3 * est.se, name
        assert est.se < 0.05 * value, name
        assert est.low < est.value < est.high, name
    assert fit.r2_log > 0.99
    assert fit.rmse_log < 0.003
    np.testing.assert_allclose(fit.predict(n, d), loss, rtol=0.01)
    assert {e.axis for e in fit.extrapolation} == {"N", "D"}
    assert all(e.n_held_out == 6 and e.max_rel_error < 0.01 for e in fit.extrapolation)
    assert fit.warnings == ()


def test_leave_largest_out_flags_a_curve_that_bends() -> None:
    # The law holds up to 1e7 parameters; the largest model is 10 % worse than the law predicts.
    n = np.geomspace(1e4, 1e8, 12)
    loss = 1.0 + 5 * n**-0.25
    bent = loss.copy()
    bent[-1] *= 1.10
    clean_fit = fit_axis(n, loss, n_boot=0)
    bent_fit = fit_axis(n, bent, n_boot=0)
    assert clean_fit.extrapolation[0].max_rel_error < 1e-3
    assert bent_fit.extrapolation[0].max_rel_error > 0.05
    assert bent_fit.extrapolation[0].bias_log < 0  # the refit predicts a lower loss than observed


def test_axis_fit_along_d_and_seeded_bootstrap_is_deterministic() -> None:
    d = np.geomspace(1e3, 1e6, 10)
    loss = (0.8 + 3 * d**-0.35) * np.exp(np.random.default_rng(3).normal(0, 0.003, d.size))
    first = fit_axis(d, loss, axis="D", n_boot=200, seed=7)
    again = fit_axis(d, loss, axis="D", n_boot=200, seed=7)
    other = fit_axis(d, loss, axis="D", n_boot=200, seed=8)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)
    assert first.alpha.low <= 0.35 <= first.alpha.high
    assert first.to_dict()["law"] == "L = E + A D^-alpha"


def test_warnings_for_short_span_and_unidentifiable_parameters() -> None:
    # One decade of N, and a curve with no visible floor: E is not identifiable.
    n = np.geomspace(1e6, 1e7, 8)
    loss = 3 * n**-0.2 * np.exp(np.random.default_rng(1).normal(0, 0.01, n.size))
    fit = fit_axis(n, loss, n_boot=200)
    text = " | ".join(fit.warnings)
    assert "N spans 1.00 decades (< 1.5)" in text
    assert "only 8 points for 3 parameters" in text
    assert "E reaches its bound" in text or "E is poorly identified" in text


def test_too_few_points_and_bad_inputs_are_user_errors() -> None:
    with pytest.raises(UserError, match="N takes 2 distinct value"):
        fit_axis([1e5, 1e5, 1e6, 1e6], [2.0, 2.1, 1.5, 1.6])
    with pytest.raises(UserError, match="5 points for 5 parameters"):
        fit_joint([1e5, 1e6, 1e7, 1e8, 1e9], [1e3, 1e4, 1e5, 1e3, 1e4], [3, 2.5, 2, 1.9, 1.8])
    with pytest.raises(UserError, match="loss: expected finite positive values"):
        fit_axis([1e5, 1e6, 1e7, 1e8], [2.0, -1.0, 1.5, 1.4])
    with pytest.raises(UserError, match="N: expected 4 values"):
        fit_axis([1e5, 1e6, 1e7], [2.0, 1.8, 1.5, 1.4])
    with pytest.raises(ConfigError, match="unexpected keyword"):
        fit_axis([1e5, 1e6, 1e7, 1e8], [2.0, 1.8, 1.5, 1.4], n_bootstrap=10)
