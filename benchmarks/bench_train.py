"""Trainer throughput (records/s) and model FLOP utilisation, small and medium models.

    .venv/bin/python benchmarks/bench_train.py [--threads 1,2] [--steps 4] [--batch-size 32]
        [--models resnet-medium,tiny-resnet-20K,...]

For a small (~0.4 M) and a medium (~5 M parameter) Ribeiro ResNet (400 Hz x 4096 samples, its
native input) and beat-token Transformer (100 Hz x 1000 samples), each trained with the supervised
objective on a synthetic store through `ecgscale.train.pretrain`; and for the tiny models of the
demo study (ladder points of ~20K and ~200K parameters of both families, at the demo's 100 Hz x
1000 samples, batch `--tiny-batch-size` 64, one thread as each of the demo's parallel runs):

* records/s: median of the per-step throughput of the metrics log after `--warmup` steps;
* achieved FLOP/s: records/s x training FLOPs per record (`ecgscale.models.flops` convention:
  matmul/conv/attention, forward + backward, encoder only; model FLOPs, so work the code skips
  exactly - the beat Transformer's padding, its last block's non-CLS outputs under SL - still
  counts);
* peak FLOP/s: a dense float32 2048 x 2048 matmul with the same threads, measured just before
  and just after each model (the larger of the two); MFU = achieved / peak.

Every figure is measured at each intra-op thread count of `--threads`, side by side: on a machine
shared with other jobs, two threads that wait for each other at every operation can be slower than
one. Then torch.profiler splits the time of a few training steps of each medium model by operation
(self CPU time of the trainer's own step; "outside torch ops" is tokenization, data loading and
Python). The machine's load average is printed before and after: the numbers are only comparable
on an otherwise idle machine.

Goal: MFU >= 50 % for the medium ResNet on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ecgscale.data.prepare import synthesize
from ecgscale.data.synth import SynthConfig
from ecgscale.models.flops import meta_param_count, solve_width
from ecgscale.models.registry import ladder
from ecgscale.models.resnet import resnet
from ecgscale.train import TrainConfig, pretrain
from ecgscale.train.distributed import DistContext
from ecgscale.train.trainer import _Run

# name -> (model, config, fs, length)
MODELS = {
    "resnet-small": ("resnet", {"width_multiplier": 0.25}, 400.0, 4096),
    "resnet-medium": ("resnet", None, 400.0, 4096),  # width solved for 5 M parameters
    "transformer-small": ("beat_transformer", {"width": 128, "depth": 2, "heads": 2}, 100.0, 1000),
    "transformer-medium": ("beat_transformer", {"width": 256, "depth": 6, "heads": 4}, 100.0, 1000),
}
# name -> (model, ladder index): the demo's tiny models, at 100 Hz x 1000 and one thread
TINY = {
    "tiny-resnet-20K": ("resnet", 0),
    "tiny-resnet-200K": ("resnet", 2),
    "tiny-transformer-20K": ("beat_transformer", 0),
    "tiny-transformer-200K": ("beat_transformer", 2),
}
for _name, (_model, _index) in TINY.items():
    MODELS[_name] = (_model, ladder(_model)[_index].config, 100.0, 1000)

CATEGORIES = (
    ("conv forward", ("mkldnn_convolution", "conv1d", "_convolution")),
    ("conv backward", ("convolution_backward",)),
    ("matmul", ("addmm", "aten::mm", "bmm", "linear")),
    ("attention", ("attention", "softmax")),
    ("normalisation", ("batch_norm", "layer_norm")),
    ("dropout", ("bernoulli", "dropout")),
    ("optimizer", ("adam", "optimizer", "_foreach", "addcdiv", "lerp")),
)


def matmul_flops_per_s(n: int = 2048, seconds: float = 1.0) -> float:
    """Dense float32 matmul FLOP/s with the current torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2.0 * n**3 * reps / (time.perf_counter() - start)


def medium_resnet_width() -> float:
    return solve_width(
        lambda x: meta_param_count(resnet, {"width_multiplier": x}), 5_000_000, 0.1, 4
    )


def config(name: str, store: Path, out: Path, samples: int, batch: int) -> TrainConfig:
    model, options, _, _ = MODELS[name]
    if options is None:
        options = {"width_multiplier": medium_resnet_width()}
    return TrainConfig(
        model=model,
        model_config=options,
        objective="sl",
        label_set="code",
        data=store,
        out=out / name,
        batch_size=batch,
        samples=samples,
        prefetch=2,
    )


def measure(
    name: str, store: Path, out: Path, args: argparse.Namespace, threads: int, batch: int
) -> dict:
    steps = args.warmup + args.steps
    peak_before = matmul_flops_per_s()
    result = pretrain(
        config(name, store, out, steps * batch, batch), overwrite=True, progress=False
    )
    peak_after = matmul_flops_per_s()
    lines = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in lines if r["kind"] == "train"][args.warmup :]
    per_s = statistics.median(rates)
    peak = max(peak_before, peak_after)
    achieved = per_s * result.flops_per_record
    return {
        "name": name,
        "threads": threads,
        "batch": batch,
        "params": result.params,
        "gflop_record": result.flops_per_record / 1e9,
        "records_s": per_s,
        "achieved": achieved / 1e9,
        "peak": peak / 1e9,
        "mfu": achieved / peak,
    }


def profile(name: str, store: Path, out: Path, args: argparse.Namespace) -> list[tuple[str, float]]:
    """Share of the wall time of `args.steps` trainer steps per operation category."""
    cfg = config(name, store, out / "profile", 10 * args.batch_size, args.batch_size)
    run = _Run(cfg, DistContext(), False)
    run.prepare_dir(resume=False, overwrite=True)
    run.step_module.train()
    batches = run._epoch_batches()
    run.train_step(next(batches))  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _, raw in zip(range(args.steps), batches, strict=False):
            run.train_step(raw)
        wall = time.perf_counter() - start
    totals = dict.fromkeys([c for c, _ in CATEGORIES] + ["element-wise and other ops"], 0.0)
    for event in prof.key_averages():
        if event.key.startswith(("ProfilerStep", "autograd::engine", "Optimizer.")):
            continue  # containers: their children are counted
        key = event.key.lower()
        category = next((c for c, keys in CATEGORIES if any(k in key for k in keys)), None)
        totals[category or "element-wise and other ops"] += event.self_cpu_time_total / 1e6
    totals["outside torch ops"] = max(0.0, wall - sum(totals.values()))
    return sorted(((c, t / wall) for c, t in totals.items()), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the median")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tiny-batch-size", type=int, default=64)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    names = [n for n in MODELS if n in args.models.split(",")]
    medium = [n for n in names if not n.startswith("tiny-")]
    load_before = os.getloadavg()
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stores = {
            fs: synthesize(320, tmp / f"synth{fs:g}", SynthConfig(fs=fs, length=length)).path
            for fs, length in {(MODELS[n][2], MODELS[n][3]) for n in names}
        }
        for threads in thread_counts:
            torch.set_num_threads(threads)
            rows += [
                measure(n, stores[MODELS[n][2]], tmp, args, threads, args.batch_size)
                for n in medium
            ]
            for name in (n for n in medium if "medium" in n):
                profiles[name, threads] = profile(name, stores[MODELS[name][2]], tmp, args)
        torch.set_num_threads(1)
        rows += [
            measure(n, stores[MODELS[n][2]], tmp, args, 1, args.tiny_batch_size)
            for n in names
            if n.startswith("tiny-")
        ]
    load_after = os.getloadavg()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; median of {args.steps} steps after "
        f"{args.warmup}; load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} "
        "after"
    )
    print(
        f"{'model':<23}{'threads':>8}{'batch':>6}{'N':>11}{'GFLOP/rec':>11}{'records/s':>11}"
        f"{'GFLOP/s':>9}{'peak GFLOP/s':>14}{'MFU':>7}"
    )
    for r in sorted(rows, key=lambda r: (list(MODELS).index(r["name"]), r["threads"])):
        print(
            f"{r['name']:<23}{r['threads']:>8}{r['batch']:>6}{r['params']:>11,}"
            f"{r['gflop_record']:>11.4f}{r['records_s']:>11.1f}{r['achieved']:>9.2f}"
            f"{r['peak']:>14.1f}{r['mfu']:>7.1%}"
        )
    print("goal: MFU >= 50 % for resnet-medium")
    for (name, threads), shares in profiles.items():
        print(
            f"where the time goes, {name}, {threads} thread(s): "
            + ", ".join(f"{c} {s:.0%}" for c, s in shares if s >= 0.005)
        )


if __name__ == "__main__":
    main()
