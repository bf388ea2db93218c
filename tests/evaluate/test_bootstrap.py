"""Bootstrap intervals of the reported metrics: cases with a known truth, coverage, rare classes,
the tidy rows and the printed table.

The vectorised AUROC/AUPRC equal scikit-learn's on the resampled records for both of their paths
(few and many positives, with ties); a perfectly separable class has the interval [1, 1]; random
scores give an AUROC interval around 0.5; over repeated draws from a known binormal model, the
95 % percentile interval covers the true AUROC about 95 % of the time; a class with one test
positive gets an interval from the resamples that keep it, flagged when fewer than 90 % do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from ecgscale.cli import probe as probe_cli
from ecgscale.evaluate import metrics as M
from ecgscale.evaluate.challenge2021 import challenge_metrics, load_challenge_tables
from ecgscale.evaluate.probe import _classification_metrics, linear_probe
from ecgscale.evaluate.tasks import interval_table, result_rows


@pytest.mark.parametrize("few", [0, 10**6])  # every class by cumulative sums / by products
def test_weighted_ranking_equals_sklearn_on_resampled_records(
    few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(M, "_FEW_POSITIVES", few)
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.02, 0.1, 0.5, 0.97]).astype(int)
    s = np.round(rng.normal(size=y.shape) + y, 1)  # ties within and across the classes
    counts = M.bootstrap_counts(300, 20, np.random.default_rng(1))
    au, ap = M.weighted_ranking(y, s, counts)
    for b in range(20):
        rows = np.repeat(np.arange(300), counts[b].astype(int))
        for j in range(4):
            yj = y[rows, j]
            if yj.min() == yj.max():
                assert np.isnan(au[b, j])
                continue
            assert au[b, j] == pytest.approx(roc_auc_score(yj, s[rows, j]), rel=1e-12)
            assert ap[b, j] == pytest.approx(average_precision_score(yj, s[rows, j]), rel=1e-12)


def test_separable_class_has_interval_one_and_random_scores_cover_half() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((2000, 2), dtype=int)
    y[:600] = 1
    scores = np.column_stack([y[:, 0] + 0.1 * rng.random(2000), rng.random(2000)])
    intervals = M.bootstrap_intervals(
        lambda w: dict(zip(("auroc", "auprc"), M.weighted_ranking(y, scores, w), strict=True)),
        2000,
    )
    au, ap = intervals["auroc"], intervals["auprc"]
    assert (au.low[0], au.high[0], ap.low[0], ap.high[0]) == (1.0, 1.0, 1.0, 1.0)
    assert au.low[1] < 0.5 < au.high[1] and au.high[1] - au.low[1] < 0.08
    np.testing.assert_array_equal(au.defined, [1.0, 1.0])


def test_intervals_are_seeded_and_every_statistic_sees_the_same_resamples() -> None:
    seen: list[np.ndarray] = []

    def record(w: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(w.copy())
        return {"first": w[:, 0], "mean": w.mean(axis=1)}

    a = M.bootstrap_intervals(record, 50, M.Bootstrap(n_boot=200, seed=3))
    b = M.bootstrap_intervals(record, 50, M.Bootstrap(n_boot=200, seed=3))
    c = M.bootstrap_intervals(record, 50, M.Bootstrap(n_boot=200, seed=4))
    np.testing.assert_array_equal(seen[0], seen[1])
    assert not np.array_equal(seen[0], seen[2])
    assert float(a["first"].low) == float(b["first"].low) and a["mean"].low == 1.0
    assert float(c["mean"].high) == 1.0  # counts always sum to the records
    with pytest.raises(M.UserError, match="at least one resample"):
        M.Bootstrap(n_boot=0)


def test_percentile_intervals_match_numpy_and_skip_undefined_resamples() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(501, 3))
    values[rng.random(values.shape) < [0.0, 0.3, 1.0]] = np.nan
    found = M.percentile_intervals(values, 0.9)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(values, [0.05, 0.95], axis=0)
    np.testing.assert_allclose(found.low, expected[0], equal_nan=True)
    np.testing.assert_allclose(found.high, expected[1], equal_nan=True)
    assert found.defined[0] == 1.0 and 0.6 < found.defined[1] < 0.8 and found.defined[2] == 0


def test_interval_covers_the_true_auroc_at_about_its_level() -> None:
    """Binormal scores: negatives N(0, 1), positives N(1, 1), so AUROC = Phi(1 / sqrt 2)."""
    truth = float(norm.cdf(1 / np.sqrt(2)))
    rng = np.random.default_rng(0)
    covered = 0
    for draw in range(200):
        y = (rng.random(200) < 0.3).astype(int)
        s = rng.normal(size=200) + y
        found = M.bootstrap_intervals(
            lambda w, y=y, s=s: {"auroc": M.weighted_auroc(y, s, w)},
            200,
            M.Bootstrap(n_boot=300, seed=draw),
        )["auroc"]
        covered += bool(found.low <= truth <= found.high)
    assert 0.88 <= covered / 200 <= 0.99  # 95 % nominal; the percentile interval runs a bit low


def test_probe_metrics_carry_intervals_and_positive_counts() -> None:
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=(n, 8))
    y = (rng.random((n, 2)) < 1 / (1 + np.exp(-(2 * x[:, :2] - 1)))).astype(int)
    train, val, test = np.arange(600), np.arange(600, 900), np.arange(900, n)
    result = linear_probe(x, y, "multilabel", train, val, test, label_names=["a", "b"])
    m = result.metrics
    for name in ("auroc", "auprc", "f1", "brier"):
        assert m[f"{name}_lo"] < m[name] < m[f"{name}_hi"], name
    assert m["loss_lo"] < result.test_loss < m["loss_hi"] and "loss" not in m
    assert "ece_lo" not in m and m["n_boot"] == 1000 and m["ci_level"] == 0.95
    assert result.per_class["n_pos"] == tuple(float(v) for v in y[test].sum(axis=0))
    for j in range(2):
        lo, hi = result.per_class["auroc_lo"][j], result.per_class["auroc_hi"][j]
        assert lo < result.per_class["auroc"][j] < hi
    # the same seed gives the same intervals; none without a bootstrap
    again = linear_probe(x, y, "multilabel", train, val, test, label_names=["a", "b"])
    assert again.metrics == result.metrics and again.per_class == result.per_class
    plain = linear_probe(x, y, "multilabel", train, val, test, bootstrap=None)
    assert set(plain.metrics) == {"auroc", "auprc", "f1", "brier", "ece"}
    assert set(plain.per_class) == {"auroc", "auprc", "f1"}
    wider = linear_probe(
        x, y, "multilabel", train, val, test, bootstrap=M.Bootstrap(n_boot=400, level=0.99)
    )
    assert wider.metrics["auroc_hi"] - wider.metrics["auroc_lo"] > m["auroc_hi"] - m["auroc_lo"]

    target = x[:, 0] * 2 + rng.normal(size=n)
    reg = linear_probe(x, target, "regression", train, val, test)
    for name in ("mae", "mse", "r2"):
        assert reg.metrics[f"{name}_lo"] < reg.metrics[name] < reg.metrics[f"{name}_hi"], name
    assert reg.metrics["loss_lo"] < reg.test_loss < reg.metrics["loss_hi"]

    classes = np.argmax(x[:, :3] + rng.normal(size=(n, 3)), axis=1)
    mc = linear_probe(x, classes, "multiclass", train, val, test)
    assert mc.metrics["accuracy_lo"] < mc.metrics["accuracy"] < mc.metrics["accuracy_hi"]
    assert mc.per_class["n_pos"] == tuple(float(v) for v in np.bincount(classes[test]))


def test_a_class_with_one_positive_gets_an_interval_from_the_resamples_that_keep_it() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((200, 2), dtype=int)
    y[:80, 0] = 1
    y[5, 1] = 1  # one test positive: about 37 % of the resamples lose it
    p = np.clip(0.3 * y + 0.5 * rng.random(y.shape), 0, 1)
    metrics, per_class, _, _ = _classification_metrics("multilabel", y, p, y, p)
    defined = per_class["auroc_defined"]
    assert defined[0] is None and 0.55 < defined[1] < 0.72  # 1 - (1 - 1/200)^200 = 0.63
    assert per_class["auroc_lo"][1] <= per_class["auroc"][1] <= per_class["auroc_hi"][1]
    assert per_class["n_pos"] == (80.0, 1.0)
    assert "auroc_defined" not in metrics  # the macro is defined on every resample


def test_challenge_scores_get_intervals_on_request() -> None:
    tables = load_challenge_tables()
    rng = np.random.default_rng(0)
    k = len(tables.classes)
    labels = rng.random((300, k)) < 0.15
    scalar = np.clip(0.4 * labels + 0.6 * rng.random(labels.shape), 0, 1)
    binary = scalar >= 0.5
    plain = challenge_metrics(tables, labels, binary, scalar).scores()
    scores = challenge_metrics(tables, labels, binary, scalar, M.Bootstrap(n_boot=200)).scores()
    for name, value in plain.items():
        assert scores[name] == value
        assert scores[f"{name}_lo"] <= value <= scores[f"{name}_hi"], name


def test_result_rows_keep_the_columns_and_interval_table_widens_them() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (rng.random((600, 2)) < 1 / (1 + np.exp(-2 * x[:, :2]))).astype(int)
    result = linear_probe(
        x, y, "multilabel", np.arange(300), np.arange(300, 450), np.arange(450, 600),
        label_names=["NORM", "MI"],
    )  # fmt: skip
    rows = pd.DataFrame(result_rows("run", "task", "probe", result))
    assert list(rows.columns) == [
        "model", "task", "protocol", "fraction", "draw", "seed", "metric", "class", "value"
    ]  # fmt: skip
    assert {"auroc_lo", "auroc_hi", "loss_lo", "n_boot"} <= set(rows[rows["class"] == ""].metric)
    assert set(rows[rows.metric == "n_pos"]["class"]) == {"NORM", "MI"}
    wide = interval_table(rows).set_index(["metric", "class"])
    assert not any(wide.index.get_level_values(0).str.endswith(("_lo", "_hi")))
    assert wide.loc[("auroc", ""), "lo"] == result.metrics["auroc_lo"]
    assert wide.loc[("loss", ""), "hi"] == result.metrics["loss_hi"]
    assert wide.loc[("auroc", "MI"), "hi"] == result.per_class["auroc_hi"][1]
    assert wide.loc[("auroc", "MI"), "defined"] == 1.0
    assert np.isnan(wide.loc[("n_test", ""), "lo"]) and np.isnan(
        wide.loc[("n_test", ""), "defined"]
    )


def test_printed_summary_and_per_class_table(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    n = 900
    x = rng.normal(size=(n, 4))
    y = (rng.random((n, 2)) < 1 / (1 + np.exp(-2 * x[:, :2]))).astype(int)
    y[:, 1] = 0
    y[[10, 700, 850], 1] = 1  # class "rare": one positive in the test split
    result = linear_probe(
        x, y, "multilabel", np.arange(600), np.arange(600, 750), np.arange(750, n),
        label_names=["NORM", "rare"],
    )  # fmt: skip
    probe_cli._print_result("run task: ", result, per_class=True)
    lines = capsys.readouterr().out.splitlines()
    m = result.metrics
    assert lines[0].startswith(
        f"run task: test loss {result.test_loss:.3f} [{m['loss_lo']:.3f}, {m['loss_hi']:.3f}], "
        f"AUROC {m['auroc']:.3f} [{m['auroc_lo']:.3f}, {m['auroc_hi']:.3f}]"
    )
    assert lines[0].endswith("[95 % interval, 1000 bootstrap resamples of test records]")
    assert lines[1].split() == ["class", "n_pos", "/", "n", "AUROC", "AUPRC", "F1"]
    norm_row = next(line.split() for line in lines if line.split()[0] == "NORM")
    pc = result.per_class
    assert norm_row[:5] == [
        "NORM", str(int(pc["n_pos"][0])), "/", "150", f"{pc['auroc'][0]:.3f}"
    ]  # fmt: skip
    rare = next(line for line in lines if line.split()[0] == "rare")
    assert rare.split()[1:4] == ["1", "/", "150"] and "*" in rare
    assert lines[-1].startswith("  * interval from fewer than 90% of the resamples")
