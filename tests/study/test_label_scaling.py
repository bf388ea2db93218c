"""Label scaling on a common label set: every top-k run is also scored by one probe on the same
classes, split into frequent (the top-k_min classes) and tail; exported for the fits and plotted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from ecgscale.cli.main import main
from ecgscale.data.store import Store
from ecgscale.evaluate import id_eval
from ecgscale.evaluate.id_eval import LabelGroups, common_label_groups
from ecgscale.report.figures import label_scaling_plot
from ecgscale.scaling.analyze import fit_results
from ecgscale.scaling.table import validate_results
from ecgscale.study.results import COMMON_TASK
from ecgscale.study.runner import results_of, run_study
from ecgscale.study.spec import load_spec

SIZES = [2, 3, 4, 6]  # the synthetic "code" label set has 6 classes; 4 points fit E + A k^-alpha


class _LabelStore:
    """The parts of a `Store` that `common_label_groups` reads: 20 records (train 0-9, val
    10-14, test 15-19) of one label set with positives given per split."""

    top_classes = Store.top_classes

    def __init__(self, positives: dict[str, tuple[int, int, int]]) -> None:
        self.label_sets = {"y": list(positives)}
        self._y = np.zeros((20, len(positives)), dtype=np.uint8)
        for j, counts in enumerate(positives.values()):
            for start, count in zip((0, 10, 15), counts, strict=True):
                self._y[start : start + count, j] = 1

    def labels(self, name: str) -> np.ndarray:
        return self._y

    def split_indices(self, split: str) -> np.ndarray:
        return {"train": np.arange(10), "val": np.arange(10, 15), "test": np.arange(15, 20)}[split]


def test_groups_rank_by_training_frequency_and_drop_classes_that_cannot_be_evaluated() -> None:
    store = _LabelStore(
        {  # positives in (train, val, test)
            "c": (3, 1, 2),
            "a": (8, 2, 2),
            "e": (10, 2, 2),  # the most frequent, but no negative in training
            "d": (5, 1, 0),  # no positive in the test split
            "b": (6, 1, 1),
        }
    )
    groups = common_label_groups(store, "y", 3)  # top 3 in training: e, a, b
    assert groups == LabelGroups(frequent=("a", "b"), tail=("c",))
    assert groups.classes == ("a", "b", "c")
    assert dict(groups.items()) == {"all": ("a", "b", "c"), "frequent": ("a", "b"), "tail": ("c",)}
    assert common_label_groups(store, "y", 1) == LabelGroups((), ("a", "b", "c"))
    assert common_label_groups(store, "y", 5) == LabelGroups(("a", "b", "c"), ())
    stricter = common_label_groups(store, "y", 3, min_positives=2)  # b and c have one val positive
    assert stricter == LabelGroups(frequent=("a",), tail=())


@pytest.fixture
def label_study(tmp_path: Path, base_spec: dict[str, Any], monkeypatch) -> tuple[Path, dict]:
    """A finished four-run label-scaling study (k = 2, 3, 4, 6) and the label groups each run
    was scored on (run folder name -> LabelGroups)."""
    base_spec["families"][0]["sizes"] = [0]
    base_spec["label_set_sizes"] = SIZES
    base_spec["ood"] = base_spec["ood"][:1]
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(dict(base_spec, out="labels")))
    seen: dict[str, LabelGroups] = {}
    original = id_eval.evaluate_common

    def recording(run_dir, store, label_set, groups, **options):
        seen[Path(run_dir).name] = groups
        return original(run_dir, store, label_set, groups, **options)

    monkeypatch.setattr(id_eval, "evaluate_common", recording)
    run_study(load_spec(path), progress=False)
    return path, seen


def test_every_top_k_run_is_scored_on_the_same_common_label_set(label_study, capsys) -> None:
    path, seen = label_study
    spec = load_spec(path)
    results = results_of(spec)
    runs = results.runs()
    assert sorted(runs["label_top_k"]) == SIZES and (runs["status"] == "done").all()
    store = Store(spec.out / "stores" / "source")
    assert set(seen) == set(runs["run_id"])
    groups = next(iter(seen.values()))
    assert all(g == groups for g in seen.values())  # identical classes whatever k
    assert groups.frequent == tuple(store.top_classes("code", min(SIZES)))
    assert set(groups.classes) == set(store.label_sets["code"])

    metrics = results.metrics()
    common = metrics[metrics["task"] == COMMON_TASK].pivot(
        index="run_id", columns="metric", values="value"
    )
    assert len(common) == len(runs) and common.notna().all().all()
    assert (common["n_classes_frequent"] == len(groups.frequent)).all()
    assert (common["n_classes_tail"] == len(groups.tail)).all()
    # Per-class losses averaged per group: "all" is the class-weighted mean of the two groups.
    weighted = (
        common["loss_frequent"] * common["n_classes_frequent"]
        + common["loss_tail"] * common["n_classes_tail"]
    ) / common["n_classes_all"]
    np.testing.assert_allclose(common["loss_all"], weighted, rtol=1e-12)
    assert set(results.table()["task"]) == {"synth_extra"}  # OOD rows are untouched

    labels = validate_results(results.label_table(), source="label table")
    assert len(labels) == 3 * len(runs)
    assert set(labels["task"]) == {f"{COMMON_TASK}/{g}" for g in ("all", "frequent", "tail")}
    assert (labels["n_labels"] == labels["label_top_k"]).all() and labels["ood_loss"].isna().all()
    frequent = labels[labels["label_group"] == "frequent"].set_index("run_id")
    np.testing.assert_allclose(frequent["id_loss"], common.loc[frequent.index, "loss_frequent"])
    fits = fit_results(labels, target="id_loss", by=["label_group"], x="n_labels", n_boot=50)
    assert [g.label for g in fits] == ["all", "frequent", "tail"]
    assert all(g.fit.axis == "n_labels" and g.n_runs == len(runs) for g in fits)

    out = spec.out / "labels.csv"
    with pytest.raises(SystemExit) as exc:
        main(["study", "export", str(path), "--labels", "--out", str(out)])
    assert exc.value.code == 0 and f"wrote {len(labels)} rows" in capsys.readouterr().out
    pd.testing.assert_frame_equal(
        pd.read_csv(out)[["run_id", "task", "id_loss"]], labels[["run_id", "task", "id_loss"]]
    )

    fig, reading = label_scaling_plot(labels)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["ResNet-SL frequent", "ResNet-SL tail"]
    assert "nats" in ax.get_ylabel() and "pre-training labels k" in ax.get_xlabel()
    by_k = frequent.groupby("n_labels")["id_loss"].mean()
    first, last = by_k.iloc[0], by_k.iloc[-1]
    expected = f"frequent ({len(groups.frequent)} labels) from {first:.3f} at k = 2 to {last:.3f}"
    assert f"{expected} at k = 6" in reading and reading.endswith(".")


def test_label_scaling_plot_needs_label_scaling_runs() -> None:
    empty = pd.DataFrame(columns=["family", "label_group", "n_labels", "id_loss", "n_classes"])
    assert label_scaling_plot(empty) is None
