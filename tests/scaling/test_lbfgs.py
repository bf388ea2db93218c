"""Batched L-BFGS: independent problems with known minima, bounds, fixed parameters."""

from __future__ import annotations

import numpy as np

from ecgscale.scaling.lbfgs import minimize_batch


def _rosenbrock(scale: np.ndarray):
    """Scaled 2-D Rosenbrock per row: minimum at (1, 1) for every scale."""

    def fun(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = scale[rows]
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + s * (b - a**2) ** 2
        g = np.column_stack([-2 * (1 - a) - 4 * s * a * (b - a**2), 2 * s * (b - a**2)])
        return f, g

    return fun


def test_independent_problems_each_reach_their_minimum() -> None:
    scale = np.array([1.0, 10.0, 100.0, 1000.0])
    x0 = np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, -1.0], [-0.5, 2.0]])
    res = minimize_batch(_rosenbrock(scale), x0, -np.inf, np.inf)
    assert res.converged.all()
    np.testing.assert_allclose(res.x, 1.0, atol=1e-5)
    assert np.all(res.f < 1e-10)
    # Harder problems need more iterations: each row keeps its own stopping state.
    assert res.n_iter[3] > res.n_iter[0]


def test_bounds_and_fixed_parameters() -> None:
    # f = sum (x - c)^2 with c outside the box for some coordinates: the optimum is the projection.
    centre = np.array([[2.0, -3.0, 0.5], [0.2, 0.3, 0.4]])

    def fun(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        diff = x - centre[rows]
        return (diff**2).sum(axis=1), 2 * diff

    lower = np.array([[-1.0, -1.0, 0.7], [-1.0, -1.0, 0.7]])
    upper = np.array([[1.0, 1.0, 0.7], [1.0, 1.0, 0.7]])  # third parameter fixed at 0.7
    res = minimize_batch(fun, np.zeros((2, 3)), lower, upper)
    np.testing.assert_allclose(res.x[0], [1.0, -1.0, 0.7], atol=1e-9)
    np.testing.assert_allclose(res.x[1], [0.2, 0.3, 0.7], atol=1e-7)


def test_iteration_limit_is_reported() -> None:
    res = minimize_batch(_rosenbrock(np.array([100.0])), np.array([[-1.2, 1.0]]), -9, 9, max_iter=3)
    assert not res.converged[0]
    assert res.n_iter[0] == 3
