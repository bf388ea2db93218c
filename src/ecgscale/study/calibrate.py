"""Measure training speed on this machine and turn a study plan's compute into a wall time.

`calibrate` times a few real training steps (the run's encoder, objective and optimiser: forward,
backward, gradient clipping and the optimizer step on one batch of the family's batch size, capped
at 32 records, at the store's input shape) of the smallest and the largest model of every family,
with the torch threads that each run gets from the executor. The input is the model's FLOP-counting
record (`ecgscale.models.flops.example_input`) plus Gaussian noise, so beat-token models see beats.

Within a family, seconds per training record are interpolated between the two measured models as a
power law of the planned FLOPs per record (one measured model: proportional to FLOPs), which keeps
the fixed per-step overhead that dominates tiny models. `wall_seconds` schedules the runs' training
times over the executor's workers in plan order, as the executors submit them, assuming that
concurrent runs do not slow each other down. Validation, evaluation and probes are not counted.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgscale.errors import UserError
from ecgscale.models.flops import example_input
from ecgscale.objectives import ObjectiveBatch, ObjectiveContext, create_objective, get_objective
from ecgscale.study.planner import Run, StoreInfo
from ecgscale.study.runner import StudyContext, train_config
from ecgscale.study.spec import ExecutorSpec, StudySpec
from ecgscale.train.config import TrainConfig
from ecgscale.train.trainer import TrainStep, build_encoder, make_optimizer

NOISE_MV = 0.05  # standard deviation of the noise added to the calibration record, mV


@dataclass(frozen=True)
class Timing:
    """One measured model.

    Attributes:
        family, size: which model.
        flops_per_record: its planned training FLOPs per record.
        seconds_per_record: measured training seconds per record.
        batch_size: records per timed step.
        steps: timed steps (after one warm-up step).
    """

    family: str
    size: str
    flops_per_record: float
    seconds_per_record: float
    batch_size: int
    steps: int


@dataclass(frozen=True)
class Calibration:
    """Measured training speeds and how they were measured.

    Attributes:
        timings: the measured models (smallest and largest of each family).
        threads: torch threads per run while measuring.
        device: torch device of the steps.
        seconds: wall time of the whole calibration.
    """

    timings: tuple[Timing, ...]
    threads: int
    device: str
    seconds: float

    def seconds_per_record(self, family: str, flops_per_record: float) -> float:
        """Training seconds per record of a `family` model with `flops_per_record` FLOPs."""
        points = sorted(
            (t.flops_per_record, t.seconds_per_record) for t in self.timings if t.family == family
        )
        if not points:
            raise KeyError(f"family {family!r} was not calibrated")
        (f0, s0), (f1, s1) = points[0], points[-1]
        if f1 <= f0:
            return s0 * flops_per_record / f0
        exponent = math.log(s1 / s0) / math.log(f1 / f0)
        return s0 * (flops_per_record / f0) ** exponent


def threads_per_run(executor: ExecutorSpec) -> int:
    """Torch threads of one run: the process's own (serial) or `cpus_per_run` (pool, Ray)."""
    if executor.kind == "serial":
        return torch.get_num_threads()
    return max(1, int(executor.cpus_per_run))


def parallel_runs(executor: ExecutorSpec) -> int:
    """Runs that execute at the same time: 1 (serial) or `workers` (pool, local Ray)."""
    return 1 if executor.kind == "serial" else executor.workers


def wall_seconds(seconds: Sequence[float], workers: int) -> float:
    """Wall time of runs taking `seconds` each, started in order on the first free of `workers`."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heapreplace(free, free[0] + s)
    return max(free)


def run_seconds(rows: list[dict[str, Any]], calibration: Calibration) -> list[float]:
    """Estimated training seconds of every row of `planner.estimate`."""
    return [
        calibration.seconds_per_record(r["family"], r["flops_per_record"]) * r["samples_seen"]
        for r in rows
    ]


def _train_config(spec: StudySpec, run: Run) -> TrainConfig:
    """The run's `TrainConfig` (the store path is only recorded, nothing is read or written)."""
    store = spec.stores[spec.pretrain_store]
    path = Path(store.path) if store.path else spec.out / "stores" / spec.pretrain_store
    return train_config(StudyContext(spec, {spec.pretrain_store: path}), run)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    config: TrainConfig, info: StoreInfo, batch_size: int, steps: int, max_seconds: float
) -> tuple[float, int]:
    """Seconds per record of `config`'s training step on batches of `batch_size` records, and the
    number of timed steps.

    One warm-up step, then up to `steps` timed steps, stopping early once `max_seconds` have passed
    (at least one timed step).
    """
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    encoder = build_encoder(config, info.fs)
    needs_labels = get_objective(config.objective).cls.needs_labels
    classes = info.classes or ("label",)  # a store without the label set fails in `study run`
    context = ObjectiveContext(
        encoder=encoder,
        fs=info.fs,
        length=info.length,
        leads=info.leads,
        classes=classes if needs_labels else (),
        patient_codes=np.arange(batch_size, dtype=np.int64),
    )
    objective = create_objective(config.objective, config.objective_options, context)
    generator = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(batch_size, info.leads, info.length, generator=generator)
    x = example_input(encoder, info.leads, info.length) + NOISE_MV * noise
    y = None
    if needs_labels:
        y = (torch.rand(batch_size, len(classes), generator=generator) < 0.2).float().to(device)
    batch = ObjectiveBatch(x=x.to(device), y=y, index=np.arange(batch_size))
    module = TrainStep(encoder, objective).to(device)
    module.train()
    optimizer = make_optimizer(module, config)

    def step() -> None:
        loss, _ = module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            params = [p for p in module.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        _sync(device)

    step()  # warm-up: kernel selection, allocations, tokenizer caches
    timed, start = 0, time.perf_counter()
    while timed < steps and (timed == 0 or time.perf_counter() - start < max_seconds):
        step()
        timed += 1
    return (time.perf_counter() - start) / (timed * batch_size), timed


def calibrate(
    spec: StudySpec,
    runs: list[Run],
    rows: list[dict[str, Any]],
    info: StoreInfo,
    *,
    steps: int = 3,
    max_seconds: float = 0.3,
    max_batch: int = 32,
) -> Calibration:
    """Time the smallest and the largest model (by planned FLOPs) of every family of a plan.

    Args:
        spec: the study (device, executor threads).
        runs: its runs (`planner.plan`); rows: their estimates (`planner.estimate`), same order.
        info: the pre-training store's input shape and classes.
        steps: timed steps per model after one warm-up step.
        max_seconds: stop timing a model after this many seconds (at least one timed step).
        max_batch: batch size cap (seconds per record change little with the batch above about
            16 records, and large models then take a few seconds, not tens).
    """
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"calibration: device {spec.device!r} is not available here; pass --no-calibrate"
        )
    families: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
    for run, row in zip(runs, rows, strict=True):
        families.setdefault(run.family, []).append((run, row))
    threads = threads_per_run(spec.executor)
    before = torch.get_num_threads()
    start = time.perf_counter()
    timings = []
    torch.set_num_threads(threads)
    try:
        for members in families.values():
            members.sort(key=lambda m: m[1]["flops_per_record"])
            ends = {m[1]["flops_per_record"]: m for m in (members[0], members[-1])}
            for run, row in ends.values():
                config = _train_config(spec, run)
                batch = min(config.batch_size, max_batch)
                per_record, timed = time_steps(config, info, batch, steps, max_seconds)
                timings.append(
                    Timing(run.family, run.size, row["flops_per_record"], per_record, batch, timed)
                )
    finally:
        torch.set_num_threads(before)
    return Calibration(tuple(timings), threads, str(device), time.perf_counter() - start)


def format_seconds(seconds: float) -> str:
    """45 -> '45 s', 90 -> '1.5 min', 7200 -> '2 h', 40 days -> '40 d'."""
    value, unit = seconds, "s"
    for name, scale in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= scale:
            value, unit = seconds / scale, name
            break
    return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"
