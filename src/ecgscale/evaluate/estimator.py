"""`LinearProbe`: `linear_probe` as a scikit-learn-style estimator (`fit`, `predict_proba`,
`predict`, `score`) for features that are already in memory, e.g. `encoder.embed(store)`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecgscale.errors import ConfigError, UserError
from ecgscale.evaluate import metrics as M
from ecgscale.evaluate.probe import DEFAULT_C_GRID, Kind, ProbeResult, linear_probe


class LinearProbe:
    """A linear probe whose C is chosen on a validation split.

    `fit(X, y)` holds out `val_fraction` of the records (seeded) to choose C unless `X_val` and
    `y_val` are given. Targets follow `linear_probe`: binary `(records,)` 0/1, multi-label
    `(records, labels)` 0/1, multi-class `(records,)` class indices, regression `(records,)` or
    `(records, targets)`.

    Attributes (after `fit`):
        result_: the `ProbeResult` of the fit (its test split is the validation split).
    """

    def __init__(
        self,
        kind: Kind = "multilabel",
        *,
        c_grid: Sequence[float] = DEFAULT_C_GRID,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction}: expected a value in (0, 1)")
        self.kind = kind
        self.c_grid = tuple(c_grid)
        self.val_fraction = val_fraction
        self.seed = seed

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> LinearProbe:
        """Fit on `X` `(records, dim)`; choose C on (`X_val`, `y_val`) or a held-out part of X."""
        X, y = np.asarray(X), np.asarray(y)
        if (X_val is None) != (y_val is None):
            raise UserError("fit: give both X_val and y_val, or neither")
        if X_val is None:
            order = np.random.default_rng(self.seed).permutation(len(X))
            n_val = max(1, round(self.val_fraction * len(X)))
            X_val, y_val = X[order[:n_val]], y[order[:n_val]]
            X, y = X[order[n_val:]], y[order[n_val:]]
        n, m = len(X), len(X_val)
        # linear_probe reports on a test split disjoint from the others: a copy of validation.
        self.result_: ProbeResult = linear_probe(
            np.concatenate([X, X_val, X_val]),
            np.concatenate([y, y_val, y_val]),
            self.kind,
            np.arange(n),
            np.arange(n, n + m),
            np.arange(n + m, n + 2 * m),
            c_grid=self.c_grid,
            bootstrap=None,  # the "test" split is a copy of validation: no intervals to report
        )
        return self

    def _fitted(self) -> ProbeResult:
        if not hasattr(self, "result_"):
            raise UserError("LinearProbe: call fit before predicting")
        return self.result_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities `(records, labels)` or `(records, classes)` (regression: predictions)."""
        return self._fitted().outputs(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Decisions: 0/1 at the validation-tuned thresholds (binary: `(records,)`), class
        indices (multi-class), or predictions in target units (regression)."""
        result, outputs = self._fitted(), self.predict_proba(X)
        if self.kind == "multiclass":
            return outputs.argmax(axis=1)
        if self.kind == "regression":
            return outputs[:, 0] if outputs.shape[1] == 1 else outputs
        decisions = (outputs >= np.asarray(result.thresholds)).astype(np.int64)
        return decisions[:, 0] if self.kind == "binary" else decisions

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Macro AUROC over labels/classes (classification) or R^2 (regression) on (X, y)."""
        outputs, y = self.predict_proba(X), np.asarray(y)
        if self.kind == "regression":
            return M.r2(y.reshape(len(y), -1), outputs)
        if self.kind == "multiclass":
            y = np.eye(outputs.shape[1])[y]
        return M.auroc(y.reshape(len(y), -1), outputs).macro


probe = LinearProbe
"""`ecgscale.probe("multilabel").fit(X, y)`: the estimator under its short public name."""
