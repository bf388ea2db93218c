"""Synthetic generator throughput (ten-second 12-lead records per second) at several rates.

    .venv/bin/python benchmarks/bench_synth.py [--records 8192]

Goal: at least 2,000 ten-second records per second on a 2-core CPU. Prints records/s per sampling
rate side by side; generation only (no filtering, no disk).
"""

from __future__ import annotations

import argparse
import time

from ecgscale.data.synth import SynthConfig, iter_synthetic


def rate(records: int, fs: float) -> float:
    cfg = SynthConfig(fs=fs, length=int(10 * fs))
    for _ in iter_synthetic(512, cfg):  # warm-up
        pass
    start = time.perf_counter()
    for _ in iter_synthetic(records, cfg):
        pass
    return records / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8192)
    args = parser.parse_args()
    print(f"{'fs (Hz)':>8}{'samples':>9}{'records/s':>12}")
    for fs in (100.0, 250.0, 400.0, 500.0):
        print(f"{fs:>8.0f}{int(10 * fs):>9}{rate(args.records, fs):>12.0f}")
    print("goal: >= 2000 ten-second records/s")


if __name__ == "__main__":
    main()
