"""Distributed data parallel under `torchrun`: process group, sharding and cross-rank reductions.

Launch (two CPU processes, gloo; on GPUs the backend is nccl and each rank takes `cuda:LOCAL_RANK`):

    torchrun --standalone --nproc-per-node 2 --no-python ecgscale pretrain --model ... --out RUN

The global batch (`TrainConfig.batch_size`) and the seeded record order are the same as in a
single-process run; rank r takes the r-th contiguous slice of every global batch, so the ranks
together see exactly the records one process would. Gradients are averaged by DDP; objectives whose
loss couples the records of a batch use `gather_with_grad` / `global_mean` so that their loss is the
single-process one. BatchNorm statistics stay per rank (as in standard DDP), so a BatchNorm model
agrees with single-process training only in distribution; models without batch statistics agree
to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ecgscale.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, number of processes, its device, and whether this module
    created the process group (and so destroys it at the end)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process.

    `device` is the configured device ("cpu", "cuda", "cuda:N"); under torchrun a CUDA device
    becomes `cuda:LOCAL_RANK`. A process group the caller already initialised is used as it is
    (so one launch can run several trainings).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = torch.device(device)
    if base.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    if world <= 1:
        return DistContext(device=base)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if base.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, base, owns)


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_steps(order: np.ndarray, global_batch: int, ctx: DistContext) -> np.ndarray:
    """This rank's rows of every complete global batch of `order`, concatenated in step order.

    `order` holds the rows of an epoch (or of its remaining steps); a final incomplete global batch
    is dropped, so every step has exactly `global_batch` records over all ranks.
    """
    local = global_batch // ctx.world_size
    steps = len(order) // global_batch
    batches = order[: steps * global_batch].reshape(steps, ctx.world_size, local)
    return np.ascontiguousarray(batches[:, ctx.rank]).reshape(-1)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient and keeps this rank's rows
    (shards of equal size)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` `(n, ...)` from every rank along dim 0 (rank order), keeping gradients.

    Every rank then computes the loss of the whole global batch; the backward sums the gradients
    of all ranks into each shard, which together with DDP's averaging gives every parameter the
    gradient of the single-process loss.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` `(n, ...)` from every rank along dim 0, without gradients."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks (a new tensor; no gradient)."""
    if world_size() == 1:
        return x.detach().clone()
    out = x.detach().clone()
    dist.all_reduce(out)
    return out


def global_mean(total: torch.Tensor, count: torch.Tensor, sharded: bool) -> torch.Tensor:
    """`total / count` where `total` is this rank's sum of per-item losses and `count` its number
    of items; when `sharded`, scaled so that DDP's gradient average yields the gradient of
    (sum over ranks of totals) / (sum over ranks of counts), and the mean over ranks of the
    returned values is that global mean."""
    if not sharded or world_size() == 1:
        return total / count.clamp_min(1)
    return total * world_size() / all_reduce_sum(count.to(total.dtype)).clamp_min(1)


def sync_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, which each rank updates from its own shard)
    into `module` on every rank, so that every rank evaluates the same model."""
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, 0)


def broadcast_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0's `metrics` (the same keys on every rank), so that every rank takes the same
    best-model and early-stopping decisions."""
    if world_size() == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.broadcast(values, 0)
    return dict(zip(keys, values.tolist(), strict=True))


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if world_size() > 1:
        dist.barrier()
