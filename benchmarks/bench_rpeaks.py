"""R-peak detector accuracy against expert references; beat tokenization speed and fallback rate.

    .venv/bin/python benchmarks/bench_rpeaks.py [--data ../shared/data] [--chunk 256] [--before REV]

Prints, in one run:
1. sensitivity, positive predictivity (50 ms tolerance, one-to-one greedy matching) and the median
   timing error (detection - reference, ms) on MIT-BIH 100, 101, 105 (both leads, all beat
   annotations), on MIT-BIH 100 with noise bursts added to V5 in minutes 19-24 (like the V2 bursts
   of record 103) and on CPSC 2019 (100 records, 0.5-9.5 s as in the challenge), at each record's
   native rate and at 100 Hz (the tokenizer's rate, after polyphase resampling); the detector
   before (`--before REV`: `beats.py` of that git revision, default the last one before local lead
   weights) and now, side by side. Goal: both >= 0.99 on MIT-BIH 100.
2. tokenization throughput on the real PTB-XL 100 Hz records (10 s, 12 leads): records/s one
   record at a time against whole chunks of `--chunk` records, and `tokenize_cached`'s first run
   (tokenize + write) against a second (memory-map the cache); per second of wall time and of
   this process's CPU time (single-threaded work; on a shared machine the CPU figure is fairer).
3. how often tokenization falls back to fixed windows (no beats) or truncates (more than 21 beats
   per lead) on the real records: PTB-XL, MIT-BIH in 10 s chunks, CPSC 2019 at 100 Hz.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecgscale.data.readers.ptbxl import read_ptbxl
from ecgscale.data.store import Record
from ecgscale.models.beats import (
    RPeaks,
    TokenizerConfig,
    add_noise_bursts,
    detect_rpeaks,
    evaluate_qrs_reference,
    load_cpsc2019,
    load_mitdb,
    resample,
    tokenize_beats,
    tokenize_cached,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BEFORE = "69cb1524d067177638b4d809f1b439e7f899746d"  # whole-record lead weights, lagging envelope
Detector = Callable[[np.ndarray, float], RPeaks]


def detector_at(revision: str) -> Detector | None:
    """`detect_rpeaks` of `src/ecgscale/models/beats.py` at a git revision (None: not available)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:src/ecgscale/models/beats.py"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    name = f"_beats_{revision}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:beats.py", "exec"), module.__dict__)
    return module.detect_rpeaks


def accuracy(root: Path, before: Detector | None, revision: str) -> None:
    mitdb = load_mitdb(root / "mitdb")
    cpsc = load_cpsc2019(root / "cpsc2019")
    burst = add_noise_bursts(
        mitdb[0].signal, mitdb[0].fs, 1, (19 * 60, 24 * 60), np.random.default_rng(103)
    )
    sets = [(f"MIT-BIH {r.name}", [r]) for r in mitdb]
    sets += [("MIT-BIH 100 + V5 bursts", [replace(mitdb[0], signal=burst)])]
    sets += [("CPSC 2019 (100 records)", cpsc)]
    detectors = {"before": before, "now": detect_rpeaks} if before else {"now": detect_rpeaks}
    print(f"1. R-peak detection, 50 ms tolerance; before = beats.py at {revision}")
    if before is None:
        print(f"   (git revision {revision} not available: only the current detector)")
    head = "".join(f"{f'{rate} {name}':>22}" for rate in ("native", "100 Hz") for name in detectors)
    print(f"{'':<26}{'':>7}{head}")
    cols = "".join(f"{'Se':>8}{'PPV':>8}{'ms':>6}" for _ in range(2 * len(detectors)))
    print(f"{'record':<26}{'beats':>7}{cols}")
    for name, records in sets:
        row = ""
        for fs in (None, 100.0):
            for detect in detectors.values():
                score = evaluate_qrs_reference(records, fs=fs, detector=detect)
                row += (
                    f"{score.sensitivity:>8.4f}{score.ppv:>8.4f}{1e3 * score.median_offset:>+6.1f}"
                )
        print(f"{name:<26}{score.tp + score.fn:>7}{row}")
    print(
        "   ms: median timing error (detection - reference); goal: Se, PPV >= 0.99 on MIT-BIH 100\n"
    )


def load_ptbxl(root: Path) -> np.ndarray:
    records = [r for r in read_ptbxl(root).records if isinstance(r, Record)]
    return np.stack([r.signal for r in records]).astype(np.float32)


class Timer:
    """Wall and process CPU time of a block: on a shared machine the CPU time is the fairer one."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rates(self, n: int) -> str:
        return f"{n / self.wall:>10.0f}{n / self.cpu:>10.0f}"


def speed(x: np.ndarray, chunk: int) -> None:
    n = len(x)
    tokenize_beats(x[:8])  # warm-up (filter design, imports)
    with Timer() as single:
        for i in range(n):
            tokenize_beats(x[i : i + 1])
    with Timer() as batched:
        for i in range(0, n, chunk):
            tokenize_beats(x[i : i + chunk])
    with tempfile.TemporaryDirectory() as cache:
        with Timer() as first:
            tokenize_cached(x, cache_dir=cache, chunk_size=chunk)
        with Timer() as second:
            tokens = tokenize_cached(x, cache_dir=cache, chunk_size=chunk)
            np.asarray(tokens.words).sum()  # read it all
    print(f"2. Tokenization speed, {n} PTB-XL records of {x.shape[1]} x {x.shape[2]} at 100 Hz")
    print(f"{'records/s':<34}{'wall':>10}{'CPU':>10}")
    print(f"{'one record at a time':<34}{single.rates(n)}")
    ratio = single.cpu / batched.cpu
    print(f"{f'chunks of {chunk}':<34}{batched.rates(n)}   ({ratio:.1f}x in CPU time)")
    print(f"{'tokenize_cached, first run':<34}{first.rates(n)}   (hash + tokenize + write)")
    print(f"{'tokenize_cached, cached':<34}{second.rates(n)}   (hash + read)\n")


def fallback(ptbxl: np.ndarray, root: Path) -> None:
    mit = []
    for rec in load_mitdb(root / "mitdb"):
        sig = resample(rec.signal, rec.fs, 100.0)
        chunks = sig.shape[1] // 1000
        mit.append(sig[:, : chunks * 1000].reshape(2, chunks, 1000).transpose(1, 0, 2))
    cpsc = np.stack([resample(r.signal, r.fs, 100.0) for r in load_cpsc2019(root / "cpsc2019")])
    print("3. Fallback (no beats: fixed windows) and truncation (> max_tokens // leads beats)")
    print(f"{'records':<34}{'n':>6}{'fallback':>10}{'truncated':>11}{'beats/lead p5-p50-p95':>24}")
    sets = [
        ("PTB-XL 100 Hz, 12 leads", ptbxl, TokenizerConfig()),
        ("MIT-BIH 100/101/105, 10 s chunks", np.concatenate(mit), TokenizerConfig()),
        ("CPSC 2019 at 100 Hz, 1 lead", cpsc.astype(np.float32), TokenizerConfig()),
    ]
    for name, x, cfg in sets:
        tokens = tokenize_beats(x, cfg)
        p5, p50, p95 = np.percentile(tokens.beats, [5, 50, 95])
        print(
            f"{name:<34}{len(x):>6}{tokens.fallback.mean():>10.2%}{tokens.truncated.mean():>11.2%}"
            f"{f'{p5:.0f}-{p50:.0f}-{p95:.0f}':>24}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' detector")
    parser.add_argument("--accuracy-only", action="store_true", help="print part 1 only")
    args = parser.parse_args()
    accuracy(args.data / "qrs_reference", detector_at(args.before), args.before[:10])
    if args.accuracy_only:
        return
    start = time.perf_counter()
    ptbxl = load_ptbxl(args.data / "ptbxl_100hz")
    print(f"(read {len(ptbxl)} PTB-XL records in {time.perf_counter() - start:.1f} s)")
    speed(ptbxl, args.chunk)
    fallback(ptbxl, args.data / "qrs_reference")


if __name__ == "__main__":
    main()
