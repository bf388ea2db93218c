"""The trainer: any registered encoder with any objective, on a CPU, one GPU or under torchrun.

One step: the global batch of the seeded epoch order (`BatchLoader.order`, permutation of
`(seed, epoch)`; an incomplete last batch is dropped) is split evenly over the ranks; the
objective's loss is back-propagated, the global gradient norm clipped to `grad_clip`, and AdamW
steps with the learning rate of the schedule: linear warm-up from 0 over `warmup_fraction` of the
planned steps, then cosine decay to `lr * min_lr_ratio`.

Budgets: `epochs` (validation after each epoch, early stopping after `patience` epochs without a
new best validation loss) or `samples` (training records seen, rounded up to whole global batches;
validation after each full pass and at the end). The schedule spans the whole budget.

Determinism: initialisation, record order, dropout and the objective's draws all follow `seed`, so
two runs with the same configuration give bitwise identical losses on a CPU. Resuming restores
weights, optimizer moments, step counters and generator states from `last.safetensors` and replays
the same order from the next step, so an interrupted run ends with the same weights as an
uninterrupted one (see `ecgscale.train.checkpoint` for the files).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ecgscale.data.loader import BatchLoader
from ecgscale.data.splits import nested_subset
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError, UserError
from ecgscale.models.base import Encoder, count_parameters
from ecgscale.models.beats import BeatTokens, encoder_tokens
from ecgscale.models.registry import create_model, get_spec
from ecgscale.objectives import (
    TRAIN_PHASE,
    VAL_PHASE,
    Objective,
    ObjectiveBatch,
    ObjectiveContext,
    create_objective,
    get_objective,
)
from ecgscale.progress import make_progress
from ecgscale.train.checkpoint import (
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    save_tensors,
    strip_prefix,
    with_prefix,
    write_json,
)
from ecgscale.train.config import NOT_IDENTITY, TrainConfig
from ecgscale.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_metrics,
    gather,
    init_distributed,
    shard_steps,
    shutdown,
    sync_buffers,
)

# What a checkpoint's config records beyond the TrainConfig fields.
_SAVED_EXTRAS = ("store_checksum", "store_fs", "classes")
RUN_FILES = ("config.json", "last.safetensors", "best.safetensors", "metrics.jsonl", "result.json")


@dataclass(frozen=True)
class TrainResult:
    """What a pre-training run produced.

    Attributes:
        out: run directory.
        run_id: `TrainConfig.run_hash()`.
        model, objective: names.
        params: N, trainable encoder parameters (heads excluded).
        objective_params: parameters of the objective's heads.
        records: D, training records (after the data fraction).
        samples_seen: training records processed (global, over all ranks).
        steps: optimizer steps.
        epochs: samples_seen / records.
        flops_per_record: encoder forward + backward FLOPs per training record
            (`ecgscale.models.flops` convention; crops and tokens as the objective encodes them).
        train_flops: flops_per_record * samples_seen (validation not counted).
        best_val_loss: lowest held-out loss of the objective, and `best_step` where it was reached.
        initial_metrics: held-out metrics of the untrained encoder and heads (step 0).
        best_metrics: held-out metrics at the best step (pretext metrics: AUROC, top-1, ...).
        final_metrics: held-out metrics at the last validation.
        test_metrics: the objective's metrics with the best weights on the store's test split
            (empty when it has none): `test_metrics["loss"]` is the run's ID loss in studies.
        stopped_early: True when early stopping ended the run.
        train_seconds: wall time of the training loop (summed over resumes).
    """

    out: str
    run_id: str
    model: str
    objective: str
    params: int
    objective_params: int
    records: int
    samples_seen: int
    steps: int
    epochs: float
    flops_per_record: int
    train_flops: float
    best_val_loss: float
    best_step: int
    initial_metrics: dict[str, float]
    best_metrics: dict[str, float]
    final_metrics: dict[str, float]
    test_metrics: dict[str, float]
    stopped_early: bool
    train_seconds: float


@dataclass
class TrainerState:
    """Counters saved with every checkpoint (as JSON)."""

    step: int = 0
    samples: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1
    initial_metrics: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate of 0-based `step`: linear warm-up to `lr`, cosine to `lr * min_lr_ratio`."""
    warmup = round(config.warmup_fraction * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def build_encoder(config: TrainConfig, fs: float) -> Encoder:
    """The configured encoder; factories taking `fs` get the store's rate unless configured."""
    spec = get_spec(config.model)
    options = dict(config.model_options)
    with contextlib.suppress(TypeError, ValueError):
        if "fs" in inspect.signature(spec.factory).parameters:
            options.setdefault("fs", fs)
    encoder = create_model(config.model, **options)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"model {config.model!r} built a {type(encoder).__name__}, not an Encoder")
    return encoder


class TrainStep(nn.Module):
    """Encoder and objective as one module, so that DDP wraps a single forward: the loss."""

    def __init__(self, encoder: Encoder, objective: Objective) -> None:
        super().__init__()
        self.encoder = encoder
        self.objective = objective

    def forward(self, batch: ObjectiveBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective.loss(self.encoder, batch)


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights of rank >= 2; none on biases and normalisation parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def make_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused kernel: one pass per tensor, 3x faster on CPU), SGD or SGD with momentum."""
    groups = _param_groups(module, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=True)
    momentum = config.momentum if config.optimizer == "sgdm" else 0.0
    return torch.optim.SGD(groups, lr=config.lr, momentum=momentum)


class _Run:
    """The state of one training run (data, modules, optimizer, counters, files)."""

    def __init__(self, config: TrainConfig, ctx: DistContext, show_progress: bool) -> None:
        self.config = config
        self.ctx = ctx
        self.show_progress = show_progress and ctx.is_main
        self.out = Path(config.out)
        self.store = Store(config.data)
        store = self.store
        patients = store.meta["patient_id"].astype(str).to_numpy()
        rows = store.split_indices("train")
        if config.data_fraction < 1:
            rows = nested_subset(patients, rows, config.data_fraction, config.data_seed)
        self.train_rows = rows
        self.val_rows = store.split_indices("val")
        if len(self.val_rows) == 0:
            raise DataError(f"{store.path}: no validation records (split 'val') to evaluate on")
        if config.batch_size % ctx.world_size:
            raise ConfigError(
                f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} "
                "processes of this torchrun launch"
            )
        self.steps_per_epoch = len(rows) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size {config.batch_size} exceeds the {len(rows)} training records of "
                f"{store.path} (data_fraction {config.data_fraction:g}); lower --batch-size"
            )
        # validate every epoch, or every `val_every` records rounded up to whole epochs
        epoch_records = self.steps_per_epoch * config.batch_size
        self.val_epochs = max(1, -(-(config.val_every or 0) // epoch_records))
        if config.epochs is not None:
            self.total_steps = config.epochs * self.steps_per_epoch
            if config.max_samples is not None:
                cap = -(-config.max_samples // config.batch_size)
                self.total_steps = min(self.total_steps, cap)
        else:
            self.total_steps = -(-int(config.samples or 0) // config.batch_size)

        torch.manual_seed(config.seed)
        self.encoder = build_encoder(config, store.fs)
        classes: tuple[str, ...] = ()
        self.labels: np.ndarray | None = None
        if get_objective(config.objective).cls.needs_labels:
            if config.label_set is None:
                raise ConfigError(
                    f"objective {config.objective!r} needs --label-set; {store.path} has: "
                    f"{', '.join(store.label_sets) or 'none'}"
                )
            self.labels = store.labels(config.label_set)
            classes = tuple(store.label_sets[config.label_set])
            if config.label_top_k is not None:
                classes = tuple(store.top_classes(config.label_set, config.label_top_k))
                columns = [store.label_sets[config.label_set].index(c) for c in classes]
                self.labels = self.labels[:, columns]
        self.classes = classes
        context = ObjectiveContext(
            encoder=self.encoder,
            fs=store.fs,
            length=store.length,
            leads=int(store.signals.shape[1]),
            classes=classes,
            patient_codes=pd.factorize(patients)[0].astype(np.int64),
        )
        self.objective = create_objective(config.objective, config.objective_options, context)
        self.tokens: BeatTokens | None = None
        if self.objective.whole_records:  # a beat-token encoder's tokens, once per store
            self.tokens = encoder_tokens(self.encoder, store)
        self.encoder.to(ctx.device)
        self.objective.to(ctx.device)
        self.flops_per_record = self.objective.train_flops_per_record(
            self.encoder, context.leads, store.length
        )
        self.step_module = TrainStep(self.encoder, self.objective)
        if config.compile:
            self.encoder.forward_features = torch.compile(self.encoder.forward_features)
        self.model: nn.Module = self.step_module
        if ctx.enabled:
            self.model = DistributedDataParallel(self.step_module)
        self.optimizer = make_optimizer(self.step_module, config)
        self.state = TrainerState()
        self.tracker: Any = None  # TensorBoard events of the log (rank 0, `config.tensorboard`)

    # --- files ---------------------------------------------------------------------------

    def _saved_config(self) -> dict[str, Any]:
        """The resolved config plus the store's identity and sampling rate."""
        store = {"store_checksum": self.store.checksum, "store_fs": self.store.fs}
        return {**self.config.resolved(), **store, "classes": list(self.classes)}

    def prepare_dir(self, resume: bool, overwrite: bool) -> None:
        """Start a fresh run directory, or restore from `last.safetensors` when resuming."""
        has_run = (self.out / "config.json").is_file()
        barrier()  # every rank has looked before rank 0 writes
        if has_run and not (resume or overwrite):
            raise UserError(
                f"{self.out} already holds a run; pass --resume to continue it or --overwrite"
            )
        if has_run and resume:
            self._check_same_run()
            if (self.out / "last.safetensors").is_file():
                self._restore()
        elif self.ctx.is_main:
            for name in RUN_FILES:
                (self.out / name).unlink(missing_ok=True)
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", self._saved_config())
            self._truncate_log()
            self._open_tracker()
        barrier()

    def _open_tracker(self) -> None:
        if self.config.tensorboard is not False:
            from ecgscale.tracking.tensorboard_log import open_log

            self.tracker = open_log(self.config.tensorboard, self.out, self.state.step)

    def _check_same_run(self) -> None:
        saved = json.loads((self.out / "config.json").read_text())
        now = self._saved_config()
        differ = sorted(
            key
            for key in set(saved) | set(now)
            if key not in NOT_IDENTITY and saved.get(key) != now.get(key)
        )
        if differ:
            raise ConfigError(
                f"{self.out} holds a run with a different configuration ({', '.join(differ)} "
                "differ); use another --out or --overwrite"
            )

    def _truncate_log(self) -> None:
        """Keep only the log lines up to the restored step (a resume replays the rest)."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = [line for line in lines if json.loads(line)["step"] <= self.state.step]
        path.write_text("".join(f"{line}\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record, allow_nan=True) + "\n")
            if self.tracker is not None:
                self.tracker.log(record)

    def _rng_tensors(self) -> dict[str, torch.Tensor]:
        """Generator states of every rank (collective under DDP)."""
        states = {"torch": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        out = {}
        for name, state in states.items():
            every = gather(state.to(self.ctx.device)[None]).cpu()
            out.update({f"rng.{name}.{rank}": every[rank] for rank in range(len(every))})
        return out

    def save_checkpoint(self) -> None:
        """Write `last.safetensors` (collective under DDP; rank 0 writes)."""
        rng = self._rng_tensors()
        if not self.ctx.is_main:
            return
        opt_tensors, groups = optimizer_tensors(self.optimizer)
        tensors = {
            **with_prefix("module", self.step_module.state_dict()),
            **with_prefix("optimizer", opt_tensors),
            **rng,
        }
        meta = {
            "state": asdict(self.state),
            "optimizer": groups,
            "world_size": self.ctx.world_size,
            "config": self._saved_config(),
        }
        save_tensors(self.out / "last.safetensors", tensors, meta)

    def _restore(self) -> None:
        tensors, meta = load_tensors(self.out / "last.safetensors")
        if meta["world_size"] != self.ctx.world_size:
            raise ConfigError(
                f"{self.out}/last.safetensors was written by {meta['world_size']} processes; "
                f"resume it with the same number (got {self.ctx.world_size})"
            )
        self.step_module.load_state_dict(strip_prefix("module", tensors))
        load_optimizer(self.optimizer, strip_prefix("optimizer", tensors), meta["optimizer"])
        torch.set_rng_state(tensors[f"rng.torch.{self.ctx.rank}"])
        if self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{self.ctx.rank}"], self.ctx.device)
        self.state = TrainerState(**meta["state"])

    def save_best(self, metrics: dict[str, float]) -> None:
        if not self.ctx.is_main:
            return
        tensors = {
            **with_prefix("encoder", self.encoder.state_dict()),
            **with_prefix("objective", self.objective.state_dict()),
        }
        meta = {"config": self._saved_config(), "step": self.state.step, "val": metrics}
        save_tensors(self.out / "best.safetensors", tensors, meta)

    # --- training --------------------------------------------------------------------------

    def _batch(self, batch: Any, phase: int, step: int, sharded: bool) -> ObjectiveBatch:
        device = self.ctx.device
        return ObjectiveBatch(
            x=batch.x.to(device, non_blocking=True),
            y=None if batch.y is None else batch.y.to(device, non_blocking=True),
            index=batch.index,
            seed=(self.config.seed, phase, step),
            sharded=sharded,
            tokens=None if self.tokens is None else self.tokens[batch.index],
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def validate(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Held-out metrics on the whole validation split, or on `rows` (every rank evaluates all
        of it with rank 0's buffers; rank 0's metrics are used everywhere)."""
        sync_buffers(self.step_module)
        self.step_module.eval()
        loader = BatchLoader(
            self.store,
            self.val_rows if rows is None else rows,
            self.config.batch_size,
            labels=self.labels,
            shuffle=False,
            prefetch=self.config.prefetch,
        )
        batches = (self._batch(b, VAL_PHASE, 0, False) for b in loader)
        with self._autocast():
            metrics = self.objective.evaluate(self.encoder, batches)
        self.step_module.train()
        return broadcast_metrics(metrics)

    def _epoch_batches(self) -> Iterator[Any]:
        """Batches of this rank from the current step to the end of its epoch (or budget)."""
        config, spe = self.config, self.steps_per_epoch
        epoch, within = divmod(self.state.step, spe)
        order_loader = BatchLoader(
            self.store, self.train_rows, config.batch_size, seed=config.seed, shuffle=True
        )
        order_loader.set_epoch(epoch)
        steps = min(spe - within, self.total_steps - self.state.step)
        order = order_loader.order()[within * config.batch_size :]
        order = order[: steps * config.batch_size]
        local = shard_steps(order, config.batch_size, self.ctx)
        return iter(
            BatchLoader(
                self.store,
                local,
                config.batch_size // self.ctx.world_size,
                labels=self.labels,
                shuffle=False,
                drop_last=True,
                prefetch=config.prefetch,
            )
        )

    def train_step(self, raw: Any) -> dict[str, Any]:
        config, state = self.config, self.state
        lr = learning_rate(state.step, self.total_steps, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._batch(raw, TRAIN_PHASE, state.step, self.ctx.enabled)
        with self._autocast():
            loss, metrics = self.model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.step_module.parameters() if p.grad is not None]
        if config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        self.optimizer.step()
        mean_loss = all_reduce_sum(loss.detach().float()) / self.ctx.world_size
        return {"loss": float(mean_loss), "lr": lr, "grad_norm": float(norm), **metrics}

    def after_epoch(self, metrics: dict[str, float]) -> None:
        """Best-model tracking and early stopping on the validation loss."""
        state, config = self.state, self.config
        state.final_metrics = metrics
        if metrics["loss"] < state.best_val_loss:
            state.best_val_loss = metrics["loss"]
            state.best_step = state.step
            state.best_metrics = metrics
            state.bad_epochs = 0
            self.save_best(metrics)
        else:
            state.bad_epochs += 1
            if config.patience is not None and state.bad_epochs >= config.patience:
                state.stopped_early = True

    def train(self) -> None:
        state, spe = self.state, self.steps_per_epoch
        progress = make_progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not self.show_progress,
            transient=True,
        )
        if state.step == 0:
            state.initial_metrics = self.validate()
            self.log({"kind": "val", "step": 0, **state.initial_metrics})
        self.step_module.train()
        with progress:
            task = progress.add_task(
                f"{self.config.objective} {self.config.model}",
                total=self.total_steps,
                completed=state.step,
                info="",
            )
            while state.step < self.total_steps and not state.stopped_early:
                tick = time.perf_counter()
                for raw in self._epoch_batches():
                    record = self.train_step(raw)
                    state.step += 1
                    state.samples += self.config.batch_size
                    now = time.perf_counter()
                    state.train_seconds += now - tick
                    record = {
                        "kind": "train",
                        "step": state.step,
                        "epoch": state.step / spe,
                        "samples": state.samples,
                        "samples_per_s": self.config.batch_size / max(now - tick, 1e-9),
                        **record,
                    }
                    self.log(record)
                    epoch_end = state.step % spe == 0
                    last = state.step >= self.total_steps
                    due = epoch_end and (state.step // spe) % self.val_epochs == 0
                    if due or last:
                        metrics = self.validate()
                        self.after_epoch(metrics)
                        self.log({"kind": "val", "step": state.step, **metrics})
                    every = self.config.checkpoint_every
                    if due or last or state.stopped_early or (every and state.step % every == 0):
                        self.save_checkpoint()
                    progress.update(task, completed=state.step, info=f"loss {record['loss']:.4f}")
                    tick = time.perf_counter()
                    if state.stopped_early:
                        break

    def test_metrics(self) -> dict[str, float]:
        """The objective's held-out metrics on the test split with the best weights (which this
        leaves loaded); empty when the store has no test split."""
        rows = self.store.split_indices("test")
        if len(rows) == 0:
            return {}
        tensors, _ = load_tensors(self.out / "best.safetensors")
        self.encoder.load_state_dict(strip_prefix("encoder", tensors))
        self.objective.load_state_dict(strip_prefix("objective", tensors))
        return self.validate(rows)

    def result(self) -> TrainResult:
        state = self.state
        return TrainResult(
            out=str(self.out),
            run_id=self.config.run_hash(),
            model=self.config.model,
            objective=self.config.objective,
            params=count_parameters(self.encoder),
            objective_params=count_parameters(self.objective),
            records=len(self.train_rows),
            samples_seen=state.samples,
            steps=state.step,
            epochs=state.samples / len(self.train_rows),
            flops_per_record=int(self.flops_per_record),
            train_flops=float(self.flops_per_record) * state.samples,
            best_val_loss=state.best_val_loss,
            best_step=state.best_step,
            initial_metrics=state.initial_metrics,
            best_metrics=state.best_metrics,
            final_metrics=state.final_metrics,
            test_metrics=self.test_metrics(),
            stopped_early=state.stopped_early,
            train_seconds=state.train_seconds,
        )


def pretrain(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> TrainResult:
    """Train `config.model` with `config.objective`; returns the `TrainResult` (also written to
    `config.out/result.json`).

    Args:
        config: the run.
        resume: continue the run in `config.out` from its last checkpoint (its configuration must
            be the same); a finished run is not trained further.
        overwrite: replace a run already in `config.out`.
        progress: show a progress bar (rank 0 only).
    """
    if config.tensorboard is not False:  # the package is there: fail before any file is written
        from ecgscale.tracking.tensorboard_log import check_installed

        check_installed()
    ctx = init_distributed(config.device)
    run: _Run | None = None
    try:
        run = _Run(config, ctx, progress)
        run.prepare_dir(resume, overwrite)
        run.train()
        result = run.result()
        if ctx.is_main:
            write_json(run.out / "result.json", asdict(result))
        if run.tracker is not None:
            run.tracker.finish(result.steps, result.test_metrics)
        return result
    finally:
        if run is not None and run.tracker is not None:
            run.tracker.close()
        shutdown(ctx)


def saved_config(meta: dict[str, Any]) -> tuple[TrainConfig, float]:
    """The `TrainConfig` and store sampling rate (Hz) recorded in a checkpoint's metadata."""
    saved = {k: v for k, v in meta["config"].items() if k not in _SAVED_EXTRAS}
    return TrainConfig.model_validate(saved), float(meta["config"]["store_fs"])


def load_encoder(run_dir: str | Path, which: str = "best") -> Encoder:
    """The encoder of a finished run with its `which` ("best" or "last") weights, on the CPU."""
    path = Path(run_dir) / f"{which}.safetensors"
    tensors, meta = load_tensors(path)
    encoder = build_encoder(*saved_config(meta))
    prefix = "encoder" if which == "best" else "module.encoder"
    encoder.load_state_dict(strip_prefix(prefix, tensors))
    return encoder
