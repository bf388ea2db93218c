"""Compute-optimal allocation, exponent comparisons, saturation and label scaling."""

from __future__ import annotations

import numpy as np
import pytest

from ecgscale.errors import UserError
from ecgscale.scaling import (
    FlopsModel,
    compare_exponents,
    compute_optimal,
    fit_axis,
    fit_flops_model,
    fit_joint,
    fit_label_scaling,
    optimal_allocation,
    saturation,
)

TRUTH = {"E": 0.5, "A": 20.0, "B": 50.0, "alpha": 0.3, "beta": 0.4}


@pytest.fixture(scope="module")
def joint():
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e8, 5), np.geomspace(1e4, 1e7, 5)))
    t = TRUTH
    loss = t["E"] + t["A"] * n ** -t["alpha"] + t["B"] * d ** -t["beta"]
    loss = loss * np.exp(np.random.default_rng(0).normal(0, 0.002, n.size))
    return fit_joint(n, d, loss, n_boot=300, extrapolate=False)


def test_optimal_allocation_matches_brute_force() -> None:
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e4, 1e8, 5), np.geomspace(1e4, 1e8, 5)))
    fit = fit_joint(n, d, 0.5 + 50 * n**-0.4 + 80 * d**-0.3, n_boot=0, extrapolate=False)
    flops = FlopsModel(coef=3.0, exponent=0.8)  # a non-6N compute model
    budget = 1e15
    grid = np.geomspace(1e2, 1e12, 400_001)
    predicted = fit.predict(grid, budget / flops.per_sample(grid))
    n_opt, d_opt = optimal_allocation(fit, budget, flops)
    assert float(n_opt) == pytest.approx(grid[np.argmin(predicted)], rel=1e-3)
    assert float(d_opt * flops.per_sample(n_opt)) == pytest.approx(budget)
    six_n = optimal_allocation(fit, [1e15, 1e17])[0]  # default C = 6 N D
    a = fit.beta.value / (fit.alpha.value + fit.beta.value)
    assert six_n[1] / six_n[0] == pytest.approx(100**a)


def test_compute_optimal_exponents_and_shares(joint) -> None:
    budgets = [1e15, 1e16]
    opt = compute_optimal(joint, budgets)
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    assert opt.n_exponent.low <= a_true <= opt.n_exponent.high
    assert opt.n_exponent.value + opt.d_exponent.value == pytest.approx(1.0)
    alpha, beta = joint.alpha.value, joint.beta.value
    assert opt.data_share.value == pytest.approx(alpha / (alpha + beta))
    # N* grows by 10^a per decade of compute; C = 6 N* D* holds at the optimum.
    assert opt.n_opt[1].value / opt.n_opt[0].value == pytest.approx(10**opt.n_exponent.value)
    for c, n, d in zip(opt.compute, opt.n_opt, opt.d_opt, strict=True):
        assert 6 * n.value * d.value == pytest.approx(c)
        assert n.low < n.value < n.high
    assert opt.loss_opt[1].value < opt.loss_opt[0].value
    with pytest.raises(UserError, match="needs a joint fit"):
        compute_optimal(fit_axis([1e5, 1e6, 1e7, 1e8], [2.0, 1.7, 1.5, 1.4], n_boot=0), 1e15)


def test_flops_model_fit() -> None:
    n = np.array([1e5, 1e6, 1e7, 1e8])
    model = fit_flops_model(n, 18.0 * n**0.9)
    assert model.coef == pytest.approx(18.0)
    assert model.exponent == pytest.approx(0.9)
    assert model.max_rel_error < 1e-9
    with pytest.raises(UserError, match="n_params takes one value"):
        fit_flops_model([1e5, 1e5], [1.0, 2.0])


@pytest.fixture(scope="module")
def two_families():
    n = np.geomspace(1e5, 1e8, 10)
    rng = np.random.default_rng(5)
    fits = []
    for alpha in (0.3, 0.6):
        loss = (0.4 + 30 * n**-alpha) * np.exp(rng.normal(0, 0.003, n.size))
        fits.append(fit_axis(n, loss, n_boot=300, extrapolate=False))
    return fits


def test_compare_exponents(two_families) -> None:
    slow, fast = two_families
    cmp = compare_exponents(fast, slow, label_x="cnn", label_y="transformer")
    assert cmp.ratio.low <= 2.0 <= cmp.ratio.high
    assert cmp.multiplier.value == pytest.approx(10**cmp.ratio.value)
    assert cmp.statement.startswith(
        "to match a 10x increase in parameters of cnn, transformer needs"
    )
    with pytest.raises(UserError, match="'beta' is not a parameter"):
        compare_exponents(fast, slow, param="beta")


def test_saturation() -> None:
    n = np.geomspace(1e5, 1e9, 12)
    rng = np.random.default_rng(2)
    steep = (1.0 + 1e3 * n**-0.9) * np.exp(rng.normal(0, 0.003, n.size))  # flat at the top
    shallow = (1.0 + 5 * n**-0.1) * np.exp(rng.normal(0, 0.003, n.size))  # still falling
    flat = saturation(fit_axis(n, steep, n_boot=300, extrapolate=False))
    falling = saturation(fit_axis(n, shallow, n_boot=300, extrapolate=False))
    assert flat.saturated and not falling.saturated
    assert flat.at == {"N": 1e9}
    assert falling.reducible.low > 0.5


def test_label_scaling_per_group() -> None:
    labels = np.geomspace(10, 1e4, 8)
    rng = np.random.default_rng(4)
    loss = np.concatenate([0.3 + 2 * labels**-0.5, 0.6 + 2 * labels**-0.2])
    loss = loss * np.exp(rng.normal(0, 0.003, loss.size))
    groups = ["frequent"] * 8 + ["tail"] * 8
    fits = fit_label_scaling(np.tile(labels, 2), loss, groups, n_boot=200, extrapolate=False)
    assert set(fits) == {"frequent", "tail"}
    assert fits["frequent"].axis == "labels"
    assert fits["frequent"].alpha.low <= 0.5 <= fits["frequent"].alpha.high
    assert fits["tail"].alpha.low <= 0.2 <= fits["tail"].alpha.high
    with pytest.raises(UserError, match="label group 'tail': too few points"):
        fit_label_scaling(
            [10, 100, 1e3, 1e4, 10, 100, 1e3],
            [1, 0.8, 0.7, 0.65, 1, 0.9, 0.85],
            ["frequent"] * 4 + ["tail"] * 3,
            n_boot=0,
        )
