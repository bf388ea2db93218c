"""Patient-disjoint folds, nested data-size subsets and the disjointness checker.

Protocol (as PTB-XL's official `strat_fold`): ten folds numbered 1-10; folds 1-8 train, 9
validation, 10 test. Datasets without official folds get seeded, patient-grouped folds stratified on
each patient's rarest label (scikit-learn's `StratifiedGroupKFold`). Datasets with official
train/validation/test splits instead of folds keep them (`folds_of_splits`): validation is fold 9,
test fold 10, and training patients are spread over folds 1-8 by a hash of their id (no seed, no
dependence on record order; cross-validation tasks use these folds). Data-scaling subsets are
drawn at patient level from one seeded ordering of the training patients, so a smaller fraction
is always contained in a larger one.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ecgscale.errors import DataError

N_FOLDS = 10
VAL_FOLD = 9
TEST_FOLD = 10


def split_of_fold(fold: np.ndarray) -> np.ndarray:
    """Map fold numbers 1-10 to "train" / "val" / "test" (object array)."""
    fold = np.asarray(fold)
    return np.where(fold == TEST_FOLD, "test", np.where(fold == VAL_FOLD, "val", "train"))


def folds_of_splits(split: np.ndarray, patient_ids: np.ndarray) -> np.ndarray:
    """Folds 1-10 that keep official "train" / "val" / "test" splits: val -> 9, test -> 10, and a
    training patient's records -> fold 1-8 from the BLAKE2b hash of its id (patient-grouped)."""
    split = np.asarray(split).astype(str)
    unknown = sorted(str(s) for s in set(split) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"splits {unknown}: expected train, val or test")
    pids = np.asarray(patient_ids).astype(str)
    patients, inverse = np.unique(pids, return_inverse=True)
    digest = (hashlib.blake2b(p.encode(), digest_size=8).digest() for p in patients)
    train_folds = np.array([1 + int.from_bytes(d, "big") % (VAL_FOLD - 1) for d in digest])
    folds = np.where(split == "val", VAL_FOLD, train_folds[inverse].reshape(split.shape))
    return np.where(split == "test", TEST_FOLD, folds).astype(np.int16)


def assign_folds(patient_ids: np.ndarray, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """Seeded, patient-grouped, label-stratified folds 1-10 for each record.

    Args:
        patient_ids: `(records,)` patient identifiers.
        labels: `(records, classes)` multi-hot matrix or None; each patient is stratified on its
            rarest positive class (or a "no label" stratum).
        seed: random seed.
    """
    patient_ids = np.asarray(patient_ids).astype(str)
    n = len(patient_ids)
    if labels is None or labels.shape[1] == 0:
        strata = np.zeros(n, dtype=np.int64)
    else:
        labels = np.asarray(labels, dtype=bool)
        freq = labels.sum(axis=0).astype(np.float64)
        rarity = np.where(labels, freq[None, :], np.inf)
        strata = np.where(labels.any(axis=1), rarity.argmin(axis=1), labels.shape[1])
        # A patient's stratum is the rarest class over all of its records.
        frame = pd.DataFrame({"p": patient_ids, "s": strata, "f": rarity.min(axis=1)})
        per_patient = frame.sort_values("f", kind="stable").groupby("p")["s"].first()
        strata = per_patient.loc[patient_ids].to_numpy()
    n_groups = len(np.unique(patient_ids))
    if n_groups < N_FOLDS:
        raise DataError(f"{n_groups} patients are too few for {N_FOLDS} patient-disjoint folds")
    folds = np.zeros(n, dtype=np.int16)
    splitter = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():  # rare strata cannot reach every fold; expected
            warnings.filterwarnings("ignore", message="The least populated class")
            parts = list(splitter.split(np.zeros(n), strata, groups=patient_ids))
    except ValueError:  # no stratum has N_FOLDS members: seeded patient-grouped folds
        patients = np.unique(patient_ids)
        order = np.random.default_rng(seed).permutation(len(patients))
        fold_of = dict(zip(patients[order], np.arange(len(patients)) % N_FOLDS + 1, strict=True))
        return np.array([fold_of[p] for p in patient_ids], dtype=np.int16)
    for k, (_, test) in enumerate(parts):
        folds[test] = k + 1
    return folds


def check_disjoint(patient_ids: np.ndarray, split: np.ndarray) -> None:
    """Raise `DataError` if any patient has records in more than one split."""
    frame = pd.DataFrame({"p": np.asarray(patient_ids).astype(str), "s": np.asarray(split)})
    counts = frame.drop_duplicates().groupby("p")["s"].nunique()
    shared = counts[counts > 1].index.tolist()
    if shared:
        shown = ", ".join(shared[:5]) + (" ..." if len(shared) > 5 else "")
        raise DataError(f"{len(shared)} patients appear in more than one split: {shown}")


def nested_subset(patient_ids: np.ndarray, candidates: np.ndarray, fraction: float, seed: int):
    """Indices of a patient-level subset holding `fraction` of the candidates' patients.

    All fractions drawn with the same `seed` are nested: the patients are ordered once by a seeded
    permutation and the first `ceil(fraction * patients)` are kept.

    Args:
        patient_ids: `(records,)` patient id of every record of the store.
        candidates: indices of the records to draw from (e.g. the training split).
        fraction: in (0, 1].
        seed: random seed of the patient ordering.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"data fraction {fraction} must be in (0, 1]")
    candidates = np.asarray(candidates)
    pids = np.asarray(patient_ids).astype(str)[candidates]
    patients = np.unique(pids)  # sorted: the order does not depend on record order
    order = np.random.default_rng(seed).permutation(len(patients))
    keep = patients[order[: int(np.ceil(fraction * len(patients)))]]
    return np.sort(candidates[np.isin(pids, keep)])
