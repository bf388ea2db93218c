"""Linear probes: agreement with scikit-learn, planted signals, determinism, label fractions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from ecgscale.errors import ConfigError, UserError
from ecgscale.evaluate.probe import (
    coverage_subsample,
    label_fraction_probes,
    linear_probe,
)

N, DIM = 1200, 24
TRAIN, VAL, TEST = np.arange(0, 700), np.arange(700, 950), np.arange(950, N)


def _features(rng: np.random.Generator) -> np.ndarray:
    """Correlated features: 8 latent factors mixed into 24 dimensions plus noise, float32."""
    latent = rng.normal(size=(N, 8))
    mix = rng.normal(size=(8, DIM))
    return (latent @ mix + 0.5 * rng.normal(size=(N, DIM)) + 3.0).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> dict[str, np.ndarray]:
    """Features and targets drawn from known linear models of the standardised features."""
    rng = np.random.default_rng(0)
    x = _features(rng)
    x64 = x.astype(np.float64)
    xs = (x64 - x64[TRAIN].mean(0)) / x64[TRAIN].std(0)
    logits = xs @ rng.normal(scale=0.6, size=(DIM, 4)) + np.array([-2.0, -1.0, 0.0, -3.0])
    prob = 1 / (1 + np.exp(-logits))
    class_logits = xs @ rng.normal(scale=0.6, size=(DIM, 3))
    class_prob = np.exp(class_logits) / np.exp(class_logits).sum(1, keepdims=True)
    return {
        "x": x,
        "xs": xs,
        "prob": prob,
        "multilabel": (rng.random(prob.shape) < prob).astype(np.int8),
        "class_prob": class_prob,
        "multiclass": (rng.random((N, 1)) > class_prob.cumsum(1)).sum(1),
        "regression": xs @ rng.normal(size=DIM) * 5 + 60 + rng.normal(scale=4.0, size=N),
    }


def _bce(y: np.ndarray, p: np.ndarray) -> float:
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@pytest.mark.parametrize("kind", ["binary", "multilabel", "multiclass"])
def test_logistic_fit_matches_sklearn(planted: dict, kind: str) -> None:
    """At one C the probe and scikit-learn minimise the same objective: same probabilities."""
    c = 0.02
    xs = planted["xs"]
    if kind == "multiclass":
        y = planted["multiclass"]
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(xs[TRAIN], y[TRAIN])
        expected = ref.predict_proba(xs[TEST])
    else:
        y = planted["multilabel"][:, :1] if kind == "binary" else planted["multilabel"]
        expected = np.column_stack(
            [
                LogisticRegression(C=c, tol=1e-10, max_iter=5000)
                .fit(xs[TRAIN], y[TRAIN, j])
                .predict_proba(xs[TEST])[:, 1]
                for j in range(y.shape[1])
            ]
        )
    result = linear_probe(planted["x"], y, kind, TRAIN, VAL, TEST, c_grid=[c], tol=1e-9)
    np.testing.assert_allclose(result.test_outputs, expected, atol=2e-6)
    assert result.c == c


def test_ridge_matches_sklearn(planted: dict) -> None:
    c = 0.01
    xs, y = planted["xs"], planted["regression"]
    mean, std = y[TRAIN].mean(), y[TRAIN].std()
    ref = Ridge(alpha=1 / c).fit(xs[TRAIN], (y[TRAIN] - mean) / std)
    expected = ref.predict(xs[TEST]) * std + mean
    result = linear_probe(planted["x"], y, "regression", TRAIN, VAL, TEST, c_grid=[c])
    np.testing.assert_allclose(result.test_outputs[:, 0], expected, rtol=1e-9)
    assert result.test_loss == pytest.approx(np.mean(((expected - y[TEST]) / std) ** 2))


def test_probe_recovers_planted_multilabel_signal_and_beats_shuffled_labels(planted: dict) -> None:
    y = planted["multilabel"]
    result = linear_probe(planted["x"], y, "multilabel", TRAIN, VAL, TEST, label_names="abcd")
    bayes = _bce(y[TEST], planted["prob"][TEST])
    assert result.test_loss < bayes + 0.05  # close to the true model (null: about +0.33)
    true_auroc = np.mean([_auroc(y[TEST, j], planted["prob"][TEST, j]) for j in range(y.shape[1])])
    assert result.metrics["auroc"] > true_auroc - 0.03
    assert result.label_names == ("a", "b", "c", "d")
    per_class = {"auroc", "auprc", "f1", "n_pos"} | {
        f"{m}_{end}" for m in ("auroc", "auprc", "f1") for end in ("lo", "hi")
    }
    assert len(result.thresholds) == 4 and set(result.per_class) == per_class
    assert result.per_class["n_pos"] == tuple(float(v) for v in y[TEST].sum(axis=0))
    assert result.c_grid[0] < result.c < result.c_grid[-1]

    shuffled = y[np.random.default_rng(1).permutation(N)]
    null = linear_probe(planted["x"], shuffled, "multilabel", TRAIN, VAL, TEST)
    assert null.test_loss > result.test_loss + 0.1
    assert abs(null.metrics["auroc"] - 0.5) < 0.1 < result.metrics["auroc"] - 0.5
    assert null.c < result.c  # no signal: the strongest regularisation wins


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def test_probe_recovers_planted_multiclass_and_regression(planted: dict) -> None:
    x = planted["x"]
    mc = linear_probe(x, planted["multiclass"], "multiclass", TRAIN, VAL, TEST)
    y_te = planted["multiclass"][TEST]
    bayes = float(-np.log(planted["class_prob"][TEST, :][np.arange(len(TEST)), y_te]).mean())
    assert mc.test_loss < bayes + 0.05
    assert mc.metrics["accuracy"] > 0.6 and mc.test_outputs.shape == (len(TEST), 3)
    np.testing.assert_allclose(mc.test_outputs.sum(1), 1.0)

    reg = linear_probe(x, planted["regression"], "regression", TRAIN, VAL, TEST)
    noise_share = 16.0 / planted["regression"][TRAIN].var()  # noise variance 4^2
    assert reg.test_loss < 1.5 * noise_share
    assert reg.metrics["r2"] > 0.9 and reg.metrics["mae"] < 5.0
    shuffled = planted["regression"][np.random.default_rng(2).permutation(N)]
    null = linear_probe(x, shuffled, "regression", TRAIN, VAL, TEST)
    assert null.test_loss > 0.9 and null.metrics["r2"] < 0.05


def test_probe_is_deterministic(planted: dict) -> None:
    args = (planted["x"], planted["multilabel"], "multilabel", TRAIN, VAL, TEST)
    a, b = linear_probe(*args), linear_probe(*args)
    assert a == b
    np.testing.assert_array_equal(a.test_outputs, b.test_outputs)


def test_single_valued_training_labels_get_the_jeffreys_prior(planted: dict) -> None:
    y = planted["multilabel"].copy()
    y[TRAIN, 1] = 0  # never positive in training
    result = linear_probe(planted["x"], y, "multilabel", TRAIN, VAL, TEST)
    assert result.constant_labels == (1,)
    np.testing.assert_allclose(result.test_outputs[:, 1], 0.5 / (len(TRAIN) + 1))
    assert np.isfinite(result.test_loss)

    labels = planted["multiclass"].copy()
    labels[TRAIN] = np.where(labels[TRAIN] == 2, 0, labels[TRAIN])  # class 2 unseen in training
    mc = linear_probe(planted["x"], labels, "multiclass", TRAIN, VAL, TEST)
    assert mc.constant_labels == (2,)
    np.testing.assert_allclose(mc.test_outputs[:, 2], 0.5 / (len(TRAIN) + 1.5))
    np.testing.assert_allclose(mc.test_outputs.sum(1), 1.0)


def test_coverage_subsample_keeps_a_positive_of_every_class() -> None:
    rng = np.random.default_rng(3)
    indicators = rng.random((1000, 6)) < [0.5, 0.2, 0.05, 0.01, 0.003, 0.0]
    for seed in range(5):
        picked = coverage_subsample(indicators, 1000, 10, np.random.default_rng(seed))
        assert picked.size == 10 and np.unique(picked).size == 10
        assert indicators[picked, :5].any(axis=0).all()
    # fewer records than classes: the rarest classes come first
    picked = coverage_subsample(indicators, 1000, 2, np.random.default_rng(0))
    assert indicators[picked, 4].any() and indicators[picked, 3].any()
    plain = coverage_subsample(None, 1000, 10, np.random.default_rng(0))
    assert plain.size == 10


def test_label_fraction_probes(planted: dict) -> None:
    y = planted["multilabel"]
    args = (planted["x"], y, "multilabel", TRAIN, VAL, TEST)
    runs = label_fraction_probes(*args, fractions=(0.02, 1.0), draws=2, seed=5)
    assert [(r.fraction, r.draw) for r in runs] == [(0.02, 0), (0.02, 1), (1.0, 0)]
    assert [r.result.n_train for r in runs] == [14, 14, len(TRAIN)]
    assert all(r.result.constant_labels == () for r in runs)  # every label keeps a positive
    assert runs[0].result != runs[1].result  # different draws
    assert runs[2].result.test_loss < min(r.result.test_loss for r in runs[:2])
    again = label_fraction_probes(*args, fractions=(0.02,), draws=1, seed=5)
    assert again[0].result == runs[0].result  # independent of the other fractions requested


def test_bad_inputs_fail_in_one_line(planted: dict) -> None:
    x, y = planted["x"], planted["multilabel"]
    with pytest.raises(ConfigError, match="expected one of"):
        linear_probe(x, y, "ordinal", TRAIN, VAL, TEST)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="disjoint"):
        linear_probe(x, y, "multilabel", TRAIN, TRAIN[:10], TEST)
    with pytest.raises(UserError, match="0/1"):
        linear_probe(x, y * 2, "multilabel", TRAIN, VAL, TEST)
    with pytest.raises(UserError, match="one label per record"):
        linear_probe(x, y, "binary", TRAIN, VAL, TEST)
    with pytest.raises(UserError, match="expected 1200 records"):
        linear_probe(x, y[:10], "multilabel", TRAIN, VAL, TEST)
    with pytest.raises(UserError, match=r"values in \[0, 1199\]"):
        linear_probe(x, y, "multilabel", TRAIN, VAL, np.array([N]))
    with pytest.raises(ConfigError, match="positive"):
        linear_probe(x, y, "multilabel", TRAIN, VAL, TEST, c_grid=[0.0])
