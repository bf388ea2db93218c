"""Fine-tuning a run on a named task: the whole encoder with a new head, or the head alone.

The external-benchmark protocol: a linear head on the encoder's embedding, trained with AdamW for a
fixed number of steps on the task's training split, then scored on its test split with the same
losses and metrics as the linear probes (`ecgscale.evaluate.probe`): mean BCE (binary,
multi-label), cross-entropy (multi-class) or the mean squared error of the standardised target
(regression), AUROC/AUPRC/F1 (thresholds tuned on the validation split)/Brier/ECE, and the
Challenge 2021 score for tasks that list it.

* `mode="head"`: the encoder stays frozen; the head trains on the cached embeddings
  (`ecgscale.evaluate.embeddings.embed`), so it costs no encoder pass beyond the shared one.
* `mode="full"`: encoder and head train together (batch-norm statistics and dropout in training
  mode), reading waveforms from the store.

The head sees embeddings standardised with the training mean and standard deviation of the
initial encoder's embeddings (fixed buffers), starts from zero weights and biases at the training
priors (Jeffreys-smoothed prevalences; 0 for the standardised regression target), so the
"untrained head" predicts the priors; its test loss is reported as `initial_test_loss`, the
baseline that fine-tuning has to beat.

Schedule: linear warm-up over the first 10 % of steps, then cosine decay to 0; gradient norm
clipped to 1; weight decay on weight matrices and kernels only. Batches are drawn without
replacement from seeded permutations of the training records (epoch e uses
`default_rng([seed, e])`); dropout draws come from `seed` inside a forked torch generator, so two
runs with the same arguments give identical results on a CPU and the caller's torch random
state is untouched. With `eval_every`, the validation loss is checked every that many steps and
the best state is the one reported.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ecgscale.data.loader import BatchLoader
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError
from ecgscale.evaluate.embeddings import encode, load_run_encoder
from ecgscale.evaluate.probe import (
    _classification_metrics,
    _probability_loss,
    _regression_metrics,
    fraction_subsets,
)
from ecgscale.evaluate.sources import ModelSource
from ecgscale.evaluate.tasks import result_rows, task_challenge_metrics, task_features
from ecgscale.train.checkpoint import save_tensors, with_prefix, write_json

Mode = Literal["full", "head"]
MODES: tuple[str, ...] = ("full", "head")
WARMUP_FRACTION = 0.1
GRAD_CLIP = 1.0
EVAL_BATCH = 256  # records per encoder batch when scoring the validation and test splits
DEFAULT_LR: dict[str, float] = {"full": 1e-3, "head": 1e-2}
"""Peak learning rates: the lone head on standardised embeddings takes a 10x larger step."""


@dataclass(frozen=True)
class FinetuneResult:
    """Outcome of one fine-tuning run.

    Attributes:
        task, mode, kind: the task, "full" or "head", and the task kind.
        steps, seed: optimizer steps taken and the seed.
        best_step: the step whose state is reported (the last one without `eval_every`).
        initial_test_loss, initial_val_loss: losses of the untrained head (training priors).
        test_loss, val_loss: losses of the reported state (definitions as `ProbeResult`).
        metrics: test metrics as `ProbeResult.metrics` (plus the official Challenge 2021 scores,
            `challenge`, `challenge_auroc`, ..., where the task lists `challenge`).
        per_class: per-label test metrics (`auroc`, `auprc`, `f1`).
        label_names: one name per label / class / target.
        thresholds: per-label decision thresholds tuned for F1 on validation (binary/multi-label).
        n_train, n_val, n_test: records per split.
        train_losses: training loss of every step.
        val_checks: `(step, validation loss)` of every check (step 0: the untrained head).
        seconds: wall time; test_outputs: test probabilities or predictions (target units). Neither
            is part of equality.
    """

    task: str
    mode: str
    kind: str
    steps: int
    seed: int
    best_step: int
    initial_test_loss: float
    initial_val_loss: float
    test_loss: float
    val_loss: float
    metrics: Mapping[str, float | None]
    per_class: Mapping[str, tuple[float | None, ...]]
    label_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    n_train: int
    n_val: int
    n_test: int
    train_losses: tuple[float, ...]
    val_checks: tuple[tuple[int, float], ...]
    seconds: float = field(compare=False)
    test_outputs: np.ndarray = field(compare=False, repr=False)


class StandardisedHead(nn.Module):
    """`(batch, embed_dim)` -> `(batch, outputs)`: fixed standardisation, then a linear map."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.linear = nn.Linear(len(mean), len(bias))
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear((z - self.mean) / self.scale)


@dataclass(frozen=True)
class _Targets:
    """Training-ready targets of a task: `values` `(records, outputs)` float32, or `(records,)`
    int64 for multi-class; the prior bias; the regression target's mean and scale."""

    values: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def _targets(kind: str, y: np.ndarray, train: np.ndarray, outputs: int) -> _Targets:
    n = len(train)
    if kind == "multiclass":
        counts = np.bincount(y[train], minlength=outputs)
        prior = (counts + 0.5) / (n + 0.5 * outputs)
        return _Targets(y.astype(np.int64), np.log(prior), np.zeros(1), np.ones(1))
    values = np.asarray(y, np.float64).reshape(len(y), -1)
    if kind == "regression":
        mean, std = values[train].mean(axis=0), values[train].std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        standard = ((values - mean) / scale).astype(np.float32)
        return _Targets(standard, np.zeros(values.shape[1]), mean, scale)
    prior = (values[train].sum(axis=0) + 0.5) / (n + 1.0)
    bias = np.log(prior) - np.log1p(-prior)
    return _Targets(values.astype(np.float32), bias, np.zeros(1), np.ones(1))


def _loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "multiclass":
        return F.cross_entropy(logits, target)
    if kind == "regression":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def _batches(train: np.ndarray, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """`steps` batches of training positions, epochs of seeded permutations, no partial batch."""

    def forever() -> Iterator[np.ndarray]:
        for epoch in itertools.count():
            order = train[np.random.default_rng([seed, epoch]).permutation(len(train))]
            for start in range(0, len(order) - batch + 1, batch):
                yield order[start : start + batch]

    return list(itertools.islice(forever(), steps))


def _learning_rate(step: int, steps: int, lr: float) -> float:
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _optimizer(modules: list[nn.Module], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def finetune(
    model: str | Path,
    task: str,
    store: Store,
    *,
    mode: Mode = "full",
    steps: int = 200,
    lr: float | None = None,
    batch_size: int = 64,
    weight_decay: float = 0.01,
    seed: int = 0,
    eval_every: int = 0,
    which: str = "best",
    scoring: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    run_out: str | Path | None = None,
    fraction: float = 1.0,
    draw: int = 0,
) -> FinetuneResult:
    """Fine-tune `model` (a run folder or an external reference, `ecgscale.evaluate.sources`)
    on `task` over `store` for `steps` steps (see the module docstring); `batch_size` is capped
    at the number of training records; `lr` (peak AdamW learning rate) defaults to
    `DEFAULT_LR[mode]`. With `fraction` < 1, training uses draw `draw` of that fraction of the
    training labels (`ecgscale.evaluate.probe.fraction_subsets`, seeded by `seed`). With
    `run_out`, the fine-tuned encoder and head are saved there as a run (`save_finetuned`) that
    probes, fine-tuning and benchmarks load like any other."""
    if mode not in MODES:
        raise ConfigError(f"fine-tuning mode {mode!r}: expected one of {', '.join(MODES)}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name}={value}: expected at least 1")
    lr = DEFAULT_LR[mode] if lr is None else lr
    if eval_every < 0 or lr <= 0 or weight_decay < 0:
        raise ConfigError(
            f"eval_every={eval_every}, lr={lr}, weight_decay={weight_decay}: expected "
            "eval_every >= 0, lr > 0 and weight_decay >= 0"
        )
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _finetune(
            ModelSource.of(model, which),
            task,
            store,
            _Settings(
                mode, steps, lr, batch_size, weight_decay, seed, eval_every, which, scoring,
                cache_dir, device, progress, None if run_out is None else Path(run_out),
                fraction, draw,
            ),
        )  # fmt: skip


@dataclass(frozen=True)
class _Settings:
    """The options of `finetune`, validated."""

    mode: str
    steps: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int
    eval_every: int
    which: str
    scoring: str | Path | None
    cache_dir: str | Path | None
    device: str | torch.device
    progress: bool
    run_out: Path | None
    fraction: float
    draw: int


def _finetune(source: ModelSource, task: str, store: Store, opt: _Settings) -> FinetuneResult:
    """`finetune` once the options are checked, inside a forked torch generator seeded with
    `opt.seed` (dropout draws)."""
    device, steps, eval_every = opt.device, opt.steps, opt.eval_every
    start_time = time.perf_counter()
    definition, data, features = task_features(
        source, task, store, which=opt.which, cache_dir=opt.cache_dir, device=device
    )
    kind = data.kind
    train = data.train
    if opt.fraction < 1:
        subsets = fraction_subsets(
            data.y, kind, data.train, fractions=[opt.fraction], draws=opt.draw + 1,
            seed=opt.seed, n_classes=len(data.classes) if kind == "multiclass" else None,
        )  # fmt: skip
        train = subsets[min(opt.draw, len(subsets) - 1)][2]
    outputs = len(data.classes)
    targets = _targets(kind, data.y, train, outputs)
    train_features = np.asarray(features[train], np.float64)
    std = train_features.std(axis=0)
    head = StandardisedHead(
        train_features.mean(axis=0), np.where(std > 1e-12, std, 1.0), targets.bias
    ).to(device)
    feats = torch.from_numpy(features).to(device)
    target_t = torch.from_numpy(targets.values).to(device)
    full = opt.mode == "full"
    encoder = load_run_encoder(source, opt.which, device, store.fs) if full else None

    def logits(positions: np.ndarray, cached: bool = False) -> np.ndarray:
        """Float64 head outputs of the records at `positions`: from the cached embeddings (head
        mode, or `cached`: the initial encoder) or from an encoder pass (full mode)."""
        with torch.no_grad():
            if encoder is None or cached:
                z = feats[torch.from_numpy(positions)]
            else:
                rows = data.rows[positions]
                z = encode(encoder, store, rows, EVAL_BATCH, device=device)
                z = torch.from_numpy(z).to(device)
                encoder.train()
            return head(z).double().cpu().numpy()

    def val_loss(out: np.ndarray) -> float:
        return _outputs_loss(kind, targets, data.val, out)

    initial_val = val_loss(logits(data.val, cached=True))
    initial_test = _outputs_loss(kind, targets, data.test, logits(data.test, cached=True))
    batch = min(opt.batch_size, len(train))
    plan = _batches(train, batch, steps, opt.seed)
    modules: list[nn.Module] = [head] if encoder is None else [head, encoder]
    optimizer = _optimizer(modules, opt.lr, opt.weight_decay)
    train_losses: list[float] = []
    checks: list[tuple[int, float]] = [(0, initial_val)]
    best: tuple[float, int, list[dict[str, Any]]] | None = None
    bar = Progress(
        TextColumn(f"fine-tune {task} ({opt.mode})"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not opt.progress,
        transient=True,
    )
    with bar:
        tick = bar.add_task("steps", total=steps)
        for m in modules:
            m.train()
        inputs = _inputs(encoder, store, data.rows, feats, plan, batch, device)
        for step, (positions, z_in) in enumerate(zip(plan, inputs, strict=True)):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps, opt.lr)
            z = z_in if encoder is None else encoder.forward_features(z_in)
            loss = _loss(kind, head(z).float(), target_t[torch.from_numpy(positions)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for m in modules for p in m.parameters()], GRAD_CLIP)
            optimizer.step()
            train_losses.append(float(loss.detach()))
            bar.update(tick, advance=1)
            done = step + 1
            if eval_every and (done % eval_every == 0 or done == steps):
                checks.append((done, val_loss(logits(data.val))))
                if best is None or checks[-1][1] < best[0]:
                    best = (checks[-1][1], done, [copy.deepcopy(m.state_dict()) for m in modules])
    best_step = steps
    if best is not None:
        best_step = best[1]
        for m, state in zip(modules, best[2], strict=True):
            m.load_state_dict(state)
    out_val, out_test = logits(data.val), logits(data.test)
    final_val = val_loss(out_val)
    if not eval_every:
        checks.append((steps, final_val))
    metrics, per_class, thresholds, test_outputs = _test_metrics(
        kind, targets, data.y, data.val, data.test, out_val, out_test
    )
    if "challenge" in definition.metrics:
        decisions = test_outputs >= np.asarray(thresholds)
        official = task_challenge_metrics(
            definition, data, store, data.test, decisions, test_outputs, opt.scoring
        )
        metrics.update(official.scores())
    result = FinetuneResult(
        task=task,
        mode=opt.mode,
        kind=kind,
        steps=steps,
        seed=opt.seed,
        best_step=best_step,
        initial_test_loss=initial_test,
        initial_val_loss=initial_val,
        test_loss=_outputs_loss(kind, targets, data.test, out_test),
        val_loss=final_val,
        metrics=MappingProxyType(metrics),
        per_class=MappingProxyType(per_class),
        label_names=tuple(data.classes),
        thresholds=thresholds,
        n_train=len(train),
        n_val=len(data.val),
        n_test=len(data.test),
        train_losses=tuple(train_losses),
        val_checks=tuple(checks),
        seconds=time.perf_counter() - start_time,
        test_outputs=test_outputs,
    )
    if opt.run_out is not None:
        weights = (
            encoder if encoder is not None else load_run_encoder(source, opt.which, "cpu", store.fs)
        )
        save_finetuned(opt.run_out, source, weights, head, result, store)
    return result


def save_finetuned(
    out: Path,
    source: ModelSource,
    encoder: nn.Module,
    head: StandardisedHead,
    result: FinetuneResult,
    store: Store,
) -> Path:
    """Write a fine-tuned model as a run folder `out`: `best.safetensors` with `encoder.*` and
    `head.*` tensors and metadata that rebuilds the encoder (the original run's `config`, or the
    `external` reference of an external model) plus the fine-tuning record (`finetune`: source,
    task, labels, thresholds, settings, test metrics); and `result.json`. Returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "source": source.ref,
        "store": str(store.path),
        "store_checksum": store.checksum,
        "store_fs": store.fs,
        **{
            f.name: getattr(result, f.name)
            for f in fields(result)
            if f.name not in ("test_outputs", "train_losses", "metrics", "per_class")
        },
        "metrics": dict(result.metrics),
        "per_class": dict(result.per_class),
    }
    meta: dict[str, Any] = {k: v for k, v in source.meta.items() if k == "config"}
    if source.external is not None:
        meta["external"] = source.external.text
    meta["finetune"] = record
    tensors = {
        **with_prefix("encoder", encoder.state_dict()),
        **with_prefix("head", head.state_dict()),
    }
    save_tensors(out / "best.safetensors", tensors, meta)
    write_json(out / "result.json", record)
    return out


def _inputs(
    encoder: nn.Module | None,
    store: Store,
    rows: np.ndarray,
    feats: torch.Tensor,
    plan: list[np.ndarray],
    batch: int,
    device: str | torch.device,
) -> Iterator[torch.Tensor]:
    """Per step: cached embeddings (head mode) or waveforms read ahead by a background thread."""
    if encoder is None:
        yield from (feats[torch.from_numpy(positions)] for positions in plan)
        return
    order = rows[np.concatenate(plan)] if plan else np.zeros(0, np.int64)
    for item in BatchLoader(store, order, batch, shuffle=False, prefetch=2):
        yield item.x.to(device, non_blocking=True)


def _probabilities(kind: str, out: np.ndarray) -> np.ndarray:
    if kind == "multiclass":
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-out))


def _outputs_loss(kind: str, targets: _Targets, positions: np.ndarray, out: np.ndarray) -> float:
    """The probe's loss definitions on head outputs `out` of the records at `positions`."""
    if kind == "regression":
        return float(((out - targets.values[positions]) ** 2).mean())
    y = targets.values[positions]
    y = y if kind == "multiclass" else y.astype(np.float64)
    return _probability_loss(kind, y, _probabilities(kind, out))


def _test_metrics(
    kind: str,
    targets: _Targets,
    y: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    out_val: np.ndarray,
    out_test: np.ndarray,
) -> tuple[
    dict[str, float | None], dict[str, tuple[float | None, ...]], tuple[float, ...], np.ndarray
]:
    """Test metrics, per-class metrics, thresholds and test outputs (probabilities, or
    predictions in target units)."""
    if kind == "regression":
        pred = out_test * targets.scale + targets.mean
        truth = np.asarray(y, np.float64).reshape(len(y), -1)[test]
        metrics = _regression_metrics(truth, pred, targets.scale)
        return metrics, {}, (), pred
    p_val, p_test = _probabilities(kind, out_val), _probabilities(kind, out_test)
    yv, yt = targets.values[val], targets.values[test]
    if kind != "multiclass":
        yv, yt = yv.astype(np.float64), yt.astype(np.float64)
    metrics, per_class, _, thresholds = _classification_metrics(kind, yt, p_test, yv, p_val)
    return dict(metrics), dict(per_class), thresholds, p_test


def finetune_rows(model: str, result: FinetuneResult) -> list[dict[str, Any]]:
    """Tidy rows of one fine-tuning result (protocol `finetune_<mode>`; see `result_rows`)."""
    extra = {
        "initial_loss": result.initial_test_loss,
        "steps": float(result.steps),
        "best_step": float(result.best_step),
    }
    return result_rows(
        model, result.task, f"finetune_{result.mode}", result, seed=result.seed, extra=extra
    )
