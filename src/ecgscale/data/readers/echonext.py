"""EchoNext (structural heart disease from the ECG; Columbia University Irving Medical Center) in
its official PhysioNet release layout: PhysioNet `echonext` (Elias & Finer 2025, versions 1.1.0 and
1.1.1; the EchoNext-Mini dataset of Hughes et al. 2026, NEJM AI, from the EchoNext model of
Poterucha et al. 2025).

Expected layout (reader `echonext`)::

    SRC/echonext_metadata_100k.csv       one row per ECG (100,000 ECGs, 36,286 patients); the
                                         columns used are listed below (row counts as reported
                                         for 1.1.x)
    SRC/EchoNext_train_waveforms.npy     float64 (72,475, 1, 2500, 12)
    SRC/EchoNext_val_waveforms.npy       float64 (4,626, 1, 2500, 12)
    SRC/EchoNext_test_waveforms.npy      float64 (5,442, 1, 2500, 12)
    SRC/EchoNext_<split>_tabular_features.npy   (rows, 7) standardised copies of 7 metadata
                                         columns, for the EchoNext-Mini model; not read
    SRC/EchoNext_no_split_waveforms.npy  the `no_split` ECGs; read only with `-o no_split=train`

Row i of `EchoNext_<split>_waveforms.npy` is the i-th row of the metadata CSV (in file order) whose
`split` is `<split>`; a file whose row count differs is a one-line error naming it. Each array row
is one 10 s ECG at 250 Hz, time x lead, leads I, II, III, aVR, aVL, aVF, V1-V6 (the order of the
EchoNext code, `parse_xml.py`).

Uncertain about the layout (no copy of the release could be opened here; the layout was taken from
the EchoNext authors' code, PierreElias/IntroECG `7-EchoNext Minimodel`, and from public code that
reads the 1.1.x release): the metadata file is also accepted as `EchoNext_metadata_100k.csv` (or
give `-o metadata=PATH`); `no_split` holds 17,457 ECGs, and whether the release has a waveform file
for them (named here as one third-party configuration names it) is not established, hence not read
by default. The 1.0.0 release may differ; a different layout is a one-line error naming the file.

Units: the released waveforms are NOT in mV. They went through the EchoNext preprocessing: GE MUSE
samples (integer counts) at 250 Hz, baseline wander removed by two median filters (0.2 s, then
0.6 s), each lead clipped to fixed bounds, then standardised `(x - mean) / std` with per-lead
training-set parameters (`waveform_normalization_params.json` of the EchoNext-Mini model, copied
below as `NORM_MEAN`, `NORM_STD`, in counts). `units="mv"` (default) undoes the standardisation with
those parameters and converts counts to mV at `uv_per_count` = 4.88 uV per count (the amplitude
resolution of MUSE XML waveforms): mV = (z * std + mean) * 4.88e-3. Clipped peaks stay clipped
(the bounds are 0.6-2.7 mV in magnitude, depending on the lead) and the baseline removal is not
undone. `units="z"` stores the released values unchanged (standardised, not mV; the provenance says
so). This is inferred, not documented by the release: the EchoNext-Mini model was trained on this
release, its README says the PhysioNet arrays are "already preprocessed" (so its inference skips
the preprocessing), and third-party descriptions of the arrays agree (median filter, percentile
clip, dataset-wide z-score). As a guard, with `units="mv"` a first block of records whose per-lead
standard deviation is far from 1 (median over leads above 10, as counts or uV would be) is a
one-line error.

Metadata columns used:

* `split` (required): `train`, `val`, `test` (official, patient-level) or `no_split`. They are kept
  as folds (`ecgscale.data.splits.folds_of_splits`): val is fold 9, test fold 10, training patients
  are spread over folds 1-8 by a hash of `patient_key`; the store's `split` is then the official
  one, and column `echonext_split` keeps the CSV value. `no_split` rows are skipped (listed in the
  manifest) unless `no_split="train"`, which adds them to the training folds except those of
  patients in val or test (skipped, listed). A row with any other split value is skipped, listed.
* `patient_key` (required): patient ids (`patient_ids` in the manifest); an empty one makes the
  ECG its own patient (`ecg:<record id>`), counted in the provenance.
* `ecg_key` (optional): record ids; without the column (or the value), `row<n>`, n the CSV row.
* the 12 label flags (required), 1/0 (or True/False), from the echocardiogram paired with the ECG:

      lvef_lte_45_flag                                   LV ejection fraction <= 45 %
      lvwt_gte_13_flag                                   LV wall thickness >= 13 mm
      aortic_stenosis_moderate_or_greater_flag           aortic stenosis, moderate or more
      aortic_regurgitation_moderate_or_greater_flag      aortic regurgitation, same
      mitral_regurgitation_moderate_or_greater_flag      mitral regurgitation, same
      tricuspid_regurgitation_moderate_or_greater_flag   tricuspid regurgitation, same
      pulmonary_regurgitation_moderate_or_greater_flag   pulmonary regurgitation, same
      rv_systolic_dysfunction_moderate_or_greater_flag   RV systolic dysfunction, same
      pericardial_effusion_moderate_large_flag           pericardial effusion, moderate/large
      pasp_gte_45_flag                                   PA systolic pressure >= 45 mmHg
      tr_max_gte_32_flag                                 TR peak velocity >= 3.2 m/s (as read)
      shd_moderate_or_greater_flag                       composite: any of the 11 above

  Each is kept as a column of its own (1.0, 0.0, missing); a missing or unreadable value is
  unknown, never negative, and counted per column in the provenance (`label_unknown`). Label set
  `shd`: the 12 names without `_flag`, in this order (the order of the EchoNext model's outputs),
  a record carrying its positive ones; `shd_labels_complete` is `yes` when all 12 flags are known
  (the multi-label task uses only those), else `no` (the record is kept).
* `age_at_ecg` -> `age` (years, capped at 90 by the release); `sex` (`male`/`female`, also M/F or
  1/0 with 1 = male) -> `sex` M/F.
* kept as columns when present: `acquisition_year`, `location_setting`, `race_ethnicity`,
  `most_recent_ecg`, `ventricular_rate`, `atrial_rate`, `pr_interval`, `qrs_duration`,
  `qt_corrected`. Other columns are not read (listed in the provenance, `ignored_columns`).

Waveform files are memory-mapped and read `chunk` records at a time (128 x 2500 x 12 float64 =
31 MB), so memory does not grow with the number of ECGs. A signal with NaN is skipped (the store
does it). Missing files or columns, or arrays of another shape, are one-line errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.data.readers import Skip, Source, positive_option, register_reader
from ecgscale.data.splits import folds_of_splits
from ecgscale.data.store import Record
from ecgscale.errors import ConfigError, DataError

FS = 250.0
SAMPLES = 2500
CHUNK = 128
SPLITS: tuple[str, ...] = ("train", "val", "test")
NO_SPLIT = "no_split"
METADATA_NAMES: tuple[str, ...] = ("echonext_metadata_100k.csv", "EchoNext_metadata_100k.csv")
FLAGS: tuple[str, ...] = (
    "lvef_lte_45_flag",
    "lvwt_gte_13_flag",
    "aortic_stenosis_moderate_or_greater_flag",
    "aortic_regurgitation_moderate_or_greater_flag",
    "mitral_regurgitation_moderate_or_greater_flag",
    "tricuspid_regurgitation_moderate_or_greater_flag",
    "pulmonary_regurgitation_moderate_or_greater_flag",
    "rv_systolic_dysfunction_moderate_or_greater_flag",
    "pericardial_effusion_moderate_large_flag",
    "pasp_gte_45_flag",
    "tr_max_gte_32_flag",
    "shd_moderate_or_greater_flag",
)
CLASSES: tuple[str, ...] = tuple(f.removesuffix("_flag") for f in FLAGS)
LABEL_SET = "shd"
EXTRA: tuple[str, ...] = (
    "acquisition_year", "location_setting", "race_ethnicity", "most_recent_ecg",
    "ventricular_rate", "atrial_rate", "pr_interval", "qrs_duration", "qt_corrected",
)  # fmt: skip
UV_PER_COUNT = 4.88
# Per-lead training-set parameters of the EchoNext preprocessing, in MUSE counts, lead order I, II,
# III, aVR, aVL, aVF, V1-V6: PierreElias/IntroECG, "7-EchoNext Minimodel/models/
# echonext_multilabel_minimodel/waveform_normalization_params.json" (`mean`, `std`).
NORM_MEAN: tuple[float, ...] = (
    5.438902932045533, 4.386144027595723, -0.8828521117626768, -4.901228423594343,
    3.179303315626078, 1.718962497412901, -4.3853678923766815, -1.4991789389444636,
    -0.2390101635046568, 3.622168549154881, 5.396823627457744, 5.660982479475681,
)  # fmt: skip
NORM_STD: tuple[float, ...] = (
    32.4283237955487, 31.37262367036232, 30.155474930762434, 28.126380180199195,
    27.097711990189254, 26.148743373957526, 37.739210938823206, 52.792504469040814,
    56.75138860280555, 49.90223860158139, 45.001427330308026, 39.06606103398455,
)  # fmt: skip
MAX_STD_Z = 10.0  # guard: standardised values have a per-lead std near 1
CITATION = (
    "Elias P, Finer J. EchoNext: A Dataset for Detecting Echocardiogram-Confirmed Structural Heart "
    "Disease from ECGs. PhysioNet (2025), doi:10.13026/r9pp-3y42; Hughes JW et al., EchoNext-Mini, "
    "NEJM AI (2026), doi:10.1056/AIdbp2500516"
)
_UNITS = ("mv", "z")
_NO_SPLIT_MODES = ("skip", "train")
_SEX = {"male": "M", "m": "M", "1": "M", "1.0": "M", "female": "F", "f": "F", "0": "F", "0.0": "F"}
_TRUE, _FALSE = {"1", "1.0", "true"}, {"0", "0.0", "false"}


def waves_file(split: str) -> str:
    """File name of the waveforms of one split."""
    return f"EchoNext_{split}_waveforms.npy"


def _metadata_path(src: Path, metadata: str | Path | None) -> Path:
    if metadata is not None:
        path = Path(metadata)
        if not path.is_file():
            raise DataError(f"{path}: metadata CSV not found")
        return path
    for name in METADATA_NAMES:
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: expected {METADATA_NAMES[0]} (official release layout), not found")


def _key(value: object) -> str | None:
    """An id cell as text: integral floats without `.0`; None for an empty cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def parse_flags(table: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """float `(rows, 12)` label matrix (1.0, 0.0, NaN unknown) and the unknowns per column."""
    out = np.full((len(table), len(FLAGS)), np.nan)
    unknown = {}
    for j, column in enumerate(FLAGS):
        text = table[column].astype(str).str.strip().str.lower()
        out[:, j] = np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan))
        unknown[column] = int(np.isnan(out[:, j]).sum())
    return out, unknown


def _open_waves(path: Path, rows: int) -> np.ndarray:
    """Memory map of one split's waveforms, checked to be `(rows, 1, 2500, 12)` (or without the
    singleton axis)."""
    try:
        waves = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    shape = waves.shape
    if shape[1:] not in ((1, SAMPLES, len(STANDARD_LEADS)), (SAMPLES, len(STANDARD_LEADS))):
        raise DataError(f"{path}: waveforms have shape {shape}, expected (ECGs, 1, 2500, 12)")
    if not np.issubdtype(waves.dtype, np.floating) and not np.issubdtype(waves.dtype, np.integer):
        raise DataError(f"{path}: waveforms of dtype {waves.dtype}, expected numbers")
    if shape[0] != rows:
        raise DataError(
            f"{path}: {shape[0]} ECGs but the metadata CSV has {rows} rows of this split; "
            "row i of the file must be the i-th such row"
        )
    return waves


def _block(waves: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Released values of rows `start:stop` as float64 `(rows, 12, 2500)`."""
    block = np.asarray(waves[start:stop], dtype=np.float64)
    return block.reshape(len(block), SAMPLES, len(STANDARD_LEADS)).transpose(0, 2, 1)


def to_mv(z: np.ndarray, uv_per_count: float = UV_PER_COUNT) -> np.ndarray:
    """Standardised EchoNext values `(..., 12, samples)` -> mV (undo the per-lead z-score with the
    published training-set parameters, then counts -> mV)."""
    mean = np.asarray(NORM_MEAN)[:, None]
    std = np.asarray(NORM_STD)[:, None]
    return (z * std + mean) * (uv_per_count / 1000.0)


@register_reader("echonext")
def read_echonext(
    src: Path,
    *,
    metadata: str | Path | None = None,
    units: str = "mv",
    no_split: str = "skip",
    uv_per_count: float | str = UV_PER_COUNT,
    chunk: int | str = CHUNK,
) -> Source:
    """Read the EchoNext release at `src` (see the module docstring for every field used).

    Args:
        src: the release folder.
        metadata: the metadata CSV (default: SRC/echonext_metadata_100k.csv).
        units: "mv" (default) undoes the release's standardisation (mV); "z" keeps its values.
        no_split: "skip" (default) or "train" (the `no_split` ECGs join the training folds).
        uv_per_count: amplitude of one MUSE count in uV for `units="mv"` (default 4.88).
        chunk: records per read of a waveform file.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: no such dataset folder")
    units = str(units).strip().lower()
    if units not in _UNITS:
        raise ConfigError(f"units {units!r}: expected one of {', '.join(_UNITS)}")
    no_split = str(no_split).strip().lower()
    if no_split not in _NO_SPLIT_MODES:
        raise ConfigError(f"no_split {no_split!r}: expected one of {', '.join(_NO_SPLIT_MODES)}")
    chunk = positive_option(chunk, "chunk")
    uv = positive_option(uv_per_count, "uv_per_count", float)
    csv = _metadata_path(src, metadata)
    table = pd.read_csv(csv, low_memory=False)
    missing = [c for c in ("split", "patient_key", *FLAGS) if c not in table.columns]
    if missing:
        raise DataError(
            f"{csv}: missing columns {missing}; expected split, patient_key and the 12 label "
            "flags of the official release"
        )
    split = table["split"].astype(str).str.strip().str.lower().to_numpy()
    flags, unknown = parse_flags(table)
    keys = [_key(v) for v in table["ecg_key"]] if "ecg_key" in table.columns else None
    rids = [(None if keys is None else keys[i]) or f"row{i}" for i in range(len(table))]
    patient_keys = [_key(v) for v in table["patient_key"]]
    patients = [p or f"ecg:{r}" for p, r in zip(patient_keys, rids, strict=True)]
    readable = list(SPLITS) + ([NO_SPLIT] if no_split == "train" else [])
    rows_of = {s: np.flatnonzero(split == s) for s in readable}
    held_out = {patients[i] for s in ("val", "test") for i in rows_of[s]}
    dropped_no_split = [i for i in rows_of.get(NO_SPLIT, []) if patients[i] in held_out]
    waves = {}
    for s, rows in rows_of.items():
        if len(rows) == 0:
            continue
        path = src / waves_file(s)
        if not path.is_file():
            raise DataError(
                f"{src}: expected {path.name} for the {len(rows)} ECGs of split {s!r} "
                "(official release layout), not found"
            )
        waves[s] = _open_waves(path, len(rows))
    if not waves:
        raise DataError(f"{csv}: no ECG of split train, val or test")
    fold_split = np.where(split == NO_SPLIT, "train", split)
    usable = np.isin(split, readable)
    usable[dropped_no_split] = False
    folds = np.zeros(len(table), dtype=np.int16)
    folds[usable] = folds_of_splits(fold_split[usable], np.asarray(patients)[usable])
    check = next(iter(waves.values()))
    released_std = _block(check, 0, min(chunk, len(check))).std(axis=(0, 2))
    if units == "mv" and float(np.median(released_std)) > MAX_STD_Z:
        raise DataError(
            f"{src / waves_file(next(iter(waves)))}: per-lead std of the first ECGs is "
            f"{float(np.median(released_std)):.3g} (median), not about 1 as for the standardised "
            "release; these are not standardised values (pass -o units=z to keep them as they are)"
        )
    extra = [c for c in EXTRA if c in table.columns]
    used = {"split", "patient_key", "ecg_key", "age_at_ecg", "sex", *FLAGS, *extra}
    ages = pd.to_numeric(table["age_at_ecg"], errors="coerce") if "age_at_ecg" in table else None
    sexes = table["sex"] if "sex" in table.columns else None
    extras = table[extra].to_dict("records") if extra else [{} for _ in range(len(table))]

    def record(i: int, signal: np.ndarray) -> Record:
        known = ~np.isnan(flags[i])
        meta = {
            "source": "echonext",
            "fold": int(folds[i]),
            "echonext_split": split[i],
            "age": None if ages is None or pd.isna(ages.iloc[i]) else float(ages.iloc[i]),
            "sex": None if sexes is None else _SEX.get(str(sexes.iloc[i]).strip().lower()),
            **{k: None if pd.isna(v) else v for k, v in extras[i].items()},
            **{f: None if np.isnan(v) else float(v) for f, v in zip(FLAGS, flags[i], strict=True)},
            f"labels_{LABEL_SET}": [c for c, v in zip(CLASSES, flags[i], strict=True) if v == 1],
            f"{LABEL_SET}_labels_complete": "yes" if known.all() else "no",
        }
        if units == "mv":
            signal = to_mv(signal, uv)
        return Record(signal.astype(np.float32), FS, STANDARD_LEADS, rids[i], patients[i], meta)

    def records() -> Iterator[Record | Skip]:
        dropped = set(dropped_no_split)
        for s, data in waves.items():
            rows = rows_of[s]
            for start in range(0, len(rows), chunk):
                block = _block(data, start, start + chunk)
                for i, signal in zip(rows[start : start + chunk], block, strict=True):
                    if i in dropped:
                        yield Skip(rids[i], f"split {NO_SPLIT}: patient also in val or test")
                        continue
                    yield record(int(i), signal)
        for i in np.flatnonzero(~np.isin(split, readable)):
            if split[i] == NO_SPLIT:
                reason = (
                    f"split {NO_SPLIT}: outside the official splits (-o no_split=train adds it)"
                )
            else:
                reason = f"split {table['split'].iloc[i]!r}: expected train, val, test or no_split"
            yield Skip(rids[i], reason)

    units_note = (
        f"mV: released per-lead z-scores undone with the EchoNext-Mini training-set parameters, "
        f"{uv:g} uV per MUSE count (clipped peaks stay clipped, baseline removed)"
        if units == "mv"
        else "released values unchanged: per-lead z-scores of the EchoNext preprocessing, NOT mV"
    )
    return Source(
        name="echonext",
        count=len(table),
        records=records(),
        label_sets={LABEL_SET: list(CLASSES)},
        provenance={
            "dataset": "EchoNext (PhysioNet echonext)",
            "folds": "official splits: val fold 9, test fold 10, training patients hashed to 1-8",
            "src": str(src.resolve()),
            "metadata": csv.name,
            "files": [waves_file(s) for s in waves],
            "units": units_note,
            "released_std_first_ecgs": [round(float(v), 4) for v in released_std],
            "splits": {s: int((split == s).sum()) for s in (*SPLITS, NO_SPLIT)},
            "no_split": no_split,
            "label_unknown": unknown,
            "patients_missing": sum(p is None for p in patient_keys),
            "ignored_columns": [c for c in table.columns if c not in used],
            "citation": CITATION,
        },
        patient_ids={"echonext": "source: patient_key of the metadata CSV (per ECG where empty)"},
    )
