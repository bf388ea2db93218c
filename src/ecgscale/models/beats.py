"""R-peak detection and beat tokens: the input side of the beat-token Transformer.

**Detector** (`detect_rpeaks`, any sampling rate, `(batch, leads, samples)` at once). Every step is
a whole-array numpy/scipy operation over the batch; there is no per-record Python loop.

1. Band-pass 8-40 Hz (2nd-order Butterworth applied forward and backward, i.e. zero phase, as one
   FFT product; the upper edge is capped at 0.45 fs) keeps
   the QRS slopes and drops baseline wander and most of the P and T waves.
2. Slope envelope: |d/dt| of each lead, weighted by 1 / the lead's noise floor and summed over
   leads, so a clean lead outweighs a noisy one and a flat (missing) lead adds nothing. The floor
   is local: the median |d/dt| of each 1 s window (`noise_window_s`; on a ~33 Hz subsample; the
   larger of a window's and its neighbours', interpolated between window centres, floored at 1e-3
   of the lead's typical beat level), so a lead is down-weighted only where it is noisy (a noise
   burst in one lead no longer makes beats). The local weights share out the whole-record total
   (the sum over leads of 1 / whole-record floor) at each sample: a single lead keeps a constant
   weight. A centred moving average over an odd number of samples (~120 ms; an even one would lag
   by half a sample) gives the envelope.
3. Adaptive threshold: 0.3 x the local beat level, which is the median over 7 neighbouring 1 s
   blocks of each block's envelope maximum (a few large ectopic beats or artifacts do not raise it
   much).
4. Peaks: local maxima of the envelope that are the largest within +-250 ms (refractory period:
   RR intervals shorter than about 250 ms, i.e. rates above 240 beats/min, are not resolved) and
   above the threshold. Leads whose typical beat slope is below 0.2 mV/s are flat and ignored.
5. Search-back (two rounds): in an RR gap longer than 1.6 x the record's median RR, the largest
   refractory-separated local maximum above half the threshold becomes a beat.

The peak is the maximum of the QRS slope envelope: the centre of the QRS complex, which for a
narrow QRS is within a few ms of the R wave (median detection - reference: 0 ms at 100 Hz on
MIT-BIH 100/101/105 and CPSC 2019; 0 to +5.6 ms, up to 2 samples, at 360 Hz). It is not moved to
the largest band-passed deflection nearby: on CPSC 2019, where about a dozen records' references
mark a small first deflection or the QRS onset, that lost 1-4 % of the beats (within 10-50 ms).
Checked against expert annotations with `score_detections` / `evaluate_qrs_reference` (MIT-BIH and
CPSC 2019 in `shared/data/qrs_reference`; `benchmarks/bench_rpeaks.py`).

**Tokenizer** (`tokenize_beats`, at `TokenizerConfig.fs`, 100 Hz by default). A "word" is the
window of one lead from 0.25 s before to 0.35 s after a beat's R peak (60 samples at 100 Hz; the
window covers the P wave and the QRS and most of the ST segment and T wave at normal rates;
zero-padded where it runs past the record's ends). The "sentence" of a record is lead 0's beats in
time order, then lead 1's, and so on: every lead has the same beats (one detection per record on the
lead-combined envelope), and at most `max_tokens // leads` beats per lead are kept (21 for 12 leads
and 256 tokens; the first ones in time; such records are counted as truncated). Each token carries
its lead id and its time bin (R-peak time // `time_bin_s`, clipped to `n_time_bins - 1`). A record
with fewer than `min_beats` detected beats (flat, noise, very short) falls back to fixed windows:
back-to-back word-length windows from the start, centred as if each were a beat; such records are
counted. Sentences are padded to `max_tokens`; `BeatTokens.valid` marks the real tokens, which
always come first.

`tokenize_cached` tokenizes a whole array of records once, in chunks, into `.npy` files in a cache
directory keyed by a hash of the input and of the settings; later calls memory-map them.
`store_tokens` does so for a whole store (keyed by its checksum, cached in the store's `cache/`
folder), so that training, validation and embedding passes of every run on a store share one
tokenization; tokens do not depend on which other records share a batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.fft
import scipy.io
import scipy.signal
import torch
from scipy.ndimage import maximum_filter1d, median_filter, uniform_filter1d

from ecgscale.errors import ConfigError, DataError

if TYPE_CHECKING:
    from ecgscale.data.store import Store

# Bump when the detector or the tokenizer changes what they output: both are part of the cache key.
TOKENIZER_VERSION = 1
DETECTOR_VERSION = 2  # 2: lead weights from local noise floors, centred envelope window


# ---------------------------------------------------------------------------------------------
# R-peak detector


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of `detect_rpeaks` (seconds, Hz and fractions; see the module docstring)."""

    band_hz: tuple[float, float] = (8.0, 40.0)
    integration_s: float = 0.12
    refractory_s: float = 0.25
    block_s: float = 1.0
    level_blocks: int = 7
    threshold: float = 0.3
    searchback_gap: float = 1.6
    searchback_threshold: float = 0.5
    searchback_rounds: int = 2
    min_slope_mv_s: float = 0.2
    noise_window_s: float | None = 1.0

    def __post_init__(self) -> None:
        lo, hi = self.band_hz
        if not 0 < lo < hi:
            raise ConfigError(
                f"DetectorConfig.band_hz: expected 0 < low < high, got {self.band_hz}"
            )
        for name in ("integration_s", "refractory_s", "block_s", "threshold"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"DetectorConfig.{name}: expected > 0, got {getattr(self, name)}")
        if self.noise_window_s is not None and not self.noise_window_s > 0:
            raise ConfigError(
                f"DetectorConfig.noise_window_s: expected > 0 or None, got {self.noise_window_s}"
            )
        if self.level_blocks < 1 or self.searchback_rounds < 0:
            raise ConfigError(
                "DetectorConfig: expected level_blocks >= 1 and searchback_rounds >= 0"
            )


@dataclass(frozen=True)
class RPeaks:
    """Detected R peaks of a batch: peak `i` is at sample `sample[i]` of record `record[i]`.

    Sorted by record, then by sample (int64 arrays of equal length).
    """

    record: np.ndarray
    sample: np.ndarray
    n_records: int

    def counts(self) -> np.ndarray:
        """Beats per record, `(n_records,)` int64."""
        return np.bincount(self.record, minlength=self.n_records)

    def per_record(self) -> list[np.ndarray]:
        """Sample indices of each record's peaks."""
        return np.split(self.sample, np.cumsum(self.counts())[:-1])


def _as_batch(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """`x` as float32 `(batch, leads, samples)` with non-finite values zeroed; `(leads, samples)` is
    one record."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ConfigError(f"{what}: expected (batch, leads, samples), got shape {x.shape}")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _block_max(a: np.ndarray, block: int) -> np.ndarray:
    """Maximum of each whole block of `block` samples along the last axis (at least one block)."""
    n = max(1, a.shape[-1] // block)
    block = min(block, a.shape[-1])
    return a[..., : n * block].reshape(*a.shape[:-1], n, block).max(-1)


@functools.lru_cache(maxsize=64)
def _slope_response(band: tuple[float, float], fs: float, n: int) -> np.ndarray:
    """Frequency response `(n // 2 + 1,)` complex64 of band-pass forward and backward (|H|^2 of a
    2nd-order Butterworth, i.e. `sosfiltfilt`'s) followed by the central difference (i sin w)."""
    sos = scipy.signal.butter(2, list(band), btype="band", fs=fs, output="sos")
    w = 2 * np.pi * np.arange(n // 2 + 1) / n
    _, h = scipy.signal.sosfreqz(sos, worN=w)
    return (np.abs(h) ** 2 * 1j * np.sin(w)).astype(np.complex64)


def _slope(x: np.ndarray, band: tuple[float, float], fs: float) -> np.ndarray:
    """|d/dt| (per sample) of the zero-phase band-passed `x` `(..., samples)`, float32.

    One FFT pair per lead; the record is first extended by 0.5 s of odd reflection at each end (as
    `sosfiltfilt` pads) so the ends do not wrap around.
    """
    samples = x.shape[-1]
    pad = min(samples - 1, round(0.5 * fs))
    n = scipy.fft.next_fast_len(samples + 2 * pad, real=True)
    ext = np.zeros((*x.shape[:-1], n), dtype=np.float32)  # zeros after the right extension
    ext[..., pad : pad + samples] = x
    if pad > 0:
        ext[..., :pad] = 2 * x[..., :1] - x[..., pad:0:-1]
        ext[..., pad + samples : samples + 2 * pad] = 2 * x[..., -1:] - x[..., -2 : -pad - 2 : -1]
    spectrum = scipy.fft.rfft(ext, axis=-1)
    spectrum *= _slope_response(band, fs, n)
    return np.abs(scipy.fft.irfft(spectrum, n, axis=-1)[..., pad : pad + samples])


def _upper_median(a: np.ndarray) -> np.ndarray:
    """The upper median along the last axis (one partition: ~5x faster than `np.median`)."""
    k = a.shape[-1] // 2
    return np.partition(a, k, axis=-1)[..., k]


def _noise_floor(slope: np.ndarray, fs: float, window_s: float | None) -> tuple[np.ndarray, int]:
    """Noise floor of each lead, the median |slope| `(batch, leads, windows)` of each `window_s`
    window (None: one window, the whole record), and the window length in samples. With windows,
    each is the larger of its own and its neighbours' medians."""
    stride = max(1, round(fs / 33.0))  # medians of a ~33 Hz subsample (speed)
    sub = slope[..., ::stride]
    if window_s is None:
        return _upper_median(sub)[..., None], slope.shape[-1]
    win = min(sub.shape[-1], max(1, round(window_s * fs / stride)))
    n_win = sub.shape[-1] // win
    medians = _upper_median(sub[..., : n_win * win].reshape(*sub.shape[:-1], n_win, win))
    return maximum_filter1d(medians, 3, axis=-1, mode="nearest"), win * stride


def _interpolate(values: np.ndarray, period: int, samples: int) -> np.ndarray:
    """`values` `(..., windows)` of back-to-back windows of `period` samples, linearly
    interpolated between window centres (constant beyond the first and last) to `(..., samples)`."""
    position = np.arange(samples) / period - 0.5  # in windows, 0 = the first centre
    left = np.clip(np.floor(position).astype(np.int64), 0, values.shape[-1] - 1)
    right = np.minimum(left + 1, values.shape[-1] - 1)
    frac = np.clip(position - left, 0.0, 1.0).astype(values.dtype)
    low = values[..., left]
    return low + frac * (values[..., right] - low)


def _lead_weights(floor: np.ndarray, level: np.ndarray) -> np.ndarray:
    """1 / noise floor (floored at 1e-3 of the lead's beat `level` `(batch, leads, 1)`); 0 for a
    flat lead. Same shape as `floor` (broadcast with `level`)."""
    floor = np.maximum(floor, 1e-3 * level)
    return np.divide(1.0, floor, out=np.zeros_like(floor), where=(floor > 0) & (level > 0))


def qrs_envelope(
    x: np.ndarray | torch.Tensor, fs: float, config: DetectorConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lead-combined QRS slope envelope and its adaptive threshold, both `(batch, samples)` float32.

    Steps 1-3 of the module docstring; `x` is `(batch, leads, samples)` (or one `(leads, samples)`).
    """
    cfg = config or DetectorConfig()
    x = _as_batch(x, "qrs_envelope")
    if not fs > 0:
        raise ConfigError(f"qrs_envelope: expected fs > 0, got {fs}")
    samples = x.shape[-1]
    lo, hi = cfg.band_hz[0], min(cfg.band_hz[1], 0.45 * fs)
    if lo >= hi:
        raise ConfigError(f"qrs_envelope: fs={fs} Hz is too low for a {lo} Hz high-pass")
    slope = _slope(x, (lo, hi), fs)
    block = max(1, round(cfg.block_s * fs))
    level = np.median(_block_max(slope, block), axis=-1, keepdims=True)
    level[level * fs < cfg.min_slope_mv_s] = 0.0  # a flat lead (or round-off on a constant)
    weight = _lead_weights(_noise_floor(slope, fs, None)[0], level)  # (batch, leads, 1)
    if cfg.noise_window_s is None:
        combined = np.einsum("bls,bl->bs", slope, weight[..., 0])
    else:  # local shares of the whole-record total weight, per window, then per sample
        floor, period = _noise_floor(slope, fs, cfg.noise_window_s)
        local_weight = _lead_weights(floor, level)
        total = local_weight.sum(axis=1, keepdims=True)
        scale = np.divide(
            weight.sum(axis=1, keepdims=True), total, out=np.zeros_like(total), where=total > 0
        )
        local_weight = _interpolate(local_weight * scale, period, samples)
        combined = np.einsum("bls,bls->bs", slope, local_weight)
    env = uniform_filter1d(combined, 2 * round(cfg.integration_s * fs / 2) + 1, axis=-1)
    blocks = _block_max(env, block)
    local = median_filter(blocks, size=(1, min(cfg.level_blocks, blocks.shape[1])), mode="nearest")
    per_sample = np.minimum(np.arange(samples) // block, blocks.shape[1] - 1)
    return env, cfg.threshold * local[:, per_sample]


def _median_per_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of `values` within each group id in `[0, n_groups)`; inf for empty groups."""
    order = np.lexsort((values, group))
    values, counts = values[order], np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    out = np.full(n_groups, np.inf)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = 0.5 * (values[lo] + values[hi])
    return out


def _searchback(
    keys: np.ndarray,
    cand: np.ndarray,
    height: np.ndarray,
    samples: int,
    n: int,
    refractory: int,
    gap: float,
) -> np.ndarray:
    """Add each long RR gap's highest candidate; `keys`, `cand` are record * samples + sample."""
    if len(keys) < 2 or len(cand) == 0:
        return keys
    rec = keys // samples
    rr = np.diff(keys)
    same = rec[1:] == rec[:-1]
    median_rr = _median_per_group(rr[same].astype(np.float64), rec[1:][same], n)
    right = np.clip(np.searchsorted(keys, cand), 1, len(keys) - 1)  # gap between right-1 and right
    crec = cand // samples
    ok = (keys[right - 1] // samples == crec) & (keys[right] // samples == crec)
    ok &= rr[right - 1] > gap * median_rr[crec]
    ok &= (cand - keys[right - 1] > refractory) & (keys[right] - cand > refractory)
    if not ok.any():
        return keys
    gaps, cand, height = right[ok], cand[ok], height[ok]
    order = np.lexsort((-height, gaps))
    _, first = np.unique(gaps[order], return_index=True)
    return np.sort(np.concatenate([keys, cand[order][first]]))


def detect_rpeaks(
    x: np.ndarray | torch.Tensor, fs: float, config: DetectorConfig | None = None
) -> RPeaks:
    """R peaks of every record of `x` `(batch, leads, samples)` in mV at `fs` Hz (any rate).

    One detection per record on the lead-combined envelope (see the module docstring).
    """
    cfg = config or DetectorConfig()
    env, threshold = qrs_envelope(x, fs, cfg)
    batch, samples = env.shape
    refractory = max(1, round(cfg.refractory_s * fs))
    largest = maximum_filter1d(env, 2 * refractory + 1, axis=-1, mode="constant", cval=-np.inf)
    rising = np.empty_like(env, dtype=bool)
    rising[:, 0] = True
    rising[:, 1:] = env[:, 1:] > env[:, :-1]  # first sample of a plateau only
    local_max = (env == largest) & rising & (threshold > 0)
    keys = np.flatnonzero(local_max & (env > threshold))
    # Two maxima closer than the refractory period are equal (a symmetric plateau): keep the first.
    tie = (np.diff(keys) <= refractory) & (keys[1:] // samples == keys[:-1] // samples)
    keys = keys[np.concatenate([[True], ~tie])] if tie.any() else keys
    if cfg.searchback_rounds:
        low = local_max & (env > cfg.searchback_threshold * threshold) & (env <= threshold)
        cand = np.flatnonzero(low)
        height = env.ravel()[cand]
        for _ in range(cfg.searchback_rounds):
            grown = _searchback(keys, cand, height, samples, batch, refractory, cfg.searchback_gap)
            if len(grown) == len(keys):
                break
            keys = grown
    return RPeaks(record=keys // samples, sample=keys % samples, n_records=batch)


# ---------------------------------------------------------------------------------------------
# Scoring against expert references


@dataclass(frozen=True)
class DetectionScore:
    """True and false positives and false negatives of a detector; add scores to pool them.

    `offsets`: detection minus reference of each matched (counted) beat, in the unit of the
    inputs of `score_detections` (seconds from `evaluate_qrs_reference`); not part of equality.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            np.concatenate([self.offsets, other.offsets]),
        )

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN): the fraction of reference beats found."""
        return self.tp / max(1, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        """TP / (TP + FP): positive predictive value, the fraction of detections that are beats."""
        return self.tp / max(1, self.tp + self.fp)

    @property
    def median_offset(self) -> float:
        """Median timing error of the matched beats (detection - reference); NaN without any."""
        return float(np.median(self.offsets)) if len(self.offsets) else float("nan")


def score_detections(
    detected: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
    window: tuple[float, float] | None = None,
) -> DetectionScore:
    """Match detections to reference beats one-to-one, within `tolerance` (same unit, e.g. samples).

    Greedy by distance: all pairs within the tolerance are taken closest first, each beat and each
    detection at most once. With `window = (lo, hi)` only reference beats (for TP/FN) and unmatched
    detections (for FP) inside `[lo, hi]` are counted; matching itself uses everything, so a beat
    near the window's edge is not penalised for a detection just outside.
    """
    det = np.sort(np.asarray(detected, dtype=np.float64))
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    lo = np.searchsorted(det, ref - tolerance, side="left")
    hi = np.searchsorted(det, ref + tolerance, side="right")
    n_pairs = hi - lo
    ref_idx = np.repeat(np.arange(len(ref)), n_pairs)
    det_idx = np.arange(n_pairs.sum()) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    det_idx = det_idx + np.repeat(lo, n_pairs)
    order = np.argsort(np.abs(det[det_idx] - ref[ref_idx]), kind="stable")
    ref_hit = np.zeros(len(ref), dtype=bool)
    det_hit = np.zeros(len(det), dtype=bool)
    match = np.zeros(len(ref), dtype=np.int64)  # the detection of each hit beat
    for r, d in zip(ref_idx[order].tolist(), det_idx[order].tolist(), strict=True):
        if not (ref_hit[r] or det_hit[d]):
            ref_hit[r] = det_hit[d] = True
            match[r] = d
    ref_in = np.ones(len(ref), bool) if window is None else (ref >= window[0]) & (ref <= window[1])
    det_in = np.ones(len(det), bool) if window is None else (det >= window[0]) & (det <= window[1])
    counted = ref_hit & ref_in
    tp = int(counted.sum())
    offsets = det[match[counted]] - ref[counted]
    return DetectionScore(tp, int((~det_hit & det_in).sum()), int(ref_in.sum()) - tp, offsets)


# The beat symbols of the WFDB annotation standard (MIT-BIH); other annotations are not beats.
WFDB_BEATS = frozenset("NLRBAaJSVrFejnE/fQ?")


@dataclass(frozen=True)
class ReferenceRecord:
    """One record with expert R-peak annotations.

    `signal` `(leads, samples)` mV at `fs` Hz; `peaks` 0-based sample indices; `window` the scored
    span in samples (None: the whole record).
    """

    database: str
    name: str
    signal: np.ndarray
    fs: float
    peaks: np.ndarray
    window: tuple[float, float] | None = None


def load_mitdb(
    root: Path, records: tuple[str, ...] = ("100", "101", "105")
) -> list[ReferenceRecord]:
    """MIT-BIH records (both leads, 360 Hz) with their beat annotations (`WFDB_BEATS` only)."""
    import wfdb

    out = []
    for name in records:
        path = Path(root) / name
        if not path.with_suffix(".hea").is_file():
            raise DataError(f"MIT-BIH record {name}: expected {path}.hea, .dat and .atr")
        rec = wfdb.rdrecord(str(path))
        ann = wfdb.rdann(str(path), "atr")
        beats = np.array(
            [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in WFDB_BEATS]
        )
        out.append(ReferenceRecord("mitdb", name, rec.p_signal.T.astype(np.float32), rec.fs, beats))
    return out


def load_cpsc2019(root: Path, records: range | None = None) -> list[ReferenceRecord]:
    """CPSC 2019 records (one lead, 500 Hz) with R peaks, scored on 0.5-9.5 s as in the challenge.

    `R_peak` is stored 1-based (MATLAB): 1 is subtracted (the band-passed |ECG| peaks at
    `R_peak - 1`, see `shared/data/qrs_reference/SOURCES.md`).
    """
    root = Path(root)
    names = sorted(p.stem.removeprefix("data_") for p in (root / "data").glob("data_*.mat"))
    if records is not None:
        names = [n for n in names if int(n) in records]
    if not names:
        raise DataError(f"CPSC 2019: expected data/data_NNNNN.mat and ref/R_NNNNN.mat under {root}")
    out = []
    for name in names:
        ecg = scipy.io.loadmat(root / "data" / f"data_{name}.mat")["ecg"].astype(np.float32)
        peaks = scipy.io.loadmat(root / "ref" / f"R_{name}.mat")["R_peak"].ravel()
        fs = 500.0
        out.append(
            ReferenceRecord("cpsc2019", name, ecg.T, fs, peaks.astype(np.int64) - 1, (250, 4750))
        )
    return out


def resample(x: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """`x` (..., samples) from `fs` to `target_fs` Hz along the last axis (polyphase filter)."""
    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    if ratio == 1:
        return x
    return scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def evaluate_qrs_reference(
    records: list[ReferenceRecord],
    fs: float | None = None,
    tolerance_s: float = 0.05,
    config: DetectorConfig | None = None,
    detector: Callable[[np.ndarray, float], RPeaks] | None = None,
) -> DetectionScore:
    """Pooled score of `detect_rpeaks` on `records`, run at `fs` (None: each record's own rate).

    Records are resampled to `fs` and their reference peaks rescaled (rounded to the nearest
    sample); a detection matches a beat within `tolerance_s` seconds; offsets are in seconds.
    `detector(x (1, leads, samples), fs)` replaces `detect_rpeaks` under `config` (for example an
    earlier version's, to compare).
    """
    total = DetectionScore()
    for rec in records:
        rate = rec.fs if fs is None else fs
        scale = rate / rec.fs
        signal = resample(rec.signal, rec.fs, rate)[None]
        peaks = detector(signal, rate) if detector else detect_rpeaks(signal, rate, config)
        window = None if rec.window is None else (rec.window[0] * scale, rec.window[1] * scale)
        score = score_detections(
            peaks.sample, np.round(rec.peaks * scale), tolerance_s * rate, window
        )
        total += replace(score, offsets=score.offsets / rate)
    return total


def add_noise_bursts(
    signal: np.ndarray,
    fs: float,
    lead: int,
    span_s: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """A copy of `signal` `(leads, samples)` mV with noise bursts in one lead within `span_s`.

    A stress test for lead weighting, like the V2 bursts of MIT-BIH 103: bursts of 1-6 s, 2-15 s
    apart, each smoothed white noise (0.3-1 mV) plus a 3-12 Hz sinusoid (0.5-2 mV, motion
    artefact); the other leads are untouched.
    """
    out = np.array(signal, dtype=np.float32)
    start, stop = round(span_s[0] * fs), min(round(span_s[1] * fs), out.shape[1])
    while start < stop:
        length = min(round(rng.uniform(1.0, 6.0) * fs), stop - start)
        t = np.arange(length) / fs
        noise = np.convolve(rng.standard_normal(length), np.ones(5) / 5, mode="same")
        burst = rng.uniform(0.3, 1.0) * noise
        burst += rng.uniform(0.5, 2.0) * np.sin(2 * np.pi * rng.uniform(3.0, 12.0) * t)
        out[lead, start : start + length] += burst.astype(np.float32)
        start += length + round(rng.uniform(2.0, 15.0) * fs)
    return out


# ---------------------------------------------------------------------------------------------
# Beat tokens


@dataclass(frozen=True)
class TokenizerConfig:
    """Settings of `tokenize_beats` (see the module docstring); `fs` is the input's rate in Hz."""

    fs: float = 100.0
    pre_s: float = 0.25
    post_s: float = 0.35
    max_tokens: int = 256
    time_bin_s: float = 1.0
    n_time_bins: int = 32
    min_beats: int = 2
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if not (self.fs > 0 and self.pre_s >= 0 and self.post_s > 0 and self.time_bin_s > 0):
            raise ConfigError(f"TokenizerConfig: expected positive fs, post_s, time_bin_s: {self}")
        if self.max_tokens < 1 or self.n_time_bins < 1 or self.min_beats < 1:
            raise ConfigError("TokenizerConfig: max_tokens, n_time_bins and min_beats must be >= 1")

    @property
    def pre(self) -> int:
        """Samples before the R peak in a word."""
        return round(self.pre_s * self.fs)

    @property
    def word_len(self) -> int:
        """Samples per word (60 at the defaults: 25 before the R peak, the peak, 34 after)."""
        return self.pre + round(self.post_s * self.fs)

    def key(self) -> str:
        """A stable text form of every setting (part of the cache key)."""
        versions = {"version": TOKENIZER_VERSION, "detector_version": DETECTOR_VERSION}
        return json.dumps({**versions, **asdict(self)}, sort_keys=True)


@dataclass(frozen=True)
class BeatTokens:
    """Beat sentences of a batch of records (numpy; `to_torch` for the model).

    words `(batch, max_tokens, word_len)` float32 mV; lead, time `(batch, max_tokens)` int16 (lead
    id, time bin); valid `(batch, max_tokens)` bool, True for real tokens (they come first, padding
    after); beats `(batch,)` int16 words per lead; fallback, truncated `(batch,)` bool: fixed
    windows instead of beats / beats beyond `max_tokens // leads` dropped.
    """

    words: np.ndarray
    lead: np.ndarray
    time: np.ndarray
    valid: np.ndarray
    beats: np.ndarray
    fallback: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> BeatTokens:
        """A sub-batch (numpy indexing along records); reads only those rows of a memory map."""
        index = index if isinstance(index, slice) else np.asarray(index)
        return BeatTokens(*(np.asarray(getattr(self, f.name)[index]) for f in fields(self)))

    def to_torch(self, device: torch.device | str | None = None) -> TokenBatch:
        """The model's input, trimmed to the longest sentence of the batch."""
        length = max(1, int(self.valid.sum(axis=1).max(initial=0)))

        def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a[:, :length]), device=device).to(dtype)

        return TokenBatch(
            words=tensor(self.words, torch.float32),
            lead=tensor(self.lead, torch.long),
            time=tensor(self.time, torch.long),
            valid=tensor(self.valid, torch.bool),
        )


@dataclass(frozen=True)
class TokenBatch:
    """Torch tensors of a batch of sentences: words `(batch, tokens, word_len)` float32; lead, time
    `(batch, tokens)` int64; valid `(batch, tokens)` bool (True: a real token, False: padding)."""

    words: torch.Tensor
    lead: torch.Tensor
    time: torch.Tensor
    valid: torch.Tensor


def _fallback_centres(n_records: int, samples: int, cfg: TokenizerConfig) -> np.ndarray:
    """Centres of back-to-back word windows from the record's start: `(n_records, k)`."""
    k = max(1, samples // cfg.word_len)
    return np.broadcast_to(cfg.pre + cfg.word_len * np.arange(k), (n_records, k))


def tokenize_beats(
    x: np.ndarray | torch.Tensor, config: TokenizerConfig | None = None
) -> BeatTokens:
    """Beat sentences of `x` `(batch, leads, samples)` in mV at `config.fs` (module docstring)."""
    cfg = config or TokenizerConfig()
    x = _as_batch(x, "tokenize_beats")
    batch, leads, samples = x.shape
    per_lead = cfg.max_tokens // leads
    if per_lead < 1:
        raise ConfigError(
            f"tokenize_beats: {leads} leads do not fit in max_tokens={cfg.max_tokens}"
        )
    peaks = detect_rpeaks(x, cfg.fs, cfg.detector)
    counts = peaks.counts()
    fallback = counts < cfg.min_beats
    keep = ~fallback[peaks.record]
    rec, pos = peaks.record[keep], peaks.sample[keep]
    if fallback.any():  # fixed windows for records without (enough) beats, merged in record order
        rows = np.flatnonzero(fallback)
        centres = _fallback_centres(len(rows), samples, cfg)
        rec = np.concatenate([rec, np.repeat(rows, centres.shape[1])])
        pos = np.concatenate([pos, centres.ravel()])
        order = np.argsort(rec, kind="stable")
        rec, pos = rec[order], pos[order]
    counts = np.bincount(rec, minlength=batch)
    rank = np.arange(len(rec)) - (np.cumsum(counts) - counts)[rec]
    truncated = counts > per_lead
    rec, pos, rank = rec[rank < per_lead], pos[rank < per_lead], rank[rank < per_lead]
    beats = np.minimum(counts, per_lead)
    # Every (beat, lead) window of the zero-padded signal, scattered to its sentence slot.
    pre, width = cfg.pre, cfg.word_len
    padded = np.zeros((batch, leads, samples + width), dtype=np.float32)
    padded[:, :, pre : pre + samples] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    slot = np.arange(leads)[None, :] * beats[rec][:, None] + rank[:, None]  # (beats, leads)
    words = np.zeros((batch, cfg.max_tokens, width), dtype=np.float32)
    lead = np.zeros((batch, cfg.max_tokens), dtype=np.int16)
    time = np.zeros((batch, cfg.max_tokens), dtype=np.int16)
    row = np.broadcast_to(rec[:, None], slot.shape)
    words[row, slot] = windows[rec[:, None], np.arange(leads)[None, :], pos[:, None]]
    lead[row, slot] = np.arange(leads, dtype=np.int16)[None, :]
    bins = np.minimum(pos // max(1, round(cfg.time_bin_s * cfg.fs)), cfg.n_time_bins - 1)
    time[row, slot] = bins.astype(np.int16)[:, None]
    valid = np.arange(cfg.max_tokens)[None, :] < (beats * leads)[:, None]
    return BeatTokens(words, lead, time, valid, beats.astype(np.int16), fallback, truncated)


# ---------------------------------------------------------------------------------------------
# Cache


def _input_hash(x: np.ndarray, scale: float, chunk: int) -> str:
    """BLAKE2b of the array's shape, dtype, scale and bytes, read `chunk` records at a time."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([list(x.shape), x.dtype.str, float(scale)]).encode())
    for start in range(0, len(x), chunk):
        digest.update(np.ascontiguousarray(x[start : start + chunk]).tobytes())
    return digest.hexdigest()


def token_cache_key(x: np.ndarray, config: TokenizerConfig, scale: float = 1.0) -> str:
    """Name of the cache entry of `x` under `config`: a hash of both (32 hex digits)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(_input_hash(x, scale, 1024).encode())
    digest.update(config.key().encode())
    return digest.hexdigest()


def _load_tokens(folder: Path) -> BeatTokens:
    return BeatTokens(
        *(np.load(folder / f"{f.name}.npy", mmap_mode="r") for f in fields(BeatTokens))
    )


def tokenize_cached(
    x: np.ndarray,
    config: TokenizerConfig | None = None,
    *,
    cache_dir: Path | str,
    scale: float = 1.0,
    chunk_size: int = 1024,
    progress: bool = False,
    key: str | None = None,
) -> BeatTokens:
    """Tokens of every record of `x` `(records, leads, samples)`, computed once and memory-mapped.

    `x` may be a memory map in a compact dtype: each chunk of `chunk_size` records is multiplied by
    `scale` (to mV) and tokenized. The entry is `cache_dir/<key>/` holding one `.npy` per
    `BeatTokens` field and `meta.json` (settings, counts of fallback and truncated records); it is
    written to a temporary folder and renamed when complete, so an interrupted run leaves none.
    `key` defaults to `token_cache_key(x, config, scale)`; a caller that knows a content id of
    `x` (a store checksum) passes a key derived from it and the settings instead of hashing `x`.
    """
    cfg = config or TokenizerConfig()
    if x.ndim != 3:
        raise ConfigError(f"tokenize_cached: expected (records, leads, samples), got {x.shape}")
    cache_dir = Path(cache_dir)
    folder = cache_dir / (key or token_cache_key(x, cfg, scale))
    if (folder / "meta.json").is_file():
        return _load_tokens(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache_dir))
    try:
        n, leads, samples = x.shape
        shapes = {
            "words": ((n, cfg.max_tokens, cfg.word_len), np.float32),
            "lead": ((n, cfg.max_tokens), np.int16),
            "time": ((n, cfg.max_tokens), np.int16),
            "valid": ((n, cfg.max_tokens), np.bool_),
            "beats": ((n,), np.int16),
            "fallback": ((n,), np.bool_),
            "truncated": ((n,), np.bool_),
        }
        out = {
            name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shape)
            for name, (shape, dtype) in shapes.items()
        }
        starts = range(0, n, chunk_size)
        if progress:
            from rich.progress import track

            starts = track(starts, description="tokenizing beats")
        for start in starts:
            chunk = np.asarray(x[start : start + chunk_size], dtype=np.float32) * np.float32(scale)
            tokens = tokenize_beats(chunk, cfg)
            for name, array in out.items():
                array[start : start + len(chunk)] = getattr(tokens, name)
        meta = {
            "records": n,
            "leads": leads,
            "samples": samples,
            "fallback": int(out["fallback"].sum()),
            "truncated": int(out["truncated"].sum()),
            "config": json.loads(cfg.key()),
        }
        for array in out.values():
            array.flush()
        del out
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same entry first
            if not (folder / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_tokens(folder)


def _store_cache_dir(store: Store) -> Path:
    """`<store>/cache/beat_tokens`, or the user's cache folder when the store is read-only."""
    if os.access(store.path, os.W_OK):
        return store.path / "cache" / "beat_tokens"
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user / "ecgscale" / "beat_tokens"


def store_tokens(store: Store, config: TokenizerConfig) -> BeatTokens:
    """Beat tokens of every record of `store` under `config` (memory-mapped), tokenized on first
    use and cached by the store's checksum and the settings (`tokenize_cached`)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([store.checksum, store.scale, config.key()]).encode())
    return tokenize_cached(
        store.signals,
        config,
        cache_dir=_store_cache_dir(store),
        scale=store.scale,
        key=digest.hexdigest(),
    )


def encoder_tokens(encoder: Any, store: Store) -> BeatTokens | None:
    """`store_tokens` of `store` for an encoder that reads beat tokens (one whose `tokenizer` is
    a `TokenizerConfig`); None for any other encoder."""
    config = getattr(encoder, "tokenizer", None)
    return store_tokens(store, config) if isinstance(config, TokenizerConfig) else None
