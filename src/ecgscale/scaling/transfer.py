"""Loss-to-loss transfer: L_OOD = E_OOD + K (L_ID - E_ID)^kappa (Brandfonbrener et al. 2024).

Why: how out-of-distribution loss follows in-distribution loss across model sizes and data sizes
says whether scaling buys robustness (kappa < 1: OOD loss falls faster than ID loss) or not.

With x = 1 / (L_ID - E_ID) the law is the one-axis scaling law L_OOD = E_OOD + K x^-kappa, so it is
fitted by the same engine (log-space Huber, batched L-BFGS, bootstrap). As in Brandfonbrener et al.,
the irreducible losses come from scaling-law fits of the ID (and optionally OOD) loss of the same
runs. When such a fit is passed, each bootstrap resample of the transfer fit uses exactly that fit's
resample (same counts) and that resample's E, so the interval of kappa includes the uncertainty of
E_ID. "Averaged over tasks" is a transfer fit of per-run task-mean losses (see `analyze`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ecgscale.errors import UserError
from ecgscale.scaling.fits import (
    Estimate,
    FitBase,
    as_positive,
    bootstrap_counts,
    check_points,
    fit_options,
    fit_warnings,
    leave_largest_out,
    predict_natural,
    run_engine,
)


@dataclass(frozen=True, eq=False, kw_only=True)
class TransferFit(FitBase):
    """L_OOD = E_ood + K (L_ID - E_id)^kappa. `E_id` (and `E_ood` when pinned) carry the estimate
    and interval of the scaling fit they came from (SE 0 when given as a plain number)."""

    param_names: ClassVar[tuple[str, ...]] = ("E_ood", "K", "kappa")

    E_ood: Estimate
    K: Estimate
    kappa: Estimate
    E_id: Estimate
    e_ood_fixed: bool
    id_range: tuple[float, float]

    def predict(self, id_loss: np.ndarray | float) -> np.ndarray:
        """Predicted OOD loss at ID loss(es) `id_loss` (> E_id)."""
        gap = np.asarray(id_loss, dtype=np.float64) - self.E_id.value
        return self.E_ood.value + self.K.value * gap**self.kappa.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "transfer",
            "law": "L_OOD = E_ood + K (L_ID - E_id)^kappa",
            "E_id": self.E_id.to_dict(),
            "e_ood_fixed": self.e_ood_fixed,
            "id_range": list(self.id_range),
            **super().to_dict(),
        }


def _irreducible(
    name: str, source: float | FitBase, n_points: int
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """(point E, bootstrap E samples or None, resample counts or None) from a number or a fit."""
    if isinstance(source, FitBase):
        if source.boot_counts.shape[1] != n_points:
            raise UserError(
                f"{name}: the fit has {source.boot_counts.shape[1]} points, the transfer fit "
                f"{n_points}; fit both on the same runs in the same order"
            )
        samples = source.sample("E") if source.samples.shape[0] else None
        return float(source.E.value), samples, source.boot_counts
    value = float(source)
    if not np.isfinite(value) or value < 0:
        raise UserError(f"{name}: expected a finite irreducible loss >= 0, got {value}")
    return value, None, None


def fit_transfer(
    id_loss: np.ndarray | Sequence[float],
    ood_loss: np.ndarray | Sequence[float],
    *,
    e_id: float | FitBase,
    e_ood: float | FitBase | None = None,
    **options: Any,
) -> TransferFit:
    """Fit L_OOD = E_OOD + K (L_ID - E_ID)^kappa to paired losses (P,), one pair per run.

    e_id: the ID irreducible loss, a number or a scaling fit of `id_loss` on the same runs in the
    same order (its bootstrap E samples and resamples are then reused). e_ood: None to fit E_OOD,
    else a number or a scaling fit of `ood_loss`, used like e_id. Options: see `FitOptions`
    (n_boot and seed only matter when neither irreducible loss comes from a fit).
    """
    opts = fit_options(options)
    x_id, y = as_positive("id_loss", id_loss), as_positive("ood_loss", ood_loss)
    if x_id.size != y.size:
        raise UserError(f"ood_loss: expected {x_id.size} values (one per id_loss), got {y.size}")
    e_id_value, e_id_samples, counts = _irreducible("e_id", e_id, y.size)
    if e_id_value >= x_id.min():
        raise UserError(
            f"e_id = {e_id_value:.4g} is not below the smallest ID loss {x_id.min():.4g}"
        )
    fixed_e = None
    e_ood_est = None
    if e_ood is not None:
        e_ood_value, e_ood_samples, counts_ood = _irreducible("e_ood", e_ood, y.size)
        if counts is not None and counts_ood is not None and not np.array_equal(counts, counts_ood):
            raise UserError("e_id and e_ood: the two fits were bootstrapped on different resamples")
        counts = counts if counts is not None else counts_ood
        n_boot = counts.shape[0] if counts is not None else opts.n_boot
        boot = e_ood_samples if e_ood_samples is not None else np.full(n_boot, e_ood_value)
        fixed_e = np.concatenate([[e_ood_value], boot])
        e_ood_est = Estimate.from_samples(e_ood_value, boot)
    if counts is None:
        counts = bootstrap_counts(y.size, opts)
    n_boot = counts.shape[0]
    names = TransferFit.param_names
    check_points({"id_loss": x_id}, y.size, len(names) - (fixed_e is not None))

    log_x = -np.log(x_id - e_id_value)[:, None]
    boot_log_x = None
    if e_id_samples is not None:
        gap = x_id[None, :] - e_id_samples[:, None]  # (n_boot, P)
        usable = gap > 0
        # A resample whose E_ID is not below every ID loss it draws cannot be fitted: NaN fails it.
        broken = ~np.all(usable | (counts == 0), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_log_x = np.where(usable, -np.log(np.where(usable, gap, 1.0)), 0.0)
        boot_log_x[broken] = np.nan
        boot_log_x = boot_log_x[..., None]
    core = run_engine(
        log_x,
        np.log(y),
        replace(opts, n_boot=n_boot),
        names=names,
        counts=counts,
        boot_log_x=boot_log_x,
        fixed_e=fixed_e,
    )

    extrap: tuple = ()
    notes: list[str] = []
    if opts.extrapolate:
        refit_opts = replace(
            opts, n_boot=0, resamples=None, extrapolate=False, starts=core.refit_starts
        )
        pinned = None if fixed_e is None else fixed_e[:1]

        def refit_predict(keep: np.ndarray) -> np.ndarray:
            check_points(
                {"id_loss": x_id[keep]}, int(keep.sum()), len(names) - (pinned is not None)
            )
            part = run_engine(log_x[keep], np.log(y[keep]), refit_opts, names=names, fixed_e=pinned)
            return predict_natural(part.natural, log_x[~keep])

        best = x_id == x_id.min()
        extrap, notes = leave_largest_out({"id_loss": (best, float(x_id.min()))}, y, refit_predict)
    warns = fit_warnings(core, names, ("scale", "coefficient", "exponent"), {})
    estimates = core.estimates(names)
    if e_ood_est is not None:
        estimates["E_ood"] = e_ood_est
    e_id_est = (
        Estimate.from_samples(e_id_value, e_id_samples)
        if e_id_samples is not None
        else Estimate(e_id_value, 0.0, e_id_value, e_id_value)
    )
    return TransferFit(
        **core.diagnostics(y.size, extrap, warns + notes),
        E_id=e_id_est,
        e_ood_fixed=fixed_e is not None,
        id_range=(float(x_id.min()), float(x_id.max())),
        **estimates,
    )
