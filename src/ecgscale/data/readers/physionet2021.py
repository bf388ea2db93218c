"""PhysioNet/CinC Challenge 2020/2021 training data (Reyna et al. 2021) in its official layout.

Expected layout (any folder depth; every `<rec>.hea` with its `<rec>.mat` is one record)::

    SRC/training/<database>/g<k>/<rec>.hea   WFDB header, see below
    SRC/training/<database>/g<k>/<rec>.mat   MATLAB v4 file, one variable `val`: int16 (leads, N)
    SCORING/dx_mapping_scored.csv            the 30 scored codes (SNOMEDCTCode, Abbreviation, ...)
    SCORING/dx_mapping_unscored.csv          the unscored codes, same columns
    SCORING/weights.csv                      26 x 26 reward matrix; equivalent codes written `a|b`
                                             (SCORING: `scoring`, by default the official tables
                                             packaged with ecgscale)

`<database>` is one of the 2021 folders (`cpsc_2018`, `cpsc_2018_extra`, `st_petersburg_incart`,
`ptb`, `ptb-xl`, `georgia`, `chapman_shaoxing`, `ningbo`) or a 2020 `WFDB_*` folder; the source of a
record is taken from that folder, else from its name: A CPSC, Q CPSC-extra, I INCART, S PTB, HR
PTB-XL, E Georgia, JS00001-JS10646 Chapman-Shaoxing and JS10647-JS45551 Ningbo (the official
numbering). The scoring tables come from `scoring` when given, else from SRC itself when it holds
a `weights.csv`, else from the official 2021 tables packaged with ecgscale
(`ecgscale/evaluate/scoring2021`, byte-identical to physionetchallenges/evaluation-2021). The
manifest's provenance records the folder used (`scoring`; `packaged` for the packaged tables, so a
store does not depend on where ecgscale is installed) and the BLAKE2b hash of each table read
(`scoring_files`).

Header: line 1 `<rec>[.mat] <leads> <fs> <N> [date time]` (the `.mat` suffix is an older Georgia
form that `wfdb.rdrecord` rejects); one line per lead `<file> <fmt> <gain>[(baseline)]/<unit>
<bits> <adczero> <initial> <checksum> <block> <lead>`; comments `#Age:`, `#Sex:`, `#Dx:` (SNOMED-CT
codes, comma-separated). As the official challenge helper does, headers are split on blanks and
`.mat` files read with `scipy.io.loadmat`; mV = (val - baseline) / gain. An age or sex with bytes
that are not UTF-8 is unknown (the record is kept).

Label sets: `snomed` = every code seen (abbreviations from both mapping tables in the manifest's
provenance, codes in neither table listed there with their records); `scored` = the 26 classes of
`weights.csv`, named as there (`713427006|59118001`), a record being positive for a class when any
of its codes is one of the class's codes (the official scorer's equivalences).

Patients: the headers carry no patient id, so each record is its own patient and repeat patients of
the full release may fall into different splits. The PTB-XL part is the exception when PTB-XL's
`ptbxl_database.csv` is given (`ptbxl_database`): record HR<n> is PTB-XL `ecg_id` n (the same
signal, age and sex), so it gets PTB-XL's `patient_id` (`ptbxl:<id>`). The manifest's
`patient_ids` says which applies to each source database. Folds are seeded, patient-grouped and
stratified on `scored`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from ecgscale.data.readers import PER_RECORD, Skip, Source, register_reader
from ecgscale.data.readers.wfdb_record import _TO_MV
from ecgscale.data.store import Record
from ecgscale.errors import DataError
from ecgscale.evaluate.challenge2021 import (
    MAPPING_FILE,
    PACKAGED_SCORING,
    UNSCORED_FILE,
    WEIGHTS_FILE,
    load_challenge_tables,
    packaged_scoring_folder,
)
from ecgscale.fileio import file_hash

SOURCES: tuple[str, ...] = (
    "cpsc",
    "cpsc_extra",
    "incart",
    "ptb",
    "ptbxl",
    "georgia",
    "chapman_shaoxing",
    "ningbo",
)
_FOLDERS = {
    "cpsc_2018": "cpsc",
    "wfdb_cpsc2018": "cpsc",
    "cpsc_2018_extra": "cpsc_extra",
    "wfdb_cpsc2018_2": "cpsc_extra",
    "st_petersburg_incart": "incart",
    "wfdb_stpetersburg": "incart",
    "ptb": "ptb",
    "wfdb_ptb": "ptb",
    "ptb-xl": "ptbxl",
    "wfdb_ptbxl": "ptbxl",
    "georgia": "georgia",
    "wfdb_ga": "georgia",
    "chapman_shaoxing": "chapman_shaoxing",
    "wfdb_chapmanshaoxing": "chapman_shaoxing",
    "ningbo": "ningbo",
    "wfdb_ningbo": "ningbo",
}
_PREFIXES = {
    "A": "cpsc",
    "Q": "cpsc_extra",
    "I": "incart",
    "S": "ptb",
    "HR": "ptbxl",
    "E": "georgia",
}
FIRST_NINGBO = 10647  # JS10647-JS45551 are Ningbo, lower JS numbers Chapman-Shaoxing
_GAIN = re.compile(r"^([-+0-9.eE]+)(?:\(([-+0-9]+)\))?(?:/(\S+))?$")
_MISSING = {"", "nan", "unknown", "none"}
_SEX = {"male": "M", "m": "M", "female": "F", "f": "F"}


@dataclass(frozen=True)
class Header:
    """One parsed header: the signal layout and the demographics and codes of the record."""

    name: str
    fs: float
    samples: int
    leads: tuple[str, ...]
    baselines: np.ndarray  # (leads,) adu
    scale: np.ndarray  # (leads,) mV per adu
    age: float | None
    sex: str | None
    dx: tuple[str, ...]


def source_of(path: Path) -> str | None:
    """Source database of the record at `path`: its database folder, else its name's prefix."""
    for folder in reversed(path.parent.parts):
        if folder.lower() in _FOLDERS:
            return _FOLDERS[folder.lower()]
    match = re.fullmatch(r"([A-Z]+)(\d+)", path.stem)
    if match is None:
        return None
    prefix, number = match.groups()
    if prefix == "JS":
        return "ningbo" if int(number) >= FIRST_NINGBO else "chapman_shaoxing"
    return _PREFIXES.get(prefix)


def parse_header(path: Path) -> Header:
    """Parse a challenge `.hea` file; a missing or malformed field is a one-line `DataError`."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: unreadable header ({exc})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    body = [line for line in lines if not line.startswith("#")]
    if not body:
        raise DataError(f"{path}: empty header")
    first = body[0].split()
    try:
        name, n_leads = first[0], int(first[1])
        fs, samples = float(first[2].split("/")[0]), int(first[3])
    except (IndexError, ValueError):
        raise DataError(
            f"{path}: record line {body[0]!r}; expected '<record> <leads> <fs> <samples>'"
        ) from None
    if n_leads < 1 or fs <= 0 or samples < 1:
        raise DataError(f"{path}: record line {body[0]!r} has a non-positive leads/fs/samples")
    if len(body) - 1 < n_leads:
        raise DataError(f"{path}: {len(body) - 1} signal lines for {n_leads} leads")
    leads, baselines, scale = [], np.zeros(n_leads), np.zeros(n_leads)
    for k, line in enumerate(body[1 : n_leads + 1]):
        fields = line.split()
        gain = _GAIN.match(fields[2]) if len(fields) >= 9 else None
        try:
            adu_per_unit = float(gain.group(1)) if gain else 0.0
            baselines[k] = float(gain.group(2) if gain and gain.group(2) else fields[4])
        except ValueError:
            adu_per_unit = 0.0
        if not adu_per_unit > 0:
            raise DataError(f"{path}: signal line {k + 1} {line!r}; expected 9 fields, gain > 0")
        unit = gain.group(3) or "mV"
        factor = _TO_MV.get(unit.lower())
        if factor is None:
            raise DataError(f"{path}: signal line {k + 1} has unit {unit!r}, expected mV/uV")
        scale[k] = factor / adu_per_unit
        leads.append(fields[-1])
    comments = {}
    for line in lines:
        if line.startswith("#") and ":" in line:
            key, value = line.lstrip("#").split(":", 1)
            comments[key.strip().lower()] = value.strip()
    if "dx" not in comments:
        raise DataError(f"{path}: no #Dx line; expected '#Dx: <SNOMED-CT codes>'")
    dx = tuple(code.strip() for code in comments["dx"].split(",") if code.strip())
    if not dx or not all(code.isdigit() for code in dx):
        raise DataError(f"{path}: #Dx {comments['dx']!r}; expected comma-separated SNOMED-CT codes")
    return Header(
        name=name.removesuffix(".mat"),
        fs=fs,
        samples=samples,
        leads=tuple(leads),
        baselines=baselines,
        scale=scale,
        age=_age(comments.get("age", ""), path),
        sex=_sex(comments.get("sex", ""), path),
        dx=dx,
    )


def _unknown(text: str) -> bool:
    """Whether a demographic field is missing or holds bytes that are not UTF-8."""
    return text.lower() in _MISSING or "\ufffd" in text


def _age(text: str, path: Path) -> float | None:
    if _unknown(text):
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: #Age {text!r}; expected a number, NaN or Unknown") from None


def _sex(text: str, path: Path) -> str | None:
    if _unknown(text):
        return None
    if text.lower() not in _SEX:
        raise DataError(f"{path}: #Sex {text!r}; expected Male, Female or Unknown")
    return _SEX[text.lower()]


def read_signal(path: Path, header: Header) -> np.ndarray:
    """float32 `(leads, samples)` mV from the `.mat` next to header `path`."""
    mat = path.with_suffix(".mat")
    if not mat.is_file():
        raise DataError(f"{mat}: signal file not found")
    try:
        content = scipy.io.loadmat(mat)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{mat}: unreadable MAT file ({type(exc).__name__}: {exc})") from None
    if "val" not in content:
        names = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{mat}: no variable 'val' (found {names})")
    val = np.asarray(content["val"])
    expected = (len(header.leads), header.samples)
    if val.shape != expected:
        raise DataError(f"{mat}: 'val' has shape {val.shape}, header says {expected}")
    signal = (val - header.baselines[:, None]) * header.scale[:, None]
    return signal.astype(np.float32)


def _mapping(path: Path) -> dict[str, str]:
    """SNOMED-CT code -> abbreviation of one official mapping table."""
    frame = pd.read_csv(path, dtype=str)
    if not {"SNOMEDCTCode", "Abbreviation"} <= set(frame.columns):
        raise DataError(f"{path}: expected columns SNOMEDCTCode and Abbreviation")
    codes, names = frame["SNOMEDCTCode"].str.strip(), frame["Abbreviation"].str.strip()
    return dict(zip(codes, names, strict=True))


def ptbxl_patients(path: Path) -> dict[str, str]:
    """Patient of each PTB-XL record of the challenge (`HR<ecg_id>` -> `ptbxl:<patient_id>`), from
    PTB-XL's `ptbxl_database.csv` at `path`."""
    try:
        db = pd.read_csv(path, usecols=["ecg_id", "patient_id"])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: expected PTB-XL's ptbxl_database.csv ({exc})") from None
    db = db.dropna()
    return {
        f"HR{int(e):05d}": f"ptbxl:{int(p)}"
        for e, p in zip(db["ecg_id"], db["patient_id"], strict=True)
    }


@register_reader("physionet2021")
def read_physionet2021(
    src: Path, *, scoring: str | Path | None = None, ptbxl_database: str | Path | None = None
) -> Source:
    """Read the challenge records under `src`, labelled with the tables in `scoring`.

    Args:
        src: a folder holding the records (e.g. the `training/` tree or one database folder).
        scoring: folder with `weights.csv`, `dx_mapping_scored.csv` and
            `dx_mapping_unscored.csv`; by default `src` when it holds a `weights.csv`, else the
            official tables packaged with ecgscale.
        ptbxl_database: PTB-XL's `ptbxl_database.csv`, whose `patient_id`s the PTB-XL records
            (HR<ecg_id>) then get; without it every record is its own patient.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: no such dataset folder")
    if scoring is not None:
        folder, recorded = Path(scoring), str(Path(scoring).resolve())
    elif (src / WEIGHTS_FILE).is_file():
        folder, recorded = src, str(src.resolve())
    else:
        folder, recorded = packaged_scoring_folder(), PACKAGED_SCORING
    if not (folder / WEIGHTS_FILE).is_file():
        raise DataError(
            f"{folder}: no {WEIGHTS_FILE}; expected the official Challenge 2021 tables "
            f"({WEIGHTS_FILE}, {MAPPING_FILE}, {UNSCORED_FILE}) in --scoring DIR"
        )
    tables = load_challenge_tables(folder)
    if not (folder / UNSCORED_FILE).is_file():
        raise DataError(f"{folder}: expected {UNSCORED_FILE} (official Challenge 2021 table)")
    abbreviations = {**_mapping(folder / UNSCORED_FILE), **_mapping(folder / MAPPING_FILE)}
    paths = sorted(src.rglob("*.hea"))
    if not paths:
        raise DataError(f"{src}: no .hea headers found (expected the challenge training layout)")
    headers: list[Header | DataError] = []
    seen: Counter[str] = Counter()
    for path in paths:
        try:
            header = parse_header(path)
            if header.name != path.stem:
                raise DataError(f"{path}: header names record {header.name!r}, not {path.stem!r}")
            seen.update(set(header.dx))
            headers.append(header)
        except DataError as exc:
            headers.append(exc)
    unknown = sorted(code for code in seen if code not in abbreviations)
    parsed = [h for h in headers if isinstance(h, Header)]
    unknown_records = {code: [h.name for h in parsed if code in h.dx] for code in unknown}
    sources = [source_of(path) or "unknown" for path in paths]
    patient_ids = dict.fromkeys(sorted(set(sources)), PER_RECORD)
    patients: dict[str, str] = {}
    if ptbxl_database is not None:
        patients = ptbxl_patients(Path(ptbxl_database))
    if patients and "ptbxl" in patient_ids:
        hr = [p.stem for p, s in zip(paths, sources, strict=True) if s == "ptbxl"]
        missing = sum(stem not in patients for stem in hr)
        patient_ids["ptbxl"] = (
            f"source: patient_id of {Path(ptbxl_database).name} (HR<n> = ecg_id n)"
            + (f"; per record for {missing} records without a row" if missing else "")
        )

    def records() -> Iterator[Record | Skip]:
        for path, header, source in zip(paths, headers, sources, strict=True):
            if isinstance(header, DataError):
                yield Skip(path.stem, str(header))
                continue
            try:
                signal = read_signal(path, header)
            except DataError as exc:
                yield Skip(path.stem, str(exc))
                continue
            scored = sorted({j for j in map(tables.class_of, header.dx) if j is not None})
            meta = {
                "source": source,
                "age": header.age,
                "sex": header.sex,
                "dx": ",".join(header.dx),
                "labels_snomed": sorted(set(header.dx)),
                "labels_scored": [tables.names[j] for j in scored],
            }
            patient = patients.get(path.stem, path.stem) if source == "ptbxl" else path.stem
            yield Record(signal, header.fs, header.leads, path.stem, patient, meta)

    return Source(
        name="physionet2021",
        count=len(paths),
        records=records(),
        label_sets={"snomed": sorted(seen), "scored": list(tables.names)},
        provenance={
            "dataset": "PhysioNet/CinC Challenge 2020/2021 training data",
            "src": str(src.resolve()),
            "scoring": recorded,
            "scoring_files": {
                name: file_hash(folder / name)
                for name in (WEIGHTS_FILE, MAPPING_FILE, UNSCORED_FILE)
            },
            "scored_abbreviations": list(tables.abbreviations),
            "snomed_abbreviations": {code: abbreviations.get(code) for code in sorted(seen)},
            "unknown_codes": unknown_records,
            "citation": "Reyna et al. 2021, Computing in Cardiology 48:1-4",
        },
        stratify_on="scored",
        patient_ids=patient_ids,
    )
