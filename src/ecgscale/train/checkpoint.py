"""Checkpoints without pickle: safetensors tensors plus JSON, written atomically.

A run directory holds:

    config.json          the resolved `TrainConfig` (and the store checksum it was trained on)
    last.safetensors     everything needed to resume exactly: `module.*` (encoder and objective
                         weights and buffers), `optimizer.<param>.<name>` (AdamW moments and step
                         counts), `rng.torch.<rank>` / `rng.cuda.<rank>` (generator states); its
                         metadata holds JSON: the trainer state (step, epoch, samples seen, best
                         validation loss, early-stopping count) and the optimizer's param groups
    best.safetensors     `encoder.*` and `objective.*` weights at the best validation loss, with
                         the run's config and metrics as JSON metadata (what probes load)
    metrics.jsonl        one JSON object per step and per validation
    result.json          the `TrainResult`

Every file is written to a temporary name in the same directory, flushed to disk and renamed, so a
crash leaves either the previous file or the new one. Loading goes through `safetensors.safe_open`
and `json`, never `torch.load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ecgscale.errors import DataError
from ecgscale.fileio import atomic_write, replace_durably

_META_KEY = "ecgscale"


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` (moved to CPU, contiguous) and JSON `meta` to safetensors, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(cpu, str(tmp), metadata={_META_KEY: json.dumps(meta, allow_nan=True)})
    replace_durably(tmp, path)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on CPU) and JSON metadata of a file written by `save_tensors`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = json.loads((fh.metadata() or {}).get(_META_KEY, "{}"))
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (OSError, SafetensorError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    return tensors, meta


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`{prefix.key: tensor}`."""
    return {f"{prefix}.{key}": value for key, value in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries under `prefix.`, with the prefix removed."""
    head = f"{prefix}."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as `{"<param>.<name>": tensor}` plus a JSON-ready dict of its param
    groups (and of any non-tensor state)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value
            else:
                extra.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "extra": extra}


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict
) -> None:
    """Restore `optimizer` from `optimizer_tensors` output."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in groups["extra"].items():
        state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})
