"""The primary metric of a design study, over the whole test fold.

PhysioNet-format data (a `physionet2021` store trained on its `scored` label set) is scored with
the PhysioNet/CinC 2021 challenge score: the supervised head's probabilities on the validation
fold set one threshold per class (F1-optimal, `ecgscale.evaluate.metrics.tune_thresholds`), and the
decisions on the test fold are scored against the official reward matrix. Outputs and labels are
matched to the challenge's classes by their SNOMED-CT names, never by position, so a run whose
classes are ordered differently from the scoring table is scored correctly (the published code
compared columns by position). Other data use the macro AUROC of the head on the test fold, which
the study runner records as metric `auroc` of task `id`; both are computed over the whole fold,
not averaged over batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ecgscale.data.store import Store
from ecgscale.errors import DataError
from ecgscale.evaluate.challenge2021 import (
    ChallengeTables,
    challenge_score,
    load_challenge_tables,
    scoring_folder,
)
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.id_eval import source_classes
from ecgscale.evaluate.metrics import tune_thresholds
from ecgscale.study.results import RUN_RESULT_COLUMNS, Results
from ecgscale.study.spec import StudySpec
from ecgscale.train.checkpoint import load_tensors, strip_prefix

CHALLENGE_METRIC = "challenge2021"
AUROC_METRIC = "auroc"
CHALLENGE_LABEL_SET = "scored"


def challenge_tables_of(store: Store, label_set: str) -> ChallengeTables | None:
    """The scoring tables of a PhysioNet-format store trained on `scored`; None for other data."""
    if store.manifest.get("name") != "physionet2021" or label_set != CHALLENGE_LABEL_SET:
        return None
    recorded = store.manifest.get("provenance", {}).get("scoring")
    folder = scoring_folder(recorded)  # none recorded: the tables packaged with ecgscale
    if not folder.is_dir():
        raise DataError(f"{store.path}: manifest names no readable scoring folder ({recorded!r})")
    return load_challenge_tables(folder)


def challenge_from_probabilities(
    tables: ChallengeTables,
    classes: Sequence[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
) -> float:
    """Challenge score on the test records of per-class probabilities thresholded on validation.

    Args:
        tables: the official scoring tables.
        classes: the code (or `a|b` codes) naming each column of `y_*` and `p_*`, in their order.
        y_val, y_test: `(records, columns)` 0/1 labels; p_val, p_test: probabilities.
    """
    for name in classes:
        if not tables.column_map([name]).any():
            raise DataError(f"class {name!r} is not scored by {tables.folder}/weights.csv")
    thresholds = tune_thresholds(y_val, p_val)
    decisions = p_test >= thresholds[None, :]
    outputs, _ = tables.encode_outputs(list(classes), decisions)
    labels, _ = tables.encode_outputs(list(classes), np.asarray(y_test) > 0)
    return challenge_score(tables, labels, outputs)


def head_probabilities(
    run_dir: str | Path, store: Store, label_set: str
) -> tuple[list[str], np.ndarray]:
    """The run's classes and its supervised head's probabilities `(records, classes)` on `store`."""
    tensors, meta = load_tensors(Path(run_dir) / "best.safetensors")
    head = strip_prefix("objective.head.linear", tensors)
    if not head:
        raise DataError(f"{run_dir}: no supervised head to score (objective is not sl)")
    classes = meta.get("classes") or source_classes(store, label_set, None)
    z = (
        torch.from_numpy(np.array(embed(run_dir, store))) @ head["weight"].T.float()
        + head["bias"].float()
    )
    return list(classes), torch.sigmoid(z).numpy()


def run_challenge_score(run_dir: str | Path, store: Store, tables: ChallengeTables) -> float:
    """Challenge score of one run: thresholds on the validation fold, score on the test fold."""
    classes, p = head_probabilities(run_dir, store, CHALLENGE_LABEL_SET)
    all_classes = store.label_sets[CHALLENGE_LABEL_SET]
    y = store.labels(CHALLENGE_LABEL_SET)[:, [all_classes.index(c) for c in classes]]
    val, test = store.split_indices("val"), store.split_indices("test")
    return challenge_from_probabilities(tables, classes, y[val], p[val], y[test], p[test])


def add_challenge_scores(spec: StudySpec, store_path: Path, results: Results) -> int:
    """Record the challenge score (task `id`, metric `challenge2021`) of every finished run that
    lacks it, when the pre-training store is PhysioNet-format; returns how many were added."""
    store = Store(store_path)
    tables = challenge_tables_of(store, spec.label_set)
    if tables is None:
        return 0
    runs = results.runs()
    metrics = results.metrics()
    added = 0
    for _, row in runs[runs["status"] == "done"].iterrows():
        mine = metrics[metrics["run_id"] == row["run_id"]]
        if ((mine["task"] == "id") & (mine["metric"] == CHALLENGE_METRIC)).any():
            continue
        score = run_challenge_score(spec.out / "runs" / row["run_id"], store, tables)
        kept = [(t, m, v) for t, m, v in mine[["task", "metric", "value"]].itertuples(index=False)]
        result = {
            c: None if pd.isna(row[c]) else np.asarray(row[c]).item() for c in RUN_RESULT_COLUMNS
        }
        results.finish(row["run_id"], result, [*kept, ("id", CHALLENGE_METRIC, score)])
        added += 1
    return added
