"""Cost of probing every OOD task of a study for one model: embedding pass(es) + each probe.

    .venv/bin/python benchmarks/bench_probe_study.py [--setup demo ptbxl] [--size 2]
        [--threads 1] [--work DIR]

Setups:

* demo: the demo study's stores (examples/demo.yaml): synthetic `source` (4,000 records) and
  `shifted` (1,500 records, shift 1.0), 100 Hz x 1000 samples; tasks synth_extra, synth_sex,
  synth_age on source and synth_code on shifted; the model is SL-pretrained on source `code`.
* ptbxl: the 1,502-record PTB-XL sample at 100 Hz x 1000; its 8 tasks (all, diagnostic,
  subdiagnostic, superdiagnostic, form, rhythm, sex, age); SL-pretrained on superdiagnostic.

The model is the ResNet ladder point `--size` (default 2: resnet-200K, the demo's largest),
pre-trained for `--samples` records (a short budget: probing cost hardly depends on how good the
model is; the pre-training time is printed but not counted). Each task is probed the way
`ecgscale.evaluate.tasks.probe_task` does it, with the study default C grid (5 values), in three
ways measured in one run:

* no cache: every task embeds its store anew (one encoder pass per task);
* cold cache: the first task of each store pays the pass, the others read the cache;
* warm cache: every embedding already cached (a re-run, or a study's second evaluation).

Per task it prints the records (train/val/test), outputs, embedding (s), task load (s), probe (s),
the chosen C and the path fits; then the totals side by side with their ratios. Torch and BLAS use
`--threads` threads (default 1: fastest on the shared 2-core machine). Stores and runs go to
`--work` (reused when present) or a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ecgscale.data.prepare import prepare, synthesize
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.data.synth import SynthConfig
from ecgscale.evaluate import embeddings as E
from ecgscale.evaluate.probe import linear_probe
from ecgscale.models.registry import ladder
from ecgscale.tasks import get_task
from ecgscale.train import TrainConfig, pretrain

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STUDY_GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
PTBXL_TASKS = [
    "ptbxl_all", "ptbxl_diagnostic", "ptbxl_subdiagnostic", "ptbxl_superdiagnostic",
    "ptbxl_form", "ptbxl_rhythm", "ptbxl_sex", "ptbxl_age",
]  # fmt: skip


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def demo_setup(work: Path) -> tuple[dict[str, Store], list[tuple[str, str]], str, str]:
    stores = {}
    for name, records, shift, seed in (("source", 4000, 0.0, 0), ("shifted", 1500, 1.0, 1)):
        path = work / "demo" / name
        if not (path / "manifest.json").is_file():
            cfg = SynthConfig(fs=100, length=1000, shift=shift, seed=seed)
            _, seconds = timed(lambda p=path, c=cfg, n=records: synthesize(n, p, c))
            print(f"  generated store {name} ({records} records) in {seconds:.1f} s")
        stores[name] = Store(path)
    tasks = [("synth_extra", "source"), ("synth_sex", "source"), ("synth_age", "source"),
             ("synth_code", "shifted")]  # fmt: skip
    return stores, tasks, "source", "code"


def ptbxl_setup(work: Path) -> tuple[dict[str, Store], list[tuple[str, str]], str, str]:
    path = work / "ptbxl" / "ptbxl"
    if not (path / "manifest.json").is_file():
        config = PreprocessConfig(fs=100, length=1000)
        _, seconds = timed(lambda: prepare("ptbxl", DATA / "ptbxl_100hz", path, config))
        print(f"  prepared the PTB-XL store in {seconds:.1f} s")
    return {"ptbxl": Store(path)}, [(t, "ptbxl") for t in PTBXL_TASKS], "ptbxl", "superdiagnostic"


def train(store: Store, label_set: str, size: int, samples: int, out: Path) -> Path:
    point = ladder("resnet")[size]
    if not (out / "best.safetensors").is_file():
        config = TrainConfig(
            model="resnet",
            model_config=point.config,
            objective="sl",
            label_set=label_set,
            data=store.path,
            out=out,
            batch_size=64,
            samples=samples,
            lr=3e-3,
        )
        result, seconds = timed(lambda: pretrain(config, progress=False, overwrite=True))
        print(
            f"  pre-trained {point.name} (N = {result.params:,}) on {samples} samples in "
            f"{seconds:.1f} s (not counted)"
        )
    return out


def probe_all(
    run: Path,
    stores: dict[str, Store],
    tasks: list[tuple[str, str]],
    cache: Callable[[str, str], Path],
) -> tuple[list[dict[str, Any]], float]:
    """Probe every task as `probe_task` does; `cache(task, store)` is the embedding cache folder.
    Returns per-task rows and the total time."""
    rows = []
    total_start = time.perf_counter()
    for task, store_name in tasks:
        store = stores[store_name]
        data, load_s = timed(lambda t=task, s=store: get_task(t).load(s))
        folder = cache(task, store_name)
        features, embed_s = timed(
            lambda s=store, c=folder: np.asarray(E.embed(run, s, cache_dir=c))
        )
        result, probe_s = timed(
            lambda x=features[data.rows], d=data: linear_probe(
                x, d.y, d.kind, d.train, d.val, d.test, c_grid=STUDY_GRID,
                label_names=list(d.classes),
                n_classes=len(d.classes) if d.kind == "multiclass" else None,
            )
        )  # fmt: skip
        rows.append(
            {
                "task": f"{task}@{store_name}",
                "split": f"{len(data.train)}/{len(data.val)}/{len(data.test)}",
                "outputs": len(data.classes),
                "dim": features.shape[1],
                "embed": embed_s,
                "load": load_s,
                "probe": probe_s,
                "c": result.c,
                "fits": len(result.val_losses),
                "loss": result.test_loss,
            }
        )
    return rows, time.perf_counter() - total_start


def _sum(row: dict[str, Any]) -> float:
    return row["embed"] + row["load"] + row["probe"]


def run_setup(name: str, work: Path, size: int, samples: int) -> None:
    print(f"\n== {name} ==")
    stores, tasks, source, label_set = {"demo": demo_setup, "ptbxl": ptbxl_setup}[name](work)
    run = train(stores[source], label_set, size, samples, work / name / f"run-{size}-{samples}")
    for store_name, store in stores.items():
        print(
            f"  store {store_name}: {len(store)} records x 12 x {store.length} at {store.fs:g} Hz"
        )
    with tempfile.TemporaryDirectory(dir=work) as caches_dir:
        caches = Path(caches_dir)
        fresh = iter(range(10**6))
        # Cold first (it fills the shared cache), then warm, then a new cache folder per task.
        cold, cold_total = probe_all(run, stores, tasks, lambda t, s: caches / "shared")
        warm, warm_total = probe_all(run, stores, tasks, lambda t, s: caches / "shared")
        none, none_total = probe_all(run, stores, tasks, lambda t, s: caches / f"{next(fresh)}")
    header = (
        f"  {'task':<30} {'train/val/test':>15} {'out':>4} {'dim':>4} {'embed s':>8} "
        f"{'load s':>7} {'probe s':>8} {'C':>7} {'fits':>5} {'test loss':>10} "
        f"{'task s: no cache':>17} {'cold':>6} {'warm':>6}"
    )
    print("\n  cold cache (the first task of each store pays its encoder pass):")
    print(header)
    for r, w, n in zip(cold, warm, none, strict=True):
        print(
            f"  {r['task']:<30} {r['split']:>15} {r['outputs']:>4} {r['dim']:>4} "
            f"{r['embed']:>8.2f} {r['load']:>7.2f} {r['probe']:>8.2f} {r['c']:>7g} "
            f"{r['fits']:>5} {r['loss']:>10.4f} {_sum(n):>17.2f} {_sum(r):>6.2f} {_sum(w):>6.2f}"
        )
    passes = [r["embed"] for r in none]
    probes = sum(r["probe"] for r in cold)
    print(
        f"\n  encoder passes: {len(stores)} with the cache, {len(tasks)} without; one pass "
        f"{min(passes):.2f}-{max(passes):.2f} s; probes alone {probes:.2f} s"
    )
    print(f"  {'all tasks, one model':<30} {'total s':>8} {'ratio to warm':>14}")
    for label, total in (
        ("no cache (pass per task)", none_total),
        ("cold cache (pass per store)", cold_total),
        ("warm cache (no pass)", warm_total),
    ):
        print(f"  {label:<30} {total:>8.2f} {total / warm_total:>13.2f}x")
    print(f"  no cache / cold cache: {none_total / cold_total:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", nargs="+", choices=["demo", "ptbxl"], default=["demo", "ptbxl"])
    parser.add_argument("--size", type=int, default=2, help="ResNet ladder index (2: 200K)")
    parser.add_argument("--samples", type=int, default=640, help="pre-training samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 16)), rng.integers(0, 2, size=(300, 2))
    _, seconds = timed(
        lambda: linear_probe(x, y, "multilabel", *np.split(np.arange(300), [200, 250]))
    )
    print(f"warm-up probe (one-off torch optimizer import, not counted): {seconds:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.setup:
            run_setup(name, work, args.size, args.samples)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
