"""Reading one WFDB record into the `Record` contract (float32 mV, lead names, rate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from ecgscale.data.store import Record
from ecgscale.errors import DataError

_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}


def read_wfdb(path: str | Path, record_id: str, patient_id: str, meta: dict[str, Any]) -> Record:
    """Read the WFDB record at `path` (without extension) as a `Record`.

    Raises `DataError` with the reason when the files are missing, truncated or unreadable, or when
    a channel's unit is not a voltage.
    """
    try:
        rec = wfdb.rdrecord(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: WFDB files not found") from None
    except Exception as exc:  # wfdb raises many types for malformed files
        raise DataError(f"{path}: unreadable WFDB record ({type(exc).__name__}: {exc})") from None
    if rec.p_signal is None:
        raise DataError(f"{path}: WFDB record has no signal")
    scale = np.empty(rec.n_sig, dtype=np.float32)
    for k, unit in enumerate(rec.units or ["mV"] * rec.n_sig):
        factor = _TO_MV.get(str(unit).strip().lower())
        if factor is None:
            raise DataError(f"{path}: channel {rec.sig_name[k]} has unit {unit!r}, expected mV/uV")
        scale[k] = factor
    signal = rec.p_signal.T.astype(np.float32) * scale[:, None]
    return Record(signal, float(rec.fs), list(rec.sig_name), record_id, patient_id, meta)
