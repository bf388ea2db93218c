"""Time and peak memory of the MIMIC-IV join (`-o mimic_iv=DIR`) at the size of the real release.

    .venv/bin/python benchmarks/bench_mimic_clinical.py [--scale 1.0]

Writes seeded synthetic hosp/icu tables with MIMIC-IV 3.1's row counts times `--scale` (364,627
patients, 546,028 admissions, 94,458 ICU stays, 6,364,488 diagnoses_icd rows) and an ECG list
the size of MIMIC-IV-ECG (800,035 ECGs of 161,352 subjects), then runs
`mimic_iv_clinical.derive` on them in a fresh process and reports its wall time and peak resident
set size. Writing the tables (gzip) is not timed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = {"patients": 364_627, "admissions": 546_028, "icustays": 94_458,
         "diagnoses_icd": 6_364_488, "ecgs": 800_035, "ecg_subjects": 161_352}  # fmt: skip


def _times(base: np.ndarray, offset_h: np.ndarray) -> np.ndarray:
    stamps = base + (offset_h * 3600).astype("timedelta64[s]")
    return np.datetime_as_string(stamps, unit="s")


def write(root: Path, scale: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = {k: max(10, int(v * scale)) for k, v in SIZES.items()}
    subjects = 10_000_000 + np.arange(n["patients"])
    epoch = np.datetime64("2110-01-01T00:00:00") + (
        rng.integers(0, 80 * 365, n["patients"]) * 86400
    ).astype("timedelta64[s]")
    (root / "hosp").mkdir(parents=True)
    (root / "icu").mkdir()
    pd.DataFrame({
        "subject_id": subjects, "gender": rng.choice(["M", "F"], n["patients"]),
        "anchor_age": rng.integers(18, 92, n["patients"]),
        "anchor_year": epoch.astype("datetime64[Y]").astype(int) + 1970,
        "anchor_year_group": "2011 - 2013", "dod": None,
    }).to_csv(root / "hosp" / "patients.csv.gz", index=False)  # fmt: skip
    who = rng.integers(0, n["patients"], n["admissions"])
    start_h = rng.uniform(0, 5 * 365 * 24, n["admissions"])
    length_h = rng.exponential(5 * 24, n["admissions"])
    admissions = pd.DataFrame({
        "subject_id": subjects[who], "hadm_id": 20_000_000 + np.arange(n["admissions"]),
        "admittime": _times(epoch[who], start_h),
        "dischtime": _times(epoch[who], start_h + length_h),
        "edregtime": np.where(rng.random(n["admissions"]) < 0.5,
                              _times(epoch[who], start_h - 4), None),
        "deathtime": None, "hospital_expire_flag": (rng.random(n["admissions"]) < 0.02).astype(int),
    })  # fmt: skip
    admissions.to_csv(root / "hosp" / "admissions.csv.gz", index=False)
    pick = rng.integers(0, n["admissions"], n["icustays"])
    icu_h = start_h[pick] + rng.uniform(0, 1, n["icustays"]) * length_h[pick]
    pd.DataFrame({
        "subject_id": subjects[who[pick]], "intime": _times(epoch[who[pick]], icu_h),
        "outtime": _times(epoch[who[pick]], icu_h + rng.exponential(72, n["icustays"])),
    }).to_csv(root / "icu" / "icustays.csv.gz", index=False)  # fmt: skip
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    codes = np.char.add(letters[rng.integers(0, 26, n["diagnoses_icd"])],
                        rng.integers(0, 9999, n["diagnoses_icd"]).astype(str))  # fmt: skip
    pd.DataFrame({
        "subject_id": 0, "hadm_id": 20_000_000 + rng.integers(0, n["admissions"],
                                                              n["diagnoses_icd"]),
        "seq_num": 1, "icd_code": codes,
        "icd_version": np.where(rng.random(n["diagnoses_icd"]) < 0.5, 10, 9),
    }).to_csv(root / "hosp" / "diagnoses_icd.csv.gz", index=False)  # fmt: skip
    ecg_who = rng.integers(0, n["patients"], n["ecg_subjects"])[
        rng.integers(0, n["ecg_subjects"], n["ecgs"])
    ]
    ecg_h = rng.uniform(0, 5 * 365 * 24, n["ecgs"])
    inside = rng.random(n["ecgs"]) < 0.5  # half of the ECGs during a random admission
    adm = rng.integers(0, n["admissions"], int(inside.sum()))
    ecg_who[inside] = who[adm]
    ecg_h[inside] = start_h[adm] + rng.uniform(0, 1, len(adm)) * length_h[adm]
    pd.DataFrame({
        "subject_id": subjects[ecg_who], "ecg_time": _times(epoch[ecg_who], ecg_h),
    }).to_csv(root / "ecgs.csv", index=False)  # fmt: skip


def run(root: Path) -> None:
    from ecgscale.data.readers import mimic_iv_clinical

    ecgs = pd.read_csv(root / "ecgs.csv")
    start = time.perf_counter()
    out = mimic_iv_clinical.derive(root, ecgs["subject_id"], ecgs["ecg_time"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{len(ecgs):,} ECGs: {seconds:.1f} s, peak RSS {peak:.2f} GiB; "
          f"{out.provenance['ecgs']}; {len(out.vocabulary)} icd10 labels")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        run(args.run)
        return
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write(Path(tmp), args.scale)
        print(f"tables written in {time.perf_counter() - start:.0f} s")
        subprocess.run([sys.executable, __file__, "--run", tmp], check=True)


if __name__ == "__main__":
    main()
