"""PTB-XL (Wagner et al. 2020) in its official release layout.

Expected layout::

    SRC/ptbxl_database.csv   one row per record (ecg_id, patient_id, age, sex, scp_codes,
                             strat_fold, filename_lr, filename_hr, ...)
    SRC/scp_statements.csv   the 71 SCP statements with diagnostic/form/rhythm flags and classes
    SRC/records100/...       WFDB files at 100 Hz (filename_lr)
    SRC/records500/...       WFDB files at 500 Hz (filename_hr), optional

Label sets follow the PTB-XL benchmark (Strodthoff et al. 2021, `compute_label_aggregations`): every
statement in `scp_codes` counts whatever its likelihood; `all` = all statements, `diagnostic` /
`form` / `rhythm` = statements with that flag, `subdiagnostic` / `superdiagnostic` = the
diagnostic statements' `diagnostic_subclass` / `diagnostic_class`. Vocabularies are taken from
`scp_statements.csv`. Official folds (`strat_fold`) are kept: 1-8 train, 9 validation, 10 test.
`sex` is "M" (0) / "F" (1); ages of 300 (anonymised > 89 years) become 90. Patients are
`patient_id`s (a record without one is its own patient).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ecgscale.data.readers import Skip, Source, register_reader, require_files
from ecgscale.data.readers.wfdb_record import read_wfdb
from ecgscale.data.store import Record
from ecgscale.errors import DataError

TASK_SETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
_EXTRA_COLUMNS = (
    "height", "weight", "nurse", "site", "device", "recording_date", "report", "heart_axis",
    "infarction_stadium1", "infarction_stadium2", "validated_by_human", "baseline_drift",
    "static_noise", "burst_noise", "electrodes_problems", "extra_beats", "pacemaker",
    "filename_lr", "filename_hr",
)  # fmt: skip


def load_statements(src: Path) -> pd.DataFrame:
    """`scp_statements.csv` indexed by statement code."""
    path = src / "scp_statements.csv"
    frame = pd.read_csv(path, index_col=0)
    missing = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"}
    missing -= set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    return frame


def label_vocabularies(statements: pd.DataFrame) -> dict[str, list[str]]:
    """Class names of each PTB-XL benchmark label set."""
    diag = statements[statements["diagnostic"] == 1]
    return {
        "all": sorted(statements.index),
        "diagnostic": sorted(diag.index),
        "subdiagnostic": sorted(diag["diagnostic_subclass"].dropna().unique()),
        "superdiagnostic": sorted(diag["diagnostic_class"].dropna().unique()),
        "form": sorted(statements.index[statements["form"] == 1]),
        "rhythm": sorted(statements.index[statements["rhythm"] == 1]),
    }


def record_labels(codes: dict[str, float], statements: pd.DataFrame) -> dict[str, list[str]]:
    """Label lists of one record for every label set (`labels_<set>` keys)."""
    known = [c for c in codes if c in statements.index]
    rows = statements.loc[known]
    diag = rows[rows["diagnostic"] == 1]
    return {
        "labels_all": sorted(known),
        "labels_diagnostic": sorted(diag.index),
        "labels_subdiagnostic": sorted(set(diag["diagnostic_subclass"].dropna())),
        "labels_superdiagnostic": sorted(set(diag["diagnostic_class"].dropna())),
        "labels_form": sorted(rows.index[rows["form"] == 1]),
        "labels_rhythm": sorted(rows.index[rows["rhythm"] == 1]),
    }


def _parse_codes(text: str, ecg_id: int) -> dict[str, float]:
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"ecg_id {ecg_id}: malformed scp_codes {text!r}") from None
    if not isinstance(codes, dict):
        raise DataError(f"ecg_id {ecg_id}: scp_codes is not a dict")
    return codes


@register_reader("ptbxl")
def read_ptbxl(src: Path, *, rate: int | None = None, target_fs: float = 100.0) -> Source:
    """Read PTB-XL at `src`.

    Args:
        src: dataset root in the official layout.
        rate: source sampling rate, 100 or 500 Hz; by default 500 Hz when `target_fs` > 100 and
            `records500/` exists, else 100 Hz.
        target_fs: the store's sampling rate (only used to choose `rate`).
    """
    src = Path(src)
    require_files(src, "ptbxl_database.csv", "scp_statements.csv")
    if rate is None:
        rate = 500 if target_fs > 100 and (src / "records500").is_dir() else 100
    if rate not in (100, 500):
        raise DataError(f"PTB-XL rate {rate}: expected 100 or 500")
    folder = "records100" if rate == 100 else "records500"
    require_files(src, folder)
    db = pd.read_csv(src / "ptbxl_database.csv")
    needed = {
        "ecg_id",
        "patient_id",
        "age",
        "sex",
        "scp_codes",
        "strat_fold",
        "filename_lr",
        "filename_hr",
    }
    if needed - set(db.columns):
        raise DataError(
            f"{src / 'ptbxl_database.csv'}: missing columns {sorted(needed - set(db.columns))}"
        )
    statements = load_statements(src)
    column = "filename_lr" if rate == 100 else "filename_hr"

    def records() -> Iterator[Record | Skip]:
        for row in db.itertuples(index=False):
            rid = str(row.ecg_id)
            try:
                codes = _parse_codes(row.scp_codes, row.ecg_id)
                age = 90.0 if row.age == 300 else row.age
                meta = {
                    "source": "ptbxl",
                    "fold": int(row.strat_fold),
                    "age": age,
                    "sex": {0: "M", 1: "F"}.get(row.sex),
                    "scp_codes": json.dumps(codes),
                    **{c: getattr(row, c) for c in _EXTRA_COLUMNS if c in db.columns},
                    **record_labels(codes, statements),
                }
                patient = str(int(row.patient_id)) if pd.notna(row.patient_id) else f"ecg{rid}"
                yield read_wfdb(src / getattr(row, column), rid, patient, meta)
            except DataError as exc:
                yield Skip(rid, str(exc))

    return Source(
        name="ptbxl",
        count=len(db),
        records=records(),
        label_sets=label_vocabularies(statements),
        provenance={
            "dataset": "PTB-XL",
            "src": str(src.resolve()),
            "source_rate_hz": rate,
            "citation": "Wagner et al. 2020, Sci Data 7:154",
        },
        patient_ids={
            "ptbxl": "source: patient_id of ptbxl_database.csv (per record where missing)"
        },
    )
