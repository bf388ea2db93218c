"""The results-table contract: loading CSV and Parquet, and one-line errors for bad tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgscale.errors import DataError
from ecgscale.scaling.table import COLUMNS, load_results


def _table() -> pd.DataFrame:
    rows = []
    for i, n in enumerate([1e5, 1e6]):
        for task in ("af", "mi"):
            rows.append(
                dict(
                    run_id=f"r{i}", family="resnet", objective="cmsc", n_params=n,
                    n_samples=1e4, flops_per_record=2 * n, train_flops=6e4 * n, task=task,
                    id_loss=0.5, ood_loss=np.nan if task == "mi" else 0.7,
                )
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    df = _table()
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_parquet(tmp_path / "r.parquet", index=False)
    for name in ("r.csv", "r.parquet"):
        loaded = load_results(tmp_path / name)
        assert list(loaded.columns[: len(COLUMNS)]) == [c.name for c in COLUMNS]
        assert loaded["ood_loss"].isna().sum() == 2  # NaN-able column
        assert loaded["n_params"].dtype == np.float64


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns=["train_flops", "task"]), "missing column(s) train_flops, task"),
        (lambda d: d.assign(id_loss=[0.5, "x", 0.5, 0.5]), "id_loss row 1: expected a number"),
        (lambda d: d.assign(n_params=[1e5, 1e5, -1.0, 1e6]), "n_params row 2: expected a finite"),
        (lambda d: d.assign(id_loss=[0.5, np.nan, 0.5, 0.5]), "id_loss is empty on row 1"),
        (lambda d: d.assign(task="af"), "has task 'af' twice"),
        (lambda d: d.assign(n_samples=[1e4, 2e4, 1e4, 1e4]), "n_samples differ between rows"),
    ],
)
def test_bad_tables_give_one_line_errors(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "r.csv"
    mutate(_table()).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_results(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_column_lists_available_ones(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    _table().drop(columns=["ood_loss"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"available: run_id, family, objective, n_params"):
        load_results(path)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_results(tmp_path / "absent.csv")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(
        DataError, match=r"expected a \.csv, \.parquet or \.sqlite \(study results\) file"
    ):
        load_results(tmp_path / "r.txt")
