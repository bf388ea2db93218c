"""MIMIC-IV-ECG (Gow et al. 2023, PhysioNet) in its official release layout.

Expected layout::

    SRC/record_list.csv            subject_id, study_id, file_name, ecg_time, path; one row per
                                   ECG, `path` = files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY
    SRC/machine_measurements.csv   subject_id, study_id, cart_id, ecg_time, report_0 ... report_17
                                   (the machine's free-text statements), bandwidth, filtering,
                                   rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end,
                                   p_axis, qrs_axis, t_axis
    SRC/files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.{hea,dat}
                                   WFDB, 12 leads at 500 Hz, 10 s, raw lead order I, II, III,
                                   aVR, aVF, aVL, V1-V6 (mapped to the standard order by name)

Label set `statements`: the distinct report statements (whitespace collapsed, trailing full stops
dropped, lower case), ordered by the number of records that carry them (ties alphabetical); the
counts are in the manifest's provenance (`statement_counts`), so a top-k label set is the first k.
An ECG without a machine_measurements.csv row is skipped and reported.

`mimic_iv` (optional, `-o mimic_iv=DIR`) is the root of the MIMIC-IV Clinical Database (hosp/,
icu/): each ECG is joined to its hospital admission, ICU stays, patient and discharge diagnoses,
giving the columns `hadm_id`, `mortality` (in-hospital), `icu_24h` (ICU admission within 24 h;
`-o icu_hours=24,48` for other horizons), `sex`, `age`, `icd10_coded` and the label set `icd10`
(`-o icd_prefixes=I`, `-o icd_chars=3`); `-o ed=false` and `-o cohort=all|admitted|icd10` tune
the cohort. The definitions and every field used are in `ecgscale.data.readers.mimic_iv_clinical`.

`outcomes` (optional) is a user CSV keyed by `study_id` (else `subject_id`) whose other columns are
joined into the metadata (`sex` as M/F, `age` in years, any outcome column such as
`icu_admission`); records without a row get missing values. With `mimic_iv` too, its columns may
not repeat the derived ones. Patients are `subject_id`s; folds are seeded and patient-grouped, not
stratified (hundreds of statements).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ecgscale.data.readers import Skip, Source, register_reader, require_files
from ecgscale.data.readers import mimic_iv_clinical as clinical
from ecgscale.data.readers.wfdb_record import read_wfdb
from ecgscale.data.store import Record
from ecgscale.errors import ConfigError, DataError

REPORTS = tuple(f"report_{k}" for k in range(18))
_RESERVED = {"record_id", "patient_id", "source", "fold", "split", "ecg_time", "path"}
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def normalise_statement(text: str) -> str:
    """Canonical form of one report statement ("" for an empty one)."""
    return " ".join(str(text).split()).rstrip(". ").lower()


def _statements(path: Path, studies: set[int]) -> dict[int, list[str]]:
    """study_id -> its distinct normalised statements, for the studies in `studies`."""
    out: dict[int, list[str]] = {}
    header = pd.read_csv(path, nrows=0).columns
    if "study_id" not in header:
        raise DataError(f"{path}: no study_id column; expected subject_id, study_id, report_0...")
    reports = [c for c in REPORTS if c in header]
    if not reports:
        raise DataError(f"{path}: no report_0 ... report_17 columns")
    for part in pd.read_csv(path, usecols=["study_id", *reports], dtype=str, chunksize=100_000):
        for row in part.itertuples(index=False):
            study = int(row[0])
            if study in studies:
                texts = (normalise_statement(t) for t in row[1:] if isinstance(t, str))
                out[study] = list(dict.fromkeys(t for t in texts if t))
    return out


def _outcomes(path: Path) -> tuple[str, pd.DataFrame]:
    """The join key and the outcome table indexed by it."""
    if not path.is_file():
        raise DataError(f"{path}: outcomes CSV not found")
    table = pd.read_csv(path)
    key = "study_id" if "study_id" in table.columns else "subject_id"
    if key not in table.columns:
        raise DataError(f"{path}: expected a study_id or subject_id column to join on")
    if table[key].duplicated().any():
        raise DataError(f"{path}: duplicate {key} values; expected one row per {key}")
    clash = sorted((_RESERVED | {c for c in table.columns if c.startswith("labels_")}) & set(table))
    if clash:
        raise DataError(f"{path}: columns {clash} clash with store columns; rename them")
    table = table.drop(columns=[c for c in ("study_id", "subject_id") if c in table and c != key])
    if "sex" in table:
        table["sex"] = table["sex"].map(lambda s: _SEX.get(str(s).strip().lower()))
    if "age" in table:
        table["age"] = pd.to_numeric(table["age"], errors="coerce")
    return key, table.set_index(key)


@register_reader("mimic_iv_ecg")
def read_mimic_iv_ecg(
    src: Path,
    *,
    outcomes: str | Path | None = None,
    mimic_iv: str | Path | None = None,
    icu_hours: str | int | list[int] | None = None,
    icd_prefixes: str | list[str] | None = None,
    icd_chars: str | int | None = None,
    ed: str | bool | None = None,
    cohort: str | None = None,
) -> Source:
    """Read MIMIC-IV-ECG at `src`, optionally labelled from the MIMIC-IV tables at `mimic_iv`
    (see `ecgscale.data.readers.mimic_iv_clinical`) and joined to the user CSV `outcomes`."""
    src = Path(src)
    require_files(src, "record_list.csv", "machine_measurements.csv")
    records_csv = pd.read_csv(src / "record_list.csv")
    needed = {"subject_id", "study_id", "path"} | ({"ecg_time"} if mimic_iv is not None else set())
    if needed - set(records_csv.columns):
        raise DataError(
            f"{src / 'record_list.csv'}: missing columns {sorted(needed - set(records_csv))}"
        )
    derived = _clinical(records_csv, mimic_iv, icu_hours, icd_prefixes, icd_chars, ed, cohort)
    if derived is not None:
        keep = derived.keep(derived.provenance["cohort"]["name"])
        records_csv = records_csv[keep].reset_index(drop=True)
        derived = derived.restrict(keep)
    statements = _statements(src / "machine_measurements.csv", set(records_csv["study_id"]))
    counts = Counter(s for texts in statements.values() for s in texts)
    vocabulary = sorted(counts, key=lambda s: (-counts[s], s))
    outcomes_path = Path(outcomes) if outcomes is not None else None
    key, joined = ("", None) if outcomes_path is None else _outcomes(outcomes_path)
    if joined is not None and derived is not None:
        clash = sorted(set(joined.columns) & set(derived.columns.columns))
        if clash:
            raise DataError(
                f"{outcomes_path}: columns {clash} are derived from the MIMIC-IV tables "
                "(mimic_iv); rename or drop them"
            )
    extra = derived.columns.to_dict("records") if derived is not None else None

    def records() -> Iterator[Record | Skip]:
        for i, row in enumerate(records_csv.itertuples(index=False)):
            rid = str(row.study_id)
            if row.study_id not in statements:
                yield Skip(rid, "no row in machine_measurements.csv")
                continue
            meta = {
                "source": "mimic_iv_ecg",
                "ecg_time": getattr(row, "ecg_time", None),
                "labels_statements": statements[row.study_id],
            }
            if derived is not None and extra is not None:
                meta.update({k: _missing(v) for k, v in extra[i].items()})
                meta["labels_icd10"] = derived.icd10[i]
            if joined is not None:
                at = getattr(row, key)
                values = joined.loc[at] if at in joined.index else None
                meta.update({c: None if values is None else values[c] for c in joined.columns})
            try:
                yield read_wfdb(src / str(row.path), rid, str(row.subject_id), meta)
            except DataError as exc:
                yield Skip(rid, str(exc))

    provenance = {
        "dataset": "MIMIC-IV-ECG",
        "src": str(src.resolve()),
        "statement_counts": [counts[s] for s in vocabulary],
        "statements": "normalised machine report statements, most frequent first",
        "citation": "Gow et al. 2023, MIMIC-IV-ECG (PhysioNet), doi:10.13026/4nqg-sb35",
    }
    label_sets = {"statements": vocabulary}
    if derived is not None:
        provenance["icd10_counts"] = derived.provenance.pop("icd10_counts")
        provenance["mimic_iv"] = derived.provenance
        label_sets["icd10"] = derived.vocabulary
    if outcomes_path is not None and joined is not None:
        provenance["outcomes"] = {
            "file": str(outcomes_path.resolve()),
            "key": key,
            "columns": list(joined.columns),
            "matched_records": int(records_csv[key].isin(joined.index).sum()),
        }
    return Source(
        name="mimic_iv_ecg",
        count=len(records_csv),
        records=records(),
        label_sets=label_sets,
        provenance=provenance,
        patient_ids={"mimic_iv_ecg": "source: subject_id of record_list.csv"},
    )


def _missing(value: object) -> object:
    """None for a missing value (NaN), else the value as a plain Python one."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _clinical(
    records_csv: pd.DataFrame,
    root: str | Path | None,
    icu_hours: object,
    icd_prefixes: object,
    icd_chars: object,
    ed: object,
    cohort: object,
) -> clinical.Clinical | None:
    """The MIMIC-IV labels of the records (None without `root`); options without `root` are a
    `ConfigError`."""
    options = {"icu_hours": icu_hours, "icd_prefixes": icd_prefixes, "icd_chars": icd_chars,
               "ed": ed, "cohort": cohort}  # fmt: skip
    if root is None:
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise ConfigError(f"options {', '.join(given)} need mimic_iv=DIR (the MIMIC-IV root)")
        return None
    hours = clinical.parse_icu_hours(clinical.DEFAULT_ICU_HOURS if icu_hours is None else icu_hours)
    prefixes = clinical.parse_icd_prefixes(
        clinical.DEFAULT_ICD_PREFIXES if icd_prefixes is None else icd_prefixes
    )
    chars = clinical.parse_icd_chars(3 if icd_chars is None else icd_chars)
    use_ed = clinical.parse_flag("ed", True if ed is None else ed)
    name = clinical.parse_cohort("all" if cohort is None else cohort)
    derived = clinical.derive(
        root, records_csv["subject_id"], records_csv["ecg_time"], icu_hours=hours,
        icd_prefixes=prefixes, icd_chars=chars, ed=use_ed,
    )  # fmt: skip
    keep = derived.keep(name)
    derived.provenance["cohort"] = {"name": name, "excluded_records": int((~keep).sum())}
    return derived
