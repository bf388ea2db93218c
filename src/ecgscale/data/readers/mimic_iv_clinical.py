"""Clinical labels of MIMIC-IV-ECG records from the MIMIC-IV Clinical Database (hosp and icu).

`read_mimic_iv_ecg(..., mimic_iv=DIR)` (`-o mimic_iv=DIR`) joins every ECG of `record_list.csv`
to the MIMIC-IV tables under DIR, the root of the MIMIC-IV release (the folder holding `hosp/` and
`icu/`; versions 2.x and 3.x have the same columns). A table is read as `NAME.csv.gz`, or as
`NAME.csv` where only the uncompressed file is there. Fields used, and nothing else:

    record_list.csv             subject_id, ecg_time (with study_id and path, as without DIR)
    hosp/patients.csv.gz        subject_id, gender (M/F), anchor_age, anchor_year
    hosp/admissions.csv.gz      subject_id, hadm_id, admittime, dischtime, edregtime,
                                deathtime, hospital_expire_flag
    icu/icustays.csv.gz         subject_id, intime, outtime
    hosp/diagnoses_icd.csv.gz   hadm_id, icd_code, icd_version

(`patients.dod` is not used: it also counts deaths after discharge, up to a year later.)

Cohort definition. Times are compared as the wall-clock times written in the tables, which in
MIMIC-IV are all one de-identified, per-patient shifted local clock; a timezone suffix (`Z`,
`+05:00`) is dropped, not applied. Times are read as ISO 8601 (`2180-07-23 09:39:00`, a `T`
separator, fractional seconds and a date alone are accepted); anything else is unparseable.

- **Known subject.** Labels are defined only for ECGs whose `subject_id` has a row in
  `patients.csv.gz` and whose `ecg_time` parses; the other ECGs get missing values (unknown, not
  0) in every derived column, and are counted in the provenance.
- **Admission of an ECG** (`hadm_id`): the hospital admission of the same subject whose
  [start, dischtime] contains `ecg_time` (both ends included), where start is `edregtime` when the
  patient came through the emergency department (ED) and that is earlier than `admittime`, else
  `admittime`: an ED ECG taken before the admission order belongs to the admission it led to, as in
  MIMIC-IV-ECG-Ext-ICD (Strodthoff et al. 2024). `-o ed=false` uses [admittime, dischtime].
  Among several containing admissions (overlapping rows), the latest-starting one is chosen.
  ECGs inside no admission (outpatient ECGs, ED visits that were not admitted) have no admission:
  `hadm_id` missing.
- **In-hospital mortality** (`mortality`, 0/1): the ECG's admission has `hospital_expire_flag`
  1 (where the flag is empty: the admission has a `deathtime`). ECGs without an admission get a
  missing value, not 0: whether they died in hospital is not defined.
- **ICU admission within H hours** (`icu_<H>h`, 0/1; H = 24 by default, `-o icu_hours=24,48` for
  several): 1 when an ICU stay of the same subject has `intime` in [ecg_time, ecg_time + H h], else
  0 - for every known-subject ECG, admitted or not (icustays covers every ICU stay of the
  hospital, so no stay in the window is a true 0). ECGs taken *during* an ICU stay (intime <
  ecg_time <= outtime) get a missing value: the patient is already in intensive care, and the task
  (as in ED deterioration benchmarks) is to predict the transfer, not to recognise it. A stay
  without an `outtime` excludes no ECG.
- **ICD-10 diagnoses** (label set `icd10`): the hospital discharge diagnoses of the ECG's admission
  (`diagnoses_icd` rows with `icd_version` 10; ED diagnoses of MIMIC-IV-ED are not used), codes
  written without dots as MIMIC does (`I214`), kept when they start with one of the prefixes (`-o
  icd_prefixes=I`, the default: chapter IX, diseases of the circulatory system, I00-I99;
  `icd_prefixes=all` keeps every chapter) and cut to their first `icd_chars` characters (3 by
  default: the ICD-10 category, `I21`; 4 gives subcategories, `I214`). The set is ordered by the
  number of records that carry a label (ties alphabetical), with the counts in the provenance
  (`icd10_counts`), so a top-k label set is its first k. `icd10_coded` says whether the labels
  are known: "yes" when the admission has at least one ICD-10 diagnosis of any chapter, "no" when
  it has none (admissions before the switch in October 2015 are coded in ICD-9, which is not
  mapped), missing without an admission; only "yes" records are negatives of an absent code.
- **Sex and age** (`sex` M/F from `gender`; `age` = anchor_age + year(ecg_time) - anchor_year, so
  patients over 89 appear as 91 and older, as MIMIC-IV caps them).

`-o cohort=admitted` keeps only ECGs with an admission and `cohort=icd10` only those whose
`icd10_coded` is "yes" (as a pre-training label set for label scaling needs); the default `all`
keeps every ECG. Excluded ECGs are counted in the provenance, not listed as skipped.

Rows of the tables that cannot be used (an unparseable id or time, a missing admittime, dischtime
or intime) are left out and counted in the provenance (`skipped_rows`); a missing table or column
is one `DataError` line naming the file and the columns expected. The joins are vectorised
(`merge_asof` per subject, an exact interval join only for subjects with overlapping
admissions or stays) and `diagnoses_icd` is streamed in chunks of only the columns used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgscale.errors import ConfigError, DataError

ADMISSIONS_FIELDS = (
    "subject_id", "hadm_id", "admittime", "dischtime", "edregtime", "deathtime",
    "hospital_expire_flag",
)  # fmt: skip
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "patients": ("hosp/patients.csv.gz", ("subject_id", "gender", "anchor_age", "anchor_year")),
    "admissions": ("hosp/admissions.csv.gz", ADMISSIONS_FIELDS),
    "icustays": ("icu/icustays.csv.gz", ("subject_id", "intime", "outtime")),
    "diagnoses_icd": ("hosp/diagnoses_icd.csv.gz", ("hadm_id", "icd_code", "icd_version")),
}
COHORTS = ("all", "admitted", "icd10")
DEFAULT_ICU_HOURS = (24,)
DEFAULT_ICD_PREFIXES = ("I",)
CHUNK_ROWS = 1_000_000
_TZ = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d*)?)?)\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$")
_HOUR = pd.Timedelta(hours=1)
_SPAN = ("span", "subject_id", "start", "end")


def icu_column(hours: int) -> str:
    """Metadata column of ICU admission within `hours` h."""
    return f"icu_{hours}h"


# ------------------------------------------------------------------------------------------------
# Options (strings from `-o key=value`, or Python values)


def parse_icu_hours(value: Any) -> tuple[int, ...]:
    """`24`, `"24,48"` or `[24, 48]` -> sorted distinct positive whole hours."""
    items = value.split(",") if isinstance(value, str) else value
    items = [items] if isinstance(items, int | float) else list(items)
    try:
        hours = [float(str(h).strip()) for h in items]
    except ValueError:
        hours = []
    if not hours or any(h <= 0 or h != int(h) for h in hours):
        raise ConfigError(f"icu_hours {value!r}: expected positive whole hours, e.g. 24 or 24,48")
    return tuple(sorted({int(h) for h in hours}))


def parse_icd_prefixes(value: Any) -> tuple[str, ...]:
    """`"I"`, `"I,R"` or `"all"` (-> empty: every code) as upper-case prefixes."""
    items = value.split(",") if isinstance(value, str) else list(value)
    prefixes = [str(p).strip().upper().replace(".", "") for p in items]
    if prefixes == ["ALL"]:
        return ()
    if not prefixes or any(not re.fullmatch(r"[A-Z][0-9A-Z]*", p) for p in prefixes):
        raise ConfigError(
            f"icd_prefixes {value!r}: expected ICD-10 code prefixes such as I or I,R, or all"
        )
    return tuple(dict.fromkeys(prefixes))


def parse_icd_chars(value: Any) -> int:
    """Characters of an ICD-10 code kept: 3 (category) to 7 (the whole code)."""
    try:
        chars = int(str(value).strip())
    except ValueError:
        chars = 0
    if not 3 <= chars <= 7:
        raise ConfigError(f"icd_chars {value!r}: expected 3 (category) to 7 (whole code)")
    return chars


def parse_flag(name: str, value: Any) -> bool:
    """A boolean option given as true/false, yes/no or 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ConfigError(f"{name} {value!r}: expected true or false")


def parse_cohort(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in COHORTS:
        raise ConfigError(f"cohort {value!r}: expected one of {', '.join(COHORTS)}")
    return text


# ------------------------------------------------------------------------------------------------
# Reading


def table_path(root: Path, name: str) -> Path:
    """The file of table `name` under the MIMIC-IV root (`.csv.gz`, else `.csv`)."""
    rel, columns = TABLES[name]
    path = root / rel
    if path.is_file():
        return path
    plain = path.with_suffix("")
    if plain.is_file():
        return plain
    raise DataError(
        f"{path}: not found; expected the MIMIC-IV {name} table with columns {', '.join(columns)}"
    )


def _columns(name: str, ed: bool = True) -> tuple[str, ...]:
    columns = TABLES[name][1]
    return columns if ed or name != "admissions" else tuple(c for c in columns if c != "edregtime")


def _reader(root: Path, name: str, columns: Sequence[str], chunksize: int | None = None) -> Any:
    """`pd.read_csv` of only `columns` (as text) of table `name`; a missing column, or a file
    that is not a CSV, is one `DataError` line."""
    path = table_path(root, name)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError):
        raise DataError(f"{path}: not a readable CSV table; expected columns "
                        f"{', '.join(columns)}") from None  # fmt: skip
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {', '.join(columns)}")
    return pd.read_csv(path, usecols=list(columns), dtype=str, chunksize=chunksize)


def _read(root: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    path = table_path(root, name)
    try:
        return _reader(root, name, columns)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc.__class__.__name__})") from None


def parse_times(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """ISO 8601 wall-clock times (a timezone suffix dropped) as `datetime64[us]`; also the masks
    of empty values and of non-empty but unparseable ones."""
    text = values.astype("string").str.strip()
    empty = (text.isna() | (text == "")).to_numpy(dtype=bool)
    text = text.str.replace(_TZ, r"\1", regex=True)
    times = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_localize(None)
    times = times.astype("datetime64[us]")
    return times, empty, ~empty & times.isna().to_numpy()


def _ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids (0 where unusable) and the mask of usable ones."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(numbers) & (numbers == np.round(numbers))
    return np.where(ok, numbers, 0).astype(np.int64), ok


# ------------------------------------------------------------------------------------------------
# Joins


def containing(
    ecgs: pd.DataFrame, spans: pd.DataFrame, n: int, *, strict_start: bool = False
) -> np.ndarray:
    """For each ECG (`pos`, `subject_id`, `t`), the `span` of the latest-starting interval
    (`subject_id`, `start`, `end`) of its subject that contains `t` (start <= t, or start < t
    with `strict_start`, and t <= end), as an `(n,)` array indexed by `pos`; -1 where none."""
    out = np.full(n, -1, dtype=np.int64)
    if ecgs.empty or spans.empty:
        return out
    left = ecgs.sort_values("t", kind="stable")
    right = spans.sort_values("start", kind="stable")
    found = pd.merge_asof(
        left, right, left_on="t", right_on="start", by="subject_id", direction="backward",
        allow_exact_matches=not strict_start,
    )  # fmt: skip
    inside = (found["t"] <= found["end"]).to_numpy(dtype=bool)  # NaT end -> False
    out[found["pos"].to_numpy()[inside]] = found["span"].to_numpy()[inside]
    # The latest-starting interval is the answer unless an earlier one outlasts a later start.
    ordered = spans.sort_values(["subject_id", "start"], kind="stable")
    reach = ordered.groupby("subject_id")["end"].cummax()
    before = reach.groupby(ordered["subject_id"]).shift()
    overlapping = ordered.loc[(ordered["start"] <= before).to_numpy(dtype=bool), "subject_id"]
    todo = ecgs[(out[ecgs["pos"].to_numpy()] < 0) & ecgs["subject_id"].isin(overlapping)]
    if not todo.empty:
        pairs = todo.merge(spans[spans["subject_id"].isin(overlapping)], on="subject_id")
        after = pairs["start"] < pairs["t"] if strict_start else pairs["start"] <= pairs["t"]
        pairs = pairs[after & (pairs["t"] <= pairs["end"])]
        best = pairs.sort_values("start", kind="stable").groupby("pos").tail(1)
        out[best["pos"].to_numpy()] = best["span"].to_numpy()
    return out


def _hours_to_next(ecgs: pd.DataFrame, starts: pd.DataFrame, n: int) -> np.ndarray:
    """Hours from each ECG to the next `start` (>= t) of its subject; NaN where none."""
    out = np.full(n, np.nan)
    if ecgs.empty or starts.empty:
        return out
    found = pd.merge_asof(
        ecgs.sort_values("t", kind="stable"), starts.sort_values("start", kind="stable"),
        left_on="t", right_on="start", by="subject_id", direction="forward",
    )  # fmt: skip
    hours = ((found["start"] - found["t"]) / _HOUR).to_numpy(dtype=np.float64, na_value=np.nan)
    out[found["pos"].to_numpy()] = hours
    return out


# ------------------------------------------------------------------------------------------------
# The labels


@dataclass
class Clinical:
    """Derived labels, aligned with the ECG rows given to `derive`.

    Attributes:
        columns: one row per ECG: hadm_id (text), icd10_coded (yes/no), mortality and icu_<H>h
            (0/1 floats), sex (M/F), age (years); missing values as None/NaN.
        icd10: per ECG, its ICD-10 labels (empty without known labels).
        vocabulary: the `icd10` label set, most frequent first.
        provenance: options, cohort definition, counts of ECGs and of skipped table rows.
    """

    columns: pd.DataFrame
    icd10: list[list[str]]
    vocabulary: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)

    def keep(self, cohort: str) -> np.ndarray:
        """Mask of the ECGs in `cohort` (all, admitted, icd10)."""
        if cohort == "admitted":
            return self.columns["hadm_id"].notna().to_numpy()
        if cohort == "icd10":
            return (self.columns["icd10_coded"] == "yes").to_numpy()
        return np.ones(len(self.columns), dtype=bool)

    def restrict(self, keep: np.ndarray) -> Clinical:
        """These labels for the ECGs of `keep` only (the `icd10` vocabulary recounted)."""
        icd10 = [labels for labels, k in zip(self.icd10, keep, strict=True) if k]
        vocabulary, counts = _vocabulary(icd10)
        provenance = {**self.provenance, "icd10_counts": counts}
        return Clinical(self.columns[keep].reset_index(drop=True), icd10, vocabulary, provenance)


def _vocabulary(labels: list[list[str]]) -> tuple[list[str], list[int]]:
    counts = pd.Series([c for row in labels for c in row], dtype=object).value_counts()
    vocabulary = sorted(counts.index, key=lambda c: (-counts[c], c))
    return [str(c) for c in vocabulary], [int(counts[c]) for c in vocabulary]


def _patients(root: Path, skipped: dict[str, int]) -> pd.DataFrame:
    table = _read(root, "patients", TABLES["patients"][1])
    subject, ok = _ids(table["subject_id"])
    age = pd.to_numeric(table["anchor_age"], errors="coerce").to_numpy(dtype=np.float64)
    year = pd.to_numeric(table["anchor_year"], errors="coerce").to_numpy(dtype=np.float64)
    sex = table["gender"].astype("string").str.strip().str.upper()
    out = pd.DataFrame(
        {"subject_id": subject, "sex": sex.where(sex.isin(["M", "F"])).astype(object),
         "anchor_age": age, "anchor_year": year}
    )[ok]  # fmt: skip
    out = out.drop_duplicates("subject_id", keep="first")
    skipped["patients"] = int(len(table) - len(out))
    return out.reset_index(drop=True)


def _admissions(root: Path, ed: bool, skipped: dict[str, int]) -> pd.DataFrame:
    table = _read(root, "admissions", _columns("admissions", ed))
    subject, ok_subject = _ids(table["subject_id"])
    hadm, ok_hadm = _ids(table["hadm_id"])
    admit, admit_empty, admit_bad = parse_times(table["admittime"])
    disch, disch_empty, disch_bad = parse_times(table["dischtime"])
    death, _, death_bad = parse_times(table["deathtime"])
    start = admit
    reg_bad = np.zeros(len(table), dtype=bool)
    if ed:
        reg, _, reg_bad = parse_times(table["edregtime"])
        start = reg.where(reg < admit, admit)
    ok = ok_subject & ok_hadm & ~(admit_empty | admit_bad | disch_empty | disch_bad)
    ok &= ~(death_bad | reg_bad)
    flag = pd.to_numeric(table["hospital_expire_flag"], errors="coerce")
    died = np.where(flag.notna(), flag.to_numpy(dtype=np.float64, na_value=0) == 1, death.notna())
    out = pd.DataFrame(
        {"subject_id": subject, "hadm_id": hadm, "start": start, "end": disch, "died": died}
    )[ok]
    skipped["admissions"] = int(len(table) - len(out))
    return out.reset_index(drop=True)


def _icustays(root: Path, skipped: dict[str, int]) -> pd.DataFrame:
    table = _read(root, "icustays", TABLES["icustays"][1])
    subject, ok = _ids(table["subject_id"])
    intime, in_empty, in_bad = parse_times(table["intime"])
    outtime, _, out_bad = parse_times(table["outtime"])
    keep = ok & ~(in_empty | in_bad | out_bad)
    out = pd.DataFrame({"subject_id": subject, "start": intime, "end": outtime})[keep]
    skipped["icustays"] = int(len(table) - len(out))
    return out.reset_index(drop=True)


def _diagnoses(
    root: Path, wanted: np.ndarray, prefixes: tuple[str, ...], chars: int, skipped: dict[str, int]
) -> tuple[set[int], dict[int, list[str]]]:
    """Admissions (of `wanted`) with an ICD-10 diagnosis, and each one's kept categories."""
    path = table_path(root, "diagnoses_icd")
    coded: set[int] = set()
    parts, bad = [], 0
    wanted_index = pd.Index(np.unique(wanted))
    try:
        for part in _reader(root, "diagnoses_icd", TABLES["diagnoses_icd"][1], CHUNK_ROWS):
            hadm, ok = _ids(part["hadm_id"])
            code = part["icd_code"].astype("string").str.strip().str.upper()
            code = code.str.replace(".", "", regex=False)
            ok &= code.notna().to_numpy() & (code != "").to_numpy(dtype=bool, na_value=False)
            bad += int((~ok).sum())
            version = pd.to_numeric(part["icd_version"], errors="coerce").to_numpy()
            ten = ok & (version == 10) & pd.Index(hadm).isin(wanted_index)
            coded.update(np.unique(hadm[ten]).tolist())
            code = code[ten]
            if prefixes:
                keep = code.str.startswith(prefixes).to_numpy(dtype=bool)
            else:
                keep = np.ones(len(code), dtype=bool)
            parts.append(pd.DataFrame({"hadm_id": hadm[ten][keep], "code": code[keep].str[:chars]}))
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    skipped["diagnoses_icd"] = bad
    if not parts:
        return coded, {}
    found = pd.concat(parts, ignore_index=True).drop_duplicates()
    found = found.sort_values(["hadm_id", "code"], kind="stable")
    grouped = found.groupby("hadm_id", sort=False)["code"].agg(list)
    return coded, {int(k): [str(c) for c in v] for k, v in grouped.items()}


def derive(
    root: str | Path,
    subject_id: pd.Series,
    ecg_time: pd.Series,
    *,
    icu_hours: Sequence[int] = DEFAULT_ICU_HOURS,
    icd_prefixes: Sequence[str] = DEFAULT_ICD_PREFIXES,
    icd_chars: int = 3,
    ed: bool = True,
) -> Clinical:
    """The labels of the ECGs (`subject_id`, `ecg_time`, aligned) from the MIMIC-IV tables at
    `root` (see the module docstring for the definitions)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such MIMIC-IV folder; expected hosp/ and icu/ under it")
    for name in TABLES:
        table_path(root, name)  # every missing file is reported before any work
    n = len(subject_id)
    skipped: dict[str, int] = {}
    patients = _patients(root, skipped)
    admissions = _admissions(root, ed, skipped)
    stays = _icustays(root, skipped)

    subject, subject_ok = _ids(pd.Series(subject_id).reset_index(drop=True))
    times, time_empty, time_bad = parse_times(pd.Series(ecg_time).reset_index(drop=True))
    row = pd.Index(patients["subject_id"]).get_indexer(subject)
    row[~subject_ok] = -1
    known = (row >= 0) & times.notna().to_numpy()
    ecgs = pd.DataFrame({"pos": np.arange(n), "subject_id": subject, "t": times})[known]

    spans = admissions.assign(span=np.arange(len(admissions)))[list(_SPAN)]
    adm = containing(ecgs, spans, n)
    has_adm = adm >= 0
    hadm = np.where(has_adm, admissions["hadm_id"].to_numpy()[np.maximum(adm, 0)], 0)
    died = admissions["died"].to_numpy(dtype=bool)[np.maximum(adm, 0)]

    stay_spans = stays.assign(span=np.arange(len(stays)))[list(_SPAN)]
    during = containing(ecgs, stay_spans, n, strict_start=True) >= 0
    to_icu = _hours_to_next(ecgs, stays[["subject_id", "start"]], n)

    coded, codes = _diagnoses(root, hadm[has_adm], tuple(icd_prefixes), icd_chars, skipped)
    is_coded = np.isin(hadm, np.fromiter(coded, dtype=np.int64, count=len(coded))) & has_adm
    icd10 = [codes.get(h, []) if c else [] for h, c in zip(hadm.tolist(), is_coded, strict=True)]

    safe = np.maximum(row, 0)
    age = (
        patients["anchor_age"].to_numpy()[safe]
        + times.dt.year.to_numpy(dtype=np.float64, na_value=np.nan)
        - patients["anchor_year"].to_numpy()[safe]
    )
    columns: dict[str, Any] = {
        "hadm_id": pd.Series(np.where(has_adm, hadm.astype(str), None), dtype=object),
        "icd10_coded": pd.Series(
            np.where(has_adm, np.where(is_coded, "yes", "no"), None), dtype=object
        ),
        "mortality": np.where(has_adm, died.astype(np.float64), np.nan),
    }
    for hours in icu_hours:
        within = np.nan_to_num(to_icu, nan=np.inf) <= hours
        columns[icu_column(hours)] = np.where(known & ~during, within.astype(np.float64), np.nan)
    sexes = patients["sex"].to_numpy(dtype=object)[safe]
    columns["sex"] = pd.Series(
        [s if r >= 0 and isinstance(s, str) else None for s, r in zip(sexes, row, strict=True)],
        dtype=object,
    )
    columns["age"] = np.where(known, age, np.nan)
    frame = pd.DataFrame(columns)

    vocabulary, counts = _vocabulary(icd10)
    provenance = {
        "root": str(root.resolve()),
        "tables": {name: str(table_path(root, name).relative_to(root)) for name in TABLES},
        "fields": {name: list(_columns(name, ed)) for name in TABLES},
        "definition": {
            "admission": "latest-starting admission of the subject with "
            + ("min(edregtime, admittime)" if ed else "admittime")
            + " <= ecg_time <= dischtime",
            "mortality": "hospital_expire_flag == 1 of the ECG's admission (deathtime where the "
            "flag is empty); missing without an admission",
            "icu": "an icustays.intime of the subject in [ecg_time, ecg_time + H h]; missing "
            "when ecg_time is inside an ICU stay (intime < ecg_time <= outtime)",
            "icd10": "diagnoses_icd of the ECG's admission, icd_version 10, code prefixes "
            + (", ".join(icd_prefixes) or "all")
            + f", first {icd_chars} characters; known where the admission has an ICD-10 code",
        },
        "icu_hours": list(icu_hours),
        "ed": ed,
        "icd10": {"prefixes": list(icd_prefixes) or "all", "chars": icd_chars},
        "ecgs": {
            "total": n,
            "missing_time": int(time_empty.sum()),
            "unparseable_time": int(time_bad.sum()),
            "unknown_subject": int((row < 0).sum()),
            "in_admission": int(has_adm.sum()),
            "icd10_coded": int(is_coded.sum()),
            "during_icu_stay": int(during.sum()),
            "mortality_positive": int((has_adm & died).sum()),
            **{
                f"{icu_column(h)}_positive": int(np.nansum(columns[icu_column(h)]))
                for h in icu_hours
            },
        },
        "skipped_rows": skipped,
        "icd10_counts": counts,
        "citation": "Johnson et al. 2023, MIMIC-IV, a freely accessible electronic health record "
        "dataset, Scientific Data 10:1 (PhysioNet mimiciv)",
    }
    return Clinical(frame, icd10, vocabulary, provenance)
