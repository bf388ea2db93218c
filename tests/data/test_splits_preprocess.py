"""Patient-disjoint splits, nested subsets and the input contract's steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy import signal as sps

from ecgscale.data.preprocess import (
    STANDARD_LEADS,
    PreprocessConfig,
    edge_pad_s,
    filter_signal,
    harmonise_leads,
    pad_or_crop,
    preprocess,
    resample,
)
from ecgscale.data.splits import assign_folds, check_disjoint, folds_of_splits, nested_subset
from ecgscale.errors import DataError


def test_assign_folds_is_patient_grouped_stratified_and_seeded() -> None:
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 400, 1000).astype(str)
    labels = (rng.random((1000, 3)) < [0.5, 0.1, 0.03]).astype(np.uint8)
    folds = assign_folds(patients, labels, seed=3)
    assert set(folds) == set(range(1, 11))
    for p in np.unique(patients):
        assert len(set(folds[patients == p])) == 1
    rare = np.array([labels[folds == f, 2].sum() for f in range(1, 11)])
    assert rare.min() >= 1  # the rare class reaches every fold
    np.testing.assert_array_equal(folds, assign_folds(patients, labels, seed=3))
    assert not np.array_equal(folds, assign_folds(patients, labels, seed=4))


def test_small_datasets_fall_back_to_seeded_patient_folds() -> None:
    patients = np.array([f"p{i // 2}" for i in range(24)])  # 12 patients, 2 records each
    labels = np.eye(6, dtype=np.uint8)[np.arange(24) % 6]  # no class reaches 10 patients
    folds = assign_folds(patients, labels, seed=0)
    assert set(folds) == set(range(1, 11))
    assert all(len(set(folds[patients == p])) == 1 for p in set(patients))
    with pytest.raises(DataError, match="too few"):
        assign_folds(patients[:16], labels[:16], seed=0)


def test_check_disjoint_refuses_shared_patients() -> None:
    check_disjoint(np.array(["a", "a", "b"]), np.array(["train", "train", "test"]))
    with pytest.raises(DataError, match="1 patients appear in more than one split: a"):
        check_disjoint(np.array(["a", "a", "b"]), np.array(["train", "test", "test"]))


def test_nested_subsets_are_nested_and_patient_level() -> None:
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 300, 900).astype(str)
    train = np.flatnonzero(rng.random(900) < 0.8)
    subsets = [nested_subset(patients, train, f, seed=7) for f in (0.1, 0.3, 1.0)]
    assert set(subsets[0]) < set(subsets[1]) < set(subsets[2]) == set(train)
    for sub in subsets:
        chosen = set(patients[sub])
        assert set(np.flatnonzero(np.isin(patients, list(chosen)))) & set(train) == set(sub)
    n_pat = len(set(patients[train]))
    assert len(set(patients[subsets[0]])) == int(np.ceil(0.1 * n_pat))
    with pytest.raises(DataError, match=r"data fraction 1\.5 must be in \(0, 1\]"):
        nested_subset(patients, train, 1.5, seed=0)


def test_limb_leads_derived_from_i_and_ii_match_the_recorded_ones(shared_data: Path) -> None:
    rec = wfdb.rdrecord(str(shared_data / "ptbxl" / "records500" / "00000" / "00010_hr"))
    x = rec.p_signal.T.astype(np.float32)
    full = harmonise_leads(x, rec.sig_name)
    keep = [k for k, name in enumerate(rec.sig_name) if name not in ("III", "AVR", "AVL", "AVF")]
    derived = harmonise_leads(x[keep], [rec.sig_name[k] for k in keep])
    np.testing.assert_allclose(derived, full, atol=0.01)  # device rounding of derived leads
    shuffled = harmonise_leads(x[::-1], rec.sig_name[::-1])
    np.testing.assert_array_equal(shuffled, full)
    with pytest.raises(DataError, match="precordial lead V4 is missing"):
        harmonise_leads(x[:9], rec.sig_name[:9])
    with pytest.raises(DataError, match="need two of I, II, III"):
        harmonise_leads(x[3:], rec.sig_name[3:])


def test_resample_pad_crop_and_contract() -> None:
    fs_in, t = 500.0, np.arange(5000) / 500.0
    sine = np.sin(2 * np.pi * 5 * t).astype(np.float32)
    y = resample(sine[None], fs_in, 400.0)[0]
    assert y.shape == (4000,)
    np.testing.assert_allclose(y[200:-200], np.sin(2 * np.pi * 5 * np.arange(4000) / 400)[200:-200],
                               atol=2e-3)  # fmt: skip
    padded = pad_or_crop(np.ones((2, 10), np.float32), 16)
    assert padded.shape == (2, 16) and padded[0].tolist() == [0] * 3 + [1] * 10 + [0] * 3
    assert pad_or_crop(np.arange(10), 4).tolist() == [3, 4, 5, 6]
    x = np.tile(sine, (12, 1)) + 2.0  # offset removed by the high-pass
    out = preprocess(x, fs_in, STANDARD_LEADS, PreprocessConfig(fs=400, length=4096))
    assert out.shape == (12, 4096) and abs(out[:, 500:3500].mean()) < 0.05
    with pytest.raises(DataError, match="NaN"):
        preprocess(np.full((12, 100), np.nan), fs_in, STANDARD_LEADS, PreprocessConfig())


def test_high_pass_edges_do_not_depend_on_the_sampling_rate() -> None:
    """The same band-limited synthetic records at 500 Hz and, every 5th sample, at 100 Hz: the
    high-passed records agree everywhere, edges included (3 s padding at both rates; measured
    2e-5 mV apart); with the old fixed 90-sample padding (0.18 s at 500 Hz, 0.9 s at 100 Hz) they
    differed by 0.13 / 0.16 mV in the first / last second (up to 0.9 mV over 500 records)."""
    from ecgscale.data.synth import SynthConfig, generate

    raw, _ = generate(20, SynthConfig(fs=500.0, length=5000, seed=5))
    band = sps.butter(8, 30.0, fs=500.0, output="sos")  # below 50 Hz: every 5th sample is exact
    x500 = sps.sosfiltfilt(band, raw.astype(np.float64), axis=-1)[..., :4996]
    x100 = x500[..., ::5]  # the same instants, ending on the same sample
    config = PreprocessConfig(fs=100.0, length=1000, highpass_hz=0.5)
    assert edge_pad_s(0.5, 2) == 3.0
    y500 = filter_signal(x500, 500.0, config)[..., ::5]
    y100 = filter_signal(x100, 100.0, config)
    assert np.abs(y500 - y100).max() < 1e-3
    sos = {fs: sps.butter(2, 0.5, btype="highpass", fs=fs, output="sos") for fs in (100, 500)}
    old500 = sps.sosfiltfilt(sos[500], x500, axis=-1, padlen=90)[..., ::5]
    old100 = sps.sosfiltfilt(sos[100], x100, axis=-1, padlen=90)
    old = np.abs(old500 - old100)
    assert min(old[..., :100].max(), old[..., -100:].max()) > 0.1
    # the edge is that of the longest possible padding (the whole record), at either rate
    whole = sps.sosfiltfilt(sos[100], x100, axis=-1, padlen=x100.shape[-1] - 1)
    assert np.abs(y100 - whole).max() < 0.01
    short = filter_signal(x100[..., :150], 100.0, config)  # 1.5 s: padding capped by the record
    assert short.shape == (20, 12, 150) and np.isfinite(short).all()


def test_folds_of_official_splits_are_patient_grouped_and_order_free() -> None:
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 300, 2000).astype(str)
    split = np.where(patients.astype(int) < 40, "test", "train")
    split[patients.astype(int) >= 280] = "val"
    folds = folds_of_splits(split, patients)
    assert set(folds[split == "val"]) == {9} and set(folds[split == "test"]) == {10}
    train = split == "train"
    assert set(folds[train]) == set(range(1, 9))  # 240 training patients reach every fold
    by_patient = {p: set(folds[patients == p]) for p in np.unique(patients)}
    assert all(len(f) == 1 for f in by_patient.values())
    order = rng.permutation(len(split))
    np.testing.assert_array_equal(folds_of_splits(split[order], patients[order]), folds[order])
    with pytest.raises(DataError, match=r"splits \['holdout'\]"):
        folds_of_splits(np.array(["train", "holdout"]), np.array(["a", "b"]))
