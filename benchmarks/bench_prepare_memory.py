"""Peak memory of preparing a synthetic source into a store, at two sizes side by side.

    .venv/bin/python benchmarks/bench_prepare_memory.py [--records 5000 50000] [--fs 400]

Each size runs in a fresh process (`ecgscale data synth`, 400 Hz x 4096 samples, high-pass on) and
its peak resident set size is read from the kernel. Goal: under 1.5 GiB at 50,000 records, and not
growing with the record count.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_gib(records: int, fs: float, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "ecgscale.cli.main", "data", "synth", "--records", str(records),
           "--out", str(out), "--fs", str(fs), "--length", str(int(fs * 10.24))]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # max over children so far
    return usage.ru_maxrss / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--fs", type=float, default=400.0)
    args = parser.parse_args()
    print(f"{'records':>8}{'peak RSS (GiB)':>16}{'seconds':>9}{'store (GiB)':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in enumerate(sorted(args.records)):
            out = Path(tmp) / f"s{k}"
            peak, seconds = peak_rss_gib(n, args.fs, out)
            size = (out / "signals.npy").stat().st_size / 2**30
            print(f"{n:>8}{peak:>16.2f}{seconds:>9.0f}{size:>13.2f}")
    print("goal: peak RSS < 1.5 GiB at 50,000 records (RUSAGE_CHILDREN: running maximum)")


if __name__ == "__main__":
    main()
