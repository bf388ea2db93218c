"""Synthetic 12-lead ECGs with known labels: the embedded default that needs no data.

Each heartbeat is a sum of Gaussian waves (P, Q, R, S, T, and the extra waves of bundle-branch
blocks) whose amplitudes are the projections of per-wave 3-D dipole vectors onto the lead vectors
(Einthoven/Goldberger limb leads derived exactly from I and II, precordial leads in the horizontal
plane) - so the 12 leads are mutually consistent. A record is one beat template convolved (FFT) with
its impulse train of R-peak times, plus baseline wander, mains hum and muscle noise.

Labels follow the six CODE abnormalities (Ribeiro et al. 2020) with their defining features:
- 1dAVb: PR interval 220-320 ms (normal 120-200 ms);
- RBBB: QRS 125-160 ms with a late rightward-anterior R' (rSR' in V1, wide S in I and V6);
- LBBB: QRS 130-170 ms, broad notched R in I/aVL/V5-V6 without septal Q, QS in V1, discordant T;
- SB: sinus rate 38-48 bpm; ST: sinus rate 105-140 bpm (normal 55-95 bpm);
- AF: irregular RR (gamma-distributed, CV 0.15-0.3), no P waves, 4-9 Hz fibrillatory waves.
Extra labels for out-of-distribution probes: LVH (high QRS voltage with lateral strain T waves) and
LQT (QTc 480-540 ms). Patient attributes change morphology subtly: men have larger QRS voltage and
shorter QTc; age lengthens PR, rotates the QRS axis leftwards and flattens T. `shift` > 0 moves the
data to another "hospital": electrode gains, noise level, 60 Hz mains, older patients and rotated
precordial leads. `label_noise` > 0 makes the labels those of a fallible reader: each label of
each record disagrees with the feature that defines it with that probability, so a finite-label task
has an irreducible loss (as real annotations do) while the signals are unchanged.

Records of one patient share sex, age, dipole vectors and conduction labels; rhythm varies per
record. Everything is drawn from one seeded generator per batch of `BATCH` records, so the output
depends only on the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.fft
from pydantic import BaseModel, ConfigDict, Field

CODE_LABELS: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
EXTRA_LABELS: tuple[str, ...] = ("LVH", "LQT")
LABEL_SETS: dict[str, tuple[str, ...]] = {"code": CODE_LABELS, "extra": EXTRA_LABELS}
"""The label sets of a synthetic store (`ecgscale.data.prepare.synthesize`)."""
BATCH = 128

# Independent leads I, II, V1-V6; the 12 standard leads are a fixed linear map of these.
_FRONTAL = np.deg2rad([0.0, 60.0])
_PRECORDIAL = np.deg2rad([115.0, 94.0, 75.0, 60.0, 30.0, 0.0])  # from left (x) toward anterior (z)
_PRECORDIAL_GAIN = np.array([1.1, 1.5, 1.6, 1.5, 1.3, 1.1])
# 12 x 8: I, II, III=II-I, aVR=-(I+II)/2, aVL=I-II/2, aVF=II-I/2, V1..V6
_EXPAND = np.zeros((12, 8), dtype=np.float32)
_EXPAND[0, 0] = _EXPAND[1, 1] = 1
_EXPAND[2, :2] = (-1, 1)
_EXPAND[3, :2] = (-0.5, -0.5)
_EXPAND[4, :2] = (1, -0.5)
_EXPAND[5, :2] = (-0.5, 1)
_EXPAND[6:, 2:] = np.eye(6)

# Mean dipole vectors (x left, y inferior, z anterior; mV) and timing of the waves.
_WAVES = ("P", "Q", "R", "S", "T", "R2", "F")  # R2: RBBB R' / LBBB notch; F: unused slot
_VECTORS = np.array(
    [
        [0.09, 0.14, 0.03],  # P
        [-0.12, 0.02, 0.16],  # Q (septal, left-to-right and anterior)
        [0.95, 0.75, -0.45],  # R
        [-0.30, -0.25, -0.35],  # S
        [0.22, 0.20, 0.12],  # T
        [-0.55, 0.0, 0.55],  # R' of RBBB (late, rightward-anterior)
        [0.0, 0.0, 0.0],
    ]
)


class SynthConfig(BaseModel):
    """Settings of the synthetic generator.

    Attributes:
        fs: sampling rate in Hz.
        length: samples per record (centred; records are `length / fs` seconds long).
        records_per_patient: mean number of records per patient (>= 1).
        prevalence: probability of each CODE label and extra label (others are normal).
        noise: multiplier of all noise amplitudes.
        label_noise: probability that a record's label is flipped (annotator error), per label.
        shift: domain shift strength (0 = source domain).
        seed: random seed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fs: float = Field(400.0, gt=0)
    length: int = Field(4096, gt=0)
    records_per_patient: float = Field(1.5, ge=1.0)
    prevalence: dict[str, float] = Field(
        default_factory=lambda: {
            "1dAVb": 0.08,
            "RBBB": 0.08,
            "LBBB": 0.06,
            "SB": 0.08,
            "AF": 0.08,
            "ST": 0.08,
            "LVH": 0.10,
            "LQT": 0.08,
        }
    )
    noise: float = Field(1.0, ge=0)
    label_noise: float = Field(0.0, ge=0, lt=0.5)
    shift: float = Field(0.0, ge=0)
    seed: int = 0


def _lead_matrix(shift: float, rng: np.random.Generator) -> np.ndarray:
    """(8, 3) lead vectors of I, II, V1-V6; `shift` rotates the precordial leads and gains."""
    frontal = np.stack([np.cos(_FRONTAL), np.sin(_FRONTAL), np.zeros(2)], axis=1)
    angles = _PRECORDIAL + np.deg2rad(8.0 * shift)
    precordial = np.stack([np.cos(angles), 0.1 * np.ones(6), np.sin(angles)], axis=1)
    leads = np.concatenate([frontal, precordial * _PRECORDIAL_GAIN[:, None]])
    if shift > 0:
        leads = leads * rng.uniform(1 - 0.15 * shift, 1 + 0.15 * shift, size=(8, 1))
    return leads


def _rotation(angles: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotation matrices from (n, 3) angles (radians) about x, y, z."""
    cx, cy, cz = np.cos(angles).T
    sx, sy, sz = np.sin(angles).T
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def _patients(n: int, cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw patients until `n` records are covered; returns per-record patient attributes."""
    counts = 1 + rng.poisson(cfg.records_per_patient - 1, size=n)
    n_pat = int(np.searchsorted(np.cumsum(counts), n) + 1)
    owner = np.repeat(np.arange(n_pat), counts[:n_pat])[:n]
    p = cfg.prevalence
    male = rng.random(n_pat) < 0.5
    age = np.clip(rng.normal(55 + 10 * cfg.shift, 16, n_pat), 18, 95)
    rbbb = rng.random(n_pat) < p.get("RBBB", 0)
    lbbb = ~rbbb & (rng.random(n_pat) < p.get("LBBB", 0) / max(1e-9, 1 - p.get("RBBB", 0)))
    attrs = {
        "patient": owner,
        "male": male[owner],
        "age": age[owner] + rng.uniform(0, 2, n),  # records span a couple of years
        "rbbb": rbbb[owner],
        "lbbb": lbbb[owner],
        "avb": (rng.random(n_pat) < p.get("1dAVb", 0))[owner],
        "lvh": (rng.random(n_pat) < p.get("LVH", 0))[owner],
        "lqt": (rng.random(n_pat) < p.get("LQT", 0))[owner],
        "rot": rng.normal(0, np.deg2rad(12), (n_pat, 7, 3))[owner],
        "gain": rng.lognormal(0, 0.15, (n_pat, 7))[owner],
    }
    return attrs


def _rhythm(n: int, cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-record rhythm: 0 normal sinus, 1 SB, 2 ST, 3 AF, with the mean heart rate (bpm)."""
    p = cfg.prevalence
    probs = np.array([p.get("SB", 0), p.get("ST", 0), p.get("AF", 0)])
    u = rng.random(n)
    kind = np.where(
        u < probs[0], 1, np.where(u < probs[:2].sum(), 2, np.where(u < probs.sum(), 3, 0))
    )
    hr = np.select(
        [kind == 1, kind == 2, kind == 3],
        [rng.uniform(38, 48, n), rng.uniform(105, 140, n), rng.uniform(70, 130, n)],
        rng.uniform(55, 95, n),
    )
    return {"kind": kind, "hr": hr}


def _beat_times(hr: np.ndarray, af: np.ndarray, duration: float, rng: np.random.Generator):
    """R-peak times (n, beats) in seconds covering [-1, duration + 1]; NaN where unused."""
    n = len(hr)
    rr_mean = 60.0 / hr
    m = int(np.ceil((duration + 2.0) / (60.0 / 150.0 * 0.5))) + 2
    cv = rng.uniform(0.15, 0.3, n)
    k = 1.0 / cv**2
    rr_af = rng.gamma(k[:, None], (rr_mean / k)[:, None], size=(n, m))
    resp = rng.uniform(0.15, 0.35, n)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None]
    hrv = 1 + 0.04 * np.sin(phase + 2 * np.pi * resp * np.arange(m) * rr_mean[:, None])
    rr_sinus = rr_mean[:, None] * (hrv + rng.normal(0, 0.01, (n, m)))
    rr = np.where(af[:, None], np.clip(rr_af, 0.28, 2.5), rr_sinus)
    times = -1.0 + rng.uniform(0, 1, n)[:, None] * rr_mean[:, None] + np.cumsum(rr, 1) - rr[:, :1]
    return np.where(times <= duration + 1.0, times, np.nan)


def _waves(attrs: dict[str, np.ndarray], rhythm: dict[str, np.ndarray], rng: np.random.Generator):
    """Per-record wave centres, widths (s, relative to the R peak) and dipole vectors (n, W, 3)."""
    n = len(rhythm["hr"])
    male, age = attrs["male"], attrs["age"]
    rbbb, lbbb, avb, lvh, lqt = (attrs[k] for k in ("rbbb", "lbbb", "avb", "lvh", "lqt"))
    af = rhythm["kind"] == 3
    qrs = np.where(
        rbbb,
        rng.uniform(0.125, 0.16, n),
        np.where(lbbb, rng.uniform(0.13, 0.17, n), rng.uniform(0.08, 0.105, n)),
    )
    pr_normal = np.clip(0.15 + 0.0006 * (age - 50) + rng.normal(0, 0.012, n), 0.12, 0.195)
    pr = np.where(avb & ~af, rng.uniform(0.22, 0.32, n), pr_normal)
    qtc = np.where(male, 0.405, 0.42) + rng.normal(0, 0.012, n)
    qtc = np.where(lqt, rng.uniform(0.48, 0.54, n), np.clip(qtc, 0.37, 0.445))
    qt = qtc * np.sqrt(60.0 / rhythm["hr"])
    onset = -0.45 * qrs
    centre = np.stack(
        [
            onset - pr + 0.055,
            onset + 0.12 * qrs,
            np.zeros(n),
            0.28 * qrs,
            onset + qt - 0.09,
            0.38 * qrs,
            np.zeros(n),
        ],
        axis=1,
    )
    width = np.stack(
        [
            np.full(n, 0.022),
            0.06 * qrs,
            0.1 * qrs,
            0.08 * qrs,
            np.full(n, 0.045) + 0.02 * (qt - 0.4),
            0.09 * qrs,
            np.full(n, 0.01),
        ],
        axis=1,
    )
    # Patient morphology: rotated and scaled mean vectors; sex and age effects.
    axis_age = np.deg2rad(-0.4 * (age - 50))  # leftward QRS axis with age (frontal rotation)
    rot_angles = attrs["rot"].copy()
    rot_angles[:, 2, 2] += axis_age
    vec = np.einsum(
        "nwij,wj->nwi", _rotation(rot_angles.reshape(-1, 3)).reshape(n, 7, 3, 3), _VECTORS
    )
    vec = vec * attrs["gain"][:, :, None]
    qrs_gain = np.where(male, 1.12, 0.9) * np.where(lvh, rng.uniform(1.7, 2.2, n), 1.0)
    vec[:, 1:4] *= qrs_gain[:, None, None]
    vec[:, 4] *= (1 - 0.004 * (age - 50))[:, None]
    vec[:, 4] = np.where(lvh[:, None], vec[:, 4] * np.array([-0.6, 0.6, 0.4]), vec[:, 4])
    vec[:, 0] *= ~af[:, None]
    # RBBB: late rightward-anterior R'; LBBB: no septal Q, broad notched leftward-posterior R,
    # discordant T.
    vec[:, 5] = rbbb[:, None] * _VECTORS[5] * rng.uniform(0.9, 1.3, (n, 1))
    lb = lbbb[:, None]
    vec[:, 1] = np.where(lb, 0.0, vec[:, 1])
    vec[:, 2] = np.where(lb, vec[:, 2] * 0.8 + np.array([0.3, -0.2, -0.6]), vec[:, 2])
    vec[:, 5] = np.where(lb, vec[:, 2] * 0.9, vec[:, 5])
    centre[:, 5] = np.where(lbbb, 0.3 * qrs, centre[:, 5])
    centre[:, 2] = np.where(lbbb, -0.15 * qrs, centre[:, 2])
    width[:, 2] = np.where(lbbb, 0.12 * qrs, width[:, 2])
    vec[:, 3] = np.where(lb, vec[:, 3] * 0.3, vec[:, 3])
    vec[:, 4] = np.where(lb, -0.8 * vec[:, 4] - np.array([0.1, 0.05, -0.1]), vec[:, 4])
    return centre, width, vec, {"pr": pr, "qrs": qrs, "qtc": qtc}


def generate_batch(n: int, cfg: SynthConfig, rng: np.random.Generator, first_patient: int = 0):
    """Generate `n` records: float32 `(n, 12, cfg.length)` in mV and a list of metadata rows."""
    fs, length = cfg.fs, cfg.length
    duration = length / fs
    attrs = _patients(n, cfg, rng)
    rhythm = _rhythm(n, cfg, rng)
    af = rhythm["kind"] == 3
    centre, width, vec, intervals = _waves(attrs, rhythm, rng)
    leads = _lead_matrix(cfg.shift, rng)  # (8, 3)
    # Beat template (n, 8, L) over [-0.55, +0.8] s around the R peak.
    pre, post = int(0.55 * fs), int(0.8 * fs)
    t = (np.arange(-pre, post) / fs).astype(np.float32)
    z = (t - centre[:, :, None].astype(np.float32)) / width[:, :, None].astype(np.float32)
    shapes = np.exp(np.float32(-0.5) * z * z)
    amps = np.einsum("lc,nwc->nlw", leads, vec).astype(np.float32)
    template = np.matmul(amps, shapes)
    # Impulse train of R peaks (respiratory amplitude modulation), convolved with the template.
    beats = _beat_times(rhythm["hr"], af, duration, rng)
    nfft = scipy.fft.next_fast_len(length + pre + post + int(fs))
    offset = pre + int(fs)  # sample of t = -1 s in the padded frame; template starts pre earlier
    pos = np.rint(beats * fs).astype(np.float64) + int(fs)
    valid = np.isfinite(pos) & (pos >= 0) & (pos < nfft)
    rows = np.broadcast_to(np.arange(n)[:, None], pos.shape)[valid]
    train = np.zeros((n, nfft), dtype=np.float32)
    weight = 1 + 0.05 * np.sin(np.nan_to_num(beats) * 2 * np.pi * 0.25)
    np.add.at(train, (rows, pos[valid].astype(np.int64)), weight[valid].astype(np.float32))
    spec = scipy.fft.rfft(template, nfft, axis=-1, workers=-1)
    spec *= scipy.fft.rfft(train, nfft, axis=-1, workers=-1)[:, None, :]
    ecg = scipy.fft.irfft(spec, nfft, axis=-1, workers=-1)[
        ..., offset - pre : offset - pre + length
    ]
    ecg = ecg + _noise(n, cfg, af, rng)
    signals = np.matmul(_EXPAND, ecg)
    labels = _labels(attrs, rhythm)
    if cfg.label_noise > 0:  # drawn after the signals, which stay those of label_noise = 0
        labels = {k: v ^ (rng.random(n) < cfg.label_noise) for k, v in labels.items()}
    meta = [
        {
            "record_id": f"syn{cfg.seed}_{first_patient}_{i:06d}",
            "patient_id": f"p{cfg.seed}_{first_patient + attrs['patient'][i]:07d}",
            "source": f"synthetic(shift={cfg.shift:g})",
            "age": float(np.round(attrs["age"][i], 1)),
            "sex": "M" if attrs["male"][i] else "F",
            "heart_rate": float(rhythm["hr"][i]),
            "pr_ms": float(1000 * intervals["pr"][i]),
            "qrs_ms": float(1000 * intervals["qrs"][i]),
            "qtc_ms": float(1000 * intervals["qtc"][i]),
            "labels_code": [c for c in CODE_LABELS if labels[c][i]],
            "labels_extra": [c for c in EXTRA_LABELS if labels[c][i]],
        }
        for i in range(n)
    ]
    return signals, meta, int(attrs["patient"].max()) + 1


def _noise(n: int, cfg: SynthConfig, af: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander, mains hum, muscle noise and AF fibrillatory waves, (n, 8, length) mV.

    Muscle noise is cut from one seeded bank of white noise at random offsets per record and lead
    (a copy instead of 8 x length fresh normal draws per record).
    """
    t = (np.arange(cfg.length) / cfg.fs).astype(np.float32)
    scale = np.float32(cfg.noise * (1 + cfg.shift))
    two_pi = np.float32(2 * np.pi)

    def sines(freq: np.ndarray) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, freq.shape).astype(np.float32)
        return np.sin(two_pi * freq.astype(np.float32) * t + phase)

    mix = (rng.normal(0, 0.12, (n, 8, 2)) * scale).astype(np.float32)
    out = np.matmul(mix, sines(rng.uniform(0.05, 0.45, (n, 2, 1))))
    mains_hz = 60.0 if cfg.shift > 0 else 50.0
    if mains_hz < cfg.fs / 2:
        hum_gain = (rng.uniform(0, 0.02, (n, 8, 1)) * scale).astype(np.float32)
        out += np.matmul(hum_gain, sines(np.full((n, 1, 1), mains_hz)))
    bank = rng.standard_normal(cfg.length * 64, dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(bank, cfg.length)
    starts = rng.integers(0, len(windows), n * 8)
    sigma = (rng.uniform(0.005, 0.025, (n, 8, 1)) * scale).astype(np.float32)
    out += windows[starts].reshape(n, 8, cfg.length) * sigma
    # Fibrillatory waves: 4-9 Hz, strongest in V1 (index 2) and the inferior leads.
    rows = np.flatnonzero(af)
    if len(rows):
        fwave = sines(rng.uniform(4, 9, (len(rows), 3, 1))).sum(1)
        fgain = np.array([0.3, 0.7, 1.0, 0.6, 0.4, 0.3, 0.2, 0.2], dtype=np.float32)
        amp = rng.uniform(0.02, 0.05, (len(rows), 1, 1)).astype(np.float32)
        out[rows] += amp * fgain[None, :, None] * fwave[:, None, :]
    return out


def _labels(attrs: dict[str, np.ndarray], rhythm: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    kind = rhythm["kind"]
    return {
        "1dAVb": attrs["avb"] & (kind != 3),
        "RBBB": attrs["rbbb"],
        "LBBB": attrs["lbbb"],
        "SB": kind == 1,
        "AF": kind == 3,
        "ST": kind == 2,
        "LVH": attrs["lvh"],
        "LQT": attrs["lqt"],
    }


def iter_synthetic(
    records: int, cfg: SynthConfig
) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Stream `records` synthetic records in batches of `BATCH` (deterministic for `cfg`)."""
    first_patient = 0
    for k, start in enumerate(range(0, records, BATCH)):
        rng = np.random.default_rng([cfg.seed, k])
        x, meta, n_pat = generate_batch(min(BATCH, records - start), cfg, rng, first_patient)
        for i, row in enumerate(meta):
            row["record_id"] = f"syn{cfg.seed}_{start + i:07d}"
        first_patient += n_pat
        yield x, meta


def generate(records: int, cfg: SynthConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All `records` at once: float32 `(records, 12, length)` in mV and their metadata rows."""
    parts = list(iter_synthetic(records, cfg))
    return np.concatenate([p[0] for p in parts]), [row for p in parts for row in p[1]]
