"""Synthetic ECGs: determinism, structure, and labels confirmed by an independent QRS detector."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb.processing

from ecgscale.data.synth import CODE_LABELS, SynthConfig, generate

FS = 250.0


@pytest.fixture(scope="module")
def batch():
    return generate(240, SynthConfig(fs=FS, length=2500, seed=5))


def test_deterministic_and_shaped(batch) -> None:
    x, meta = batch
    x2, meta2 = generate(240, SynthConfig(fs=FS, length=2500, seed=5))
    np.testing.assert_array_equal(x, x2)
    assert meta == meta2 and x.shape == (240, 12, 2500) and x.dtype == np.float32
    other, _ = generate(20, SynthConfig(fs=FS, length=2500, seed=6))
    assert not np.allclose(other, x[:20])


def test_limb_leads_obey_einthoven(batch) -> None:
    x, _ = batch
    i, ii, iii, avr, avl, avf = np.moveaxis(x[:, :6], 1, 0)
    np.testing.assert_allclose(iii, ii - i, atol=1e-5)
    np.testing.assert_allclose(avr, -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(avl, i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(avf, ii - i / 2, atol=1e-5)


def test_patients_labels_and_attributes(batch) -> None:
    _, meta = batch
    patients = [m["patient_id"] for m in meta]
    assert len(set(patients)) < len(patients)  # some patients have several records
    by_patient: dict[str, set] = {}
    for m in meta:
        by_patient.setdefault(m["patient_id"], set()).add((m["sex"], "RBBB" in m["labels_code"]))
    assert all(len(v) == 1 for v in by_patient.values())  # sex and conduction persist
    counts = {c: sum(c in m["labels_code"] for m in meta) for c in CODE_LABELS}
    assert all(counts[c] >= 5 for c in CODE_LABELS), counts
    assert not any({"SB", "ST"} <= set(m["labels_code"]) for m in meta)
    assert not any({"AF", "1dAVb"} <= set(m["labels_code"]) for m in meta)
    assert all(m["pr_ms"] > 200 for m in meta if "1dAVb" in m["labels_code"])
    assert all(m["pr_ms"] <= 200 for m in meta if not {"1dAVb", "AF"} & set(m["labels_code"]))
    assert all(m["qrs_ms"] >= 120 for m in meta if {"RBBB", "LBBB"} & set(m["labels_code"]))


def test_independent_qrs_detector_confirms_rhythm_labels(batch) -> None:
    """wfdb's XQRS on lead II: heart rate < 50 iff SB, > 100 iff ST, RR irregular (CV > 0.1) iff
    AF; and RBBB shows the terminal R' in V1 (positive 20-90 ms after the R peak of lead II).
    A detector has its own errors, so at least 95 % of records must agree on each check."""
    x, meta = batch
    late = slice(int(0.12 * FS), int(0.19 * FS))  # 20-90 ms after R in a window starting -100 ms
    rhythm_ok, rbbb_ok = [], []
    for k in range(0, 240, 2):
        labels = set(meta[k]["labels_code"])
        peaks = wfdb.processing.xqrs_detect(x[k, 1].astype(np.float64), fs=FS, verbose=False)
        rr = np.diff(peaks) / FS
        hr, cv = 60 / np.median(rr), rr.std() / rr.mean()
        detected = "AF" if cv > 0.1 else "SB" if hr < 50 else "ST" if hr > 100 else "normal"
        truth = next((c for c in ("AF", "SB", "ST") if c in labels), "normal")
        rhythm_ok.append(detected == truth)
        inner = peaks[(peaks > 25) & (peaks < x.shape[-1] - 50)]
        v1 = np.stack([x[k, 6, p - 25 : p + 50] for p in inner]).mean(0)
        rbbb_ok.append((v1[late].max() > 0.35) == ("RBBB" in labels))
    assert np.mean(rhythm_ok) >= 0.95, np.mean(rhythm_ok)
    assert np.mean(rbbb_ok) >= 0.95, np.mean(rbbb_ok)


def test_shift_changes_the_distribution() -> None:
    base, m0 = generate(200, SynthConfig(fs=FS, length=2500, seed=1))
    shifted, m1 = generate(200, SynthConfig(fs=FS, length=2500, seed=1, shift=1.0))
    assert np.mean([m["age"] for m in m1]) > np.mean([m["age"] for m in m0]) + 5
    hf0 = np.abs(np.diff(base, axis=-1)).mean()
    hf1 = np.abs(np.diff(shifted, axis=-1)).mean()
    assert hf1 > 1.3 * hf0  # noisier "hospital"


def test_label_noise_flips_labels_at_its_rate_and_leaves_signals_alone() -> None:
    from ecgscale.data.synth import CODE_LABELS, SynthConfig, generate

    clean_x, clean = generate(1024, SynthConfig(fs=100, length=1000, seed=3))
    noisy_x, noisy = generate(1024, SynthConfig(fs=100, length=1000, seed=3, label_noise=0.05))
    np.testing.assert_array_equal(clean_x, noisy_x)
    flips = [
        (c in a["labels_code"]) != (c in b["labels_code"])
        for a, b in zip(clean, noisy, strict=True)
        for c in CODE_LABELS
    ]
    assert 0.035 < np.mean(flips) < 0.065  # 6,144 draws at p = 0.05
