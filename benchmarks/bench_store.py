"""Random-batch read throughput: the store against `wfdb.rdrecord` per access, in one run.

    .venv/bin/python benchmarks/bench_store.py [--src ../shared/data/ptbxl] [--batches 30]

Prepares PTB-XL at 500 Hz x 5000 samples (no filtering), then reads the same random batches of 64
records (a) from the store's memory map and (b) with `wfdb.rdrecord` per record, and prints both
rates and their ratio (goal: store >= 50x faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).parents[2] / "shared/data/ptbxl")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = PreprocessConfig(fs=500.0, length=5000, highpass_hz=None)
        store = prepare("ptbxl", args.src, Path(tmp) / "s", config, rate=500)
        rng = np.random.default_rng(0)
        batches = [
            rng.choice(len(store), args.batch_size, replace=False) for _ in range(args.batches)
        ]
        files = store.meta["filename_hr"].to_numpy()

        start = time.perf_counter()
        for rows in batches:
            store.batch(rows)
        t_store = time.perf_counter() - start

        start = time.perf_counter()
        for rows in batches[: max(1, args.batches // 10)]:
            np.stack([wfdb.rdrecord(str(args.src / files[r])).p_signal.T for r in rows])
        t_wfdb = (time.perf_counter() - start) * args.batches / max(1, args.batches // 10)

    n = args.batches * args.batch_size
    print(f"random batches of {args.batch_size} records, 12 x 5000 samples (500 Hz, 10 s)")
    print(f"{'reader':<18}{'records/s':>12}")
    print(f"{'store (memmap)':<18}{n / t_store:>12.0f}")
    print(f"{'wfdb.rdrecord':<18}{n / t_wfdb:>12.0f}")
    print(f"store / wfdb speed-up: {t_wfdb / t_store:.0f}x (goal >= 50x)")


if __name__ == "__main__":
    main()
