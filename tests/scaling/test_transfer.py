"""Loss-to-loss transfer: known K and kappa, E propagated from scaling fits, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ecgscale.errors import UserError
from ecgscale.scaling import fit_joint, fit_transfer


@pytest.fixture(scope="module")
def runs():
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e5, 3e7, 5), np.geomspace(1e4, 3e6, 5)))
    rng = np.random.default_rng(0)
    id_loss = (0.3 + 30 * n**-0.35 + 20 * d**-0.3) * np.exp(rng.normal(0, 0.002, n.size))
    ood_loss = (0.5 + 1.4 * (id_loss - 0.3) ** 0.8) * np.exp(rng.normal(0, 0.002, n.size))
    return n, d, id_loss, ood_loss


def test_known_irreducible_losses_recover_k_and_kappa(runs) -> None:
    _, _, id_loss, ood_loss = runs
    fit = fit_transfer(id_loss, ood_loss, e_id=0.3, e_ood=0.5, n_boot=300)
    # One noisy draw: close to the truth (interval coverage is tested in test_coverage.py).
    assert fit.kappa.value == pytest.approx(0.8, abs=0.01)
    assert fit.K.value == pytest.approx(1.4, rel=0.01)
    assert 0 < fit.kappa.se < 0.01
    assert fit.E_ood.value == 0.5 and fit.E_ood.se == 0.0 and fit.e_ood_fixed
    np.testing.assert_allclose(fit.predict(id_loss), ood_loss, rtol=0.01)


def test_irreducible_losses_from_fits_widen_the_interval(runs) -> None:
    n, d, id_loss, ood_loss = runs
    fit_id = fit_joint(n, d, id_loss, n_boot=300, extrapolate=False)
    fit_ood = fit_joint(n, d, ood_loss, n_boot=300, extrapolate=False)
    propagated = fit_transfer(id_loss, ood_loss, e_id=fit_id, e_ood=fit_ood)
    fixed = fit_transfer(id_loss, ood_loss, e_id=fit_id.E.value, e_ood=fit_ood.E.value, n_boot=300)
    np.testing.assert_array_equal(propagated.boot_counts, fit_id.boot_counts)
    assert propagated.E_id.se == pytest.approx(fit_id.E.se)
    assert propagated.kappa.value == pytest.approx(fixed.kappa.value)
    assert propagated.kappa.se > 1.5 * fixed.kappa.se  # E uncertainty is carried into kappa
    assert propagated.kappa.low <= 0.8 <= propagated.kappa.high
    assert propagated.boot_failed < 0.05
    assert [e.axis for e in propagated.extrapolation] == ["id_loss"]


def test_free_e_ood(runs) -> None:
    _, _, id_loss, ood_loss = runs
    fit = fit_transfer(id_loss, ood_loss, e_id=0.3, n_boot=300)
    assert not fit.e_ood_fixed
    assert fit.E_ood.low <= 0.5 <= fit.E_ood.high
    assert fit.kappa.low <= 0.8 <= fit.kappa.high


def test_transfer_errors(runs) -> None:
    n, d, id_loss, ood_loss = runs
    with pytest.raises(UserError, match="is not below the smallest ID loss"):
        fit_transfer(id_loss, ood_loss, e_id=float(id_loss.min()), n_boot=0)
    other = fit_joint(n[:-1], d[:-1], id_loss[:-1], n_boot=20, extrapolate=False)
    with pytest.raises(UserError, match="fit both on the same runs"):
        fit_transfer(id_loss, ood_loss, e_id=other)
    with pytest.raises(UserError, match="expected 25 values"):
        fit_transfer(id_loss, ood_loss[:-1], e_id=0.3)
