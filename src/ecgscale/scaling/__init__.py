"""Scaling-law analysis: L(N, D) and one-axis fits with bootstrap intervals, loss-to-loss transfer,
compute-optimal allocation, comparisons, saturation and label scaling.

Fits take plain arrays and return frozen dataclasses (estimates, SEs, 95 % intervals, diagnostics,
warnings); `table.load_results` and `analyze.fit_results` turn a results table into fits per group.
"""

from ecgscale.scaling.compute import (
    ComputeOptimal,
    ExponentComparison,
    FlopsModel,
    Saturation,
    compare_exponents,
    compute_optimal,
    fit_flops_model,
    fit_label_scaling,
    optimal_allocation,
    saturation,
)
from ecgscale.scaling.fits import (
    AxisFit,
    Estimate,
    Extrapolation,
    FitOptions,
    JointFit,
    fit_axis,
    fit_joint,
    hoffmann_grid,
)
from ecgscale.scaling.transfer import TransferFit, fit_transfer

__all__ = [
    "AxisFit",
    "ComputeOptimal",
    "Estimate",
    "ExponentComparison",
    "Extrapolation",
    "FitOptions",
    "FlopsModel",
    "JointFit",
    "Saturation",
    "TransferFit",
    "compare_exponents",
    "compute_optimal",
    "fit_axis",
    "fit_flops_model",
    "fit_joint",
    "fit_label_scaling",
    "fit_transfer",
    "hoffmann_grid",
    "optimal_allocation",
    "saturation",
]
