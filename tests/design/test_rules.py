"""Scaling rules: the Pareto front, power laws along it, networks built for a budget."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ecgscale.design.rules import derive_rules, fit_power_law, pareto_front
from ecgscale.design.sampler import sample_space
from ecgscale.design.space import load_space


def _brute_front(flops: np.ndarray, perf: np.ndarray) -> np.ndarray:
    n = len(flops)
    return np.array(
        [
            not any(
                flops[j] <= flops[i]
                and perf[j] >= perf[i]
                and (flops[j] < flops[i] or perf[j] > perf[i])
                for j in range(n)
            )
            for i in range(n)
        ]
    )


def test_front_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        flops = rng.choice([1e6, 2e6, 5e6, 1e7, 3e7], size=25)  # ties in FLOPs included
        perf = np.round(rng.uniform(0.5, 0.9, size=25), 2)  # and in performance
        np.testing.assert_array_equal(pareto_front(flops, perf), _brute_front(flops, perf))


def test_near_front_keeps_runs_within_the_tolerance() -> None:
    flops = np.array([1.0, 2.0, 3.0, 4.0])
    perf = np.array([0.70, 0.695, 0.80, 0.78])
    assert pareto_front(flops, perf).tolist() == [True, False, True, False]
    assert pareto_front(flops, perf, 0.01).tolist() == [True, True, True, False]
    assert pareto_front(flops, perf, 0.03).tolist() == [True, True, True, True]


def test_power_law_recovers_a_planted_exponent() -> None:
    c = np.geomspace(1e6, 1e9, 7)
    law = fit_power_law("depth", c, 0.5 * c**0.21)
    assert law.exponent == pytest.approx(0.21, abs=1e-9)
    assert law.coefficient == pytest.approx(0.5, rel=1e-6)
    assert law.r2 == pytest.approx(1.0)
    noisy = fit_power_law(
        "depth", c, 0.5 * c**0.21 * np.exp([0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1])
    )
    assert noisy.exponent_low < noisy.exponent < noisy.exponent_high
    assert fit_power_law("depth", c[:2], c[:2]) is None  # two points are no fit


@pytest.fixture(scope="module")
def planted_design() -> pd.DataFrame:
    """Default-space networks whose performance rises with log FLOPs and falls with more than 4
    stages, so the front is made of few-stage networks at every FLOP level."""
    space, _ = load_space()
    frame = sample_space(space, 60, seed=4).frame()
    rng = np.random.default_rng(0)
    perf = (
        0.5
        + 0.05 * np.log10(frame["flops"])
        - 0.1 * (frame["stages"] > 4)
        + rng.normal(0, 0.003, len(frame))
    )
    return frame.assign(perf=perf, kind="sampled")


@pytest.mark.parametrize("budget", [3e7, 3e8, 3e9])
def test_recommended_networks_are_built_within_their_budget(
    planted_design: pd.DataFrame, budget: float
) -> None:
    rules = derive_rules(planted_design, [budget])
    assert set(rules.front) <= set(rules.near_front)
    rec = rules.recommendations[0]
    assert rec.within_budget and 0.5 < rec.fill <= 1.0  # measured FLOPs, not the analytic ones
    template = planted_design.set_index("name").loc[rec.template]
    assert template["flops"] <= budget and rec.template in rules.front
    kept = ("group_width", "bottleneck_multiplier", "se_ratio", "init_kernel_size", "w_m")
    config = json.loads(template["config"])
    assert all(rec.config.get(k) == config.get(k) for k in kept)
    assert planted_design["depth"].min() <= rec.config["depth"] <= planted_design["depth"].max()
    assert rec.extrapolated == (budget > planted_design["flops"].max())


def test_budget_too_small_for_any_network_is_refused(planted_design: pd.DataFrame) -> None:
    from ecgscale.errors import ConfigError

    with pytest.raises(ConfigError, match="no network of the template fits"):
        derive_rules(planted_design, [1e4])
