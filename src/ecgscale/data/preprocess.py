"""The input contract: every record reaches a store as 12 leads in standard order, in mV, at one
sampling rate and one length.

Steps, in order (all vectorised over `(..., leads, samples)`):
1. `harmonise_leads`: map lead names to I, II, III, aVR, aVL, aVF, V1-V6; derive missing limb leads
   from I and II (Einthoven/Goldberger); reject records whose leads cannot be mapped.
2. `resample`: polyphase resampling (`scipy.signal.resample_poly`) to the target rate.
3. `filter_signal`: zero-phase Butterworth high-pass (baseline removal) and optional low-pass, each
   on the record extended at both ends by odd reflection over a fixed duration (`edge_pad_s`), so
   the edges come out the same at any sampling rate.
4. `pad_or_crop`: centred zero padding or cropping to a fixed number of samples.

`PreprocessConfig` holds the choices; `FAMILY_DEFAULTS` gives the documented default per model
family, and every store's manifest records the config it was written with.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import signal as sps

from ecgscale.errors import DataError

STANDARD_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
#: Sampling rates plausible for an ECG in Hz: a record outside is skipped, a target refused.
FS_RANGE_HZ: tuple[float, float] = (50.0, 10_000.0)
#: Shortest record in seconds (one beat at 60 bpm): a shorter record is skipped, a target refused.
MIN_SECONDS = 1.0
_CANONICAL = {name.lower(): name for name in STANDARD_LEADS}
_ALIASES = {"avr": "aVR", "avl": "aVL", "avf": "aVF", "mlii": "II", "ml2": "II", "d1": "I"}


class PreprocessConfig(BaseModel):
    """How raw records become store rows.

    Attributes:
        fs: target sampling rate in Hz, within `FS_RANGE_HZ`.
        length: target number of samples (centred pad/crop), at least `MIN_SECONDS` long.
        highpass_hz: cut-off of the baseline-removal high-pass (None: no high-pass).
        lowpass_hz: cut-off of the low-pass (None: none); cut-offs must be below fs / 2, and the
            high-pass below the low-pass.
        filter_order: Butterworth order of each filter (applied forwards and backwards).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fs: float = Field(400.0, ge=FS_RANGE_HZ[0], le=FS_RANGE_HZ[1])
    length: int = Field(4096, gt=0)
    highpass_hz: float | None = Field(0.5, gt=0)
    lowpass_hz: float | None = Field(None, gt=0)
    filter_order: int = Field(2, ge=1, le=8)

    @model_validator(mode="after")
    def _plausible(self) -> PreprocessConfig:
        if self.length < MIN_SECONDS * self.fs:
            raise ValueError(
                f"length {self.length} at {self.fs:g} Hz is {self.length / self.fs:g} s; "
                f"expected at least {MIN_SECONDS:g} s"
            )
        for name, cutoff in (("highpass_hz", self.highpass_hz), ("lowpass_hz", self.lowpass_hz)):
            if cutoff is not None and cutoff >= self.fs / 2:
                raise ValueError(f"{name} {cutoff:g} must be below fs/2 = {self.fs / 2:g} Hz")
        if None not in (self.highpass_hz, self.lowpass_hz) and self.highpass_hz >= self.lowpass_hz:
            raise ValueError(f"highpass_hz {self.highpass_hz:g} must be below lowpass_hz")
        return self


#: Documented default input contract per model family (README, "Input contract").
FAMILY_DEFAULTS: dict[str, PreprocessConfig] = {
    # Ribeiro et al. 2020 / CODE: 400 Hz, 4096 samples (10.24 s), baseline removed.
    "resnet": PreprocessConfig(fs=400.0, length=4096, highpass_hz=0.5),
    # HeartLang-style beat tokens: 100 Hz, 10 s, 0.5-45 Hz band-pass.
    "beat_transformer": PreprocessConfig(fs=100.0, length=1000, highpass_hz=0.5, lowpass_hz=45.0),
    # PTB-XL benchmark models (xresnet1d, InceptionTime): 100 Hz, 10 s.
    "ptbxl_benchmark": PreprocessConfig(fs=100.0, length=1000, highpass_hz=0.5),
}


def canonical_lead(name: str) -> str | None:
    """Standard name of lead `name` (case-insensitive, common aliases), or None if unknown."""
    key = name.strip().lower()
    return _CANONICAL.get(key) or _ALIASES.get(key)


def harmonise_leads(x: np.ndarray, leads: list[str] | tuple[str, ...]) -> np.ndarray:
    """Reorder `x` `(..., len(leads), samples)` to the 12 standard leads.

    Missing III, aVR, aVL, aVF are derived from I and II; a missing I or II is derived from
    the other and III when possible. Raises `DataError` when a precordial lead or the limb pair
    is missing.
    """
    names = [canonical_lead(lead) for lead in leads]
    index = {name: i for i, name in enumerate(names) if name is not None}
    out = np.empty((*x.shape[:-2], 12, x.shape[-1]), dtype=np.float32)

    def get(name: str) -> np.ndarray | None:
        return x[..., index[name], :] if name in index else None

    lead_i, lead_ii, lead_iii = get("I"), get("II"), get("III")
    if lead_i is None and lead_ii is not None and lead_iii is not None:
        lead_i = lead_ii - lead_iii
    if lead_ii is None and lead_i is not None and lead_iii is not None:
        lead_ii = lead_i + lead_iii
    if lead_i is None or lead_ii is None:
        raise DataError(f"leads {list(leads)}: need two of I, II, III to build the limb leads")
    derived = {
        "I": lead_i,
        "II": lead_ii,
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    for k, name in enumerate(STANDARD_LEADS):
        measured = get(name)
        if measured is not None:
            out[..., k, :] = measured
        elif name in derived:
            out[..., k, :] = derived[name]
        else:
            raise DataError(f"leads {list(leads)}: precordial lead {name} is missing")
    return out


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling of `x` `(..., samples)` from `fs_in` to `fs_out` Hz (float32)."""
    if fs_in == fs_out:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    y = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(np.float32, copy=False)


def edge_pad_s(cutoff_hz: float, order: int) -> float:
    """Seconds of odd-reflection padding at each end for a zero-phase Butterworth filter:
    0.75 x order cut-off periods (3 s for the order-2 0.5 Hz high-pass), after which its edge
    transient has decayed (synthetic 20 s records: within 0.002 mV of padding by the whole record,
    orders 2-6). A duration, not a number of samples, so edges do not depend on the rate."""
    return 0.75 * order / cutoff_hz


def filter_signal(x: np.ndarray, fs: float, config: PreprocessConfig) -> np.ndarray:
    """Zero-phase Butterworth high-pass and/or low-pass of `x` `(..., samples)` at `fs` Hz.

    Each filter pads `edge_pad_s` seconds (at least scipy's default samples, at most the record
    less one sample) at both ends."""
    bands = []
    if config.highpass_hz is not None:
        bands.append(("highpass", config.highpass_hz))
    if config.lowpass_hz is not None:
        if config.lowpass_hz >= fs / 2:
            raise DataError(f"lowpass_hz={config.lowpass_hz} must be below fs/2={fs / 2}")
        bands.append(("lowpass", config.lowpass_hz))
    for kind, cutoff in bands:
        sos = sps.butter(config.filter_order, cutoff, btype=kind, fs=fs, output="sos")
        padlen = max(round(edge_pad_s(cutoff, config.filter_order) * fs), 3 * (2 * len(sos) + 1))
        x = sps.sosfiltfilt(sos, x, axis=-1, padlen=min(x.shape[-1] - 1, padlen))
    return x.astype(np.float32, copy=False)


def pad_or_crop(x: np.ndarray, length: int) -> np.ndarray:
    """Centred zero padding or cropping of `x` `(..., samples)` to `length` samples."""
    n = x.shape[-1]
    if n == length:
        return x
    if n > length:
        start = (n - length) // 2
        return x[..., start : start + length]
    out = np.zeros((*x.shape[:-1], length), dtype=x.dtype)
    start = (length - n) // 2
    out[..., start : start + n] = x
    return out


def preprocess(
    x: np.ndarray, fs: float, leads: list[str] | tuple[str, ...], config: PreprocessConfig
) -> np.ndarray:
    """Apply the whole contract to `x` `(..., leads, samples)` in mV at `fs` Hz.

    Returns float32 `(..., 12, config.length)`. Raises `DataError` for non-finite values, an
    implausible rate (outside `FS_RANGE_HZ`), a record shorter than `MIN_SECONDS` or leads that
    cannot be mapped.
    """
    if not np.all(np.isfinite(x)):
        raise DataError("signal contains NaN or infinite values")
    low, high = FS_RANGE_HZ
    if not low <= fs <= high:
        raise DataError(
            f"sampling rate {fs:g} Hz is implausible for an ECG (expected {low:g}-{high:g} Hz)"
        )
    if x.shape[-1] < MIN_SECONDS * fs:
        raise DataError(
            f"{x.shape[-1]} samples at {fs:g} Hz is {x.shape[-1] / fs:g} s, "
            f"shorter than {MIN_SECONDS:g} s"
        )
    y = harmonise_leads(np.asarray(x, dtype=np.float32), leads)
    y = resample(y, fs, config.fs)
    y = filter_signal(y, config.fs, config)
    return np.ascontiguousarray(pad_or_crop(y, config.length))
