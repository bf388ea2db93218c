"""ECGFounder (Li et al. 2025), the Net1D encoder of its released `.pth` checkpoints.

Sources: "An Electrocardiogram Foundation Model Built on over 10 Million Recordings with External
Evaluation across Multiple Domains" (arXiv 2410.04133); code github.com/PKUDigitalHealth/ECGFounder
(`net1d.py`, `finetune_model.py`, `dataset.py`, `util.py`); weights huggingface.co/
PKUDigitalHealth/ECGFounder (`12_lead_ECGFounder.pth`, `1_lead_ECGFounder.pth`).

Checkpoint layout (what users download, and what `save` writes): a `torch.save` dict whose
`state_dict` holds Net1D's tensors (`util.save_checkpoint` also stores `epoch`, `step`,
`optimizer`, `scheduler` and `val_auroc`, a numpy float; those are read with the numpy scalar
types allow-listed - still no arbitrary objects - and ignored). A bare state dict and a
`module.` (DataParallel) prefix are accepted too. Keys, as `net1d.py` names them::

    first_conv.conv.{weight,bias}  first_bn.*            stem conv (kernel 16, stride 2)
    stage_list.{s}.block_list.{b}.{bn1,bn2,bn3}.*        batch norms (kept, unused: use_bn=False)
    stage_list.{s}.block_list.{b}.conv{1,2,3}.conv.*     1x1 -> grouped k16 -> 1x1 convs
    stage_list.{s}.block_list.{b}.se_fc{1,2}.*           squeeze-and-excitation
    dense.{weight,bias}                                  150 labels (any count loads)

Released hyper-parameters (`finetune_model.ft_12lead_ECGFounder`): base_filters 64, ratio 1,
filter_list 64,160,160,400,400,1024,1024, m_blocks_list 2,2,2,3,3,4,4, kernel_size 16, stride 2,
groups_width 16, use_bn False, use_do False, n_classes 150; the 1-lead model is the same with
one input channel. Input contract (`dataset.py`): 500 Hz, 10 s = 5000 samples, leads I, II, III,
aVR, aVL, aVF, V1-V6 (the 1-lead model: lead I), each record z-scored over all its leads and
samples together, `(x - mean) / (std + 1e-8)`; the network applies that z-score itself, so it
reads mV (or any unit). Embedding: the time average of the last stage, the 1024 features that
feed `dense` (Net1D's `return_features` output).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.errors import DataError
from ecgscale.models.external import (
    Adapter,
    InputContract,
    load_state,
    load_strict,
    register_adapter,
)
from ecgscale.models.layers import same_padding

RELEASED = {
    "base_filters": 64,
    "filter_list": (64, 160, 160, 400, 400, 1024, 1024),
    "m_blocks_list": (2, 2, 2, 3, 3, 4, 4),
    "kernel_size": 16,
    "stride": 2,
    "groups_width": 16,
    "ratio": 1.0,
    "n_classes": 150,
}


class SameConv(nn.Module):
    """`nn.Conv1d` (kept as `.conv`, the checkpoint's key) with 'SAME' zero padding."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        return self.conv(F.pad(x, same_padding(x.shape[-1], k, s)))


class Block(nn.Module):
    """Pre-activation bottleneck: [BN] Swish 1x1 -> [BN] Swish grouped conv k (stride) ->
    [BN] Swish 1x1 -> squeeze-excitation gate, plus the identity (max-pooled over `stride`
    after zero padding on the right, channels zero-padded on both sides to the new width).
    The first block of the network skips its first pre-activation."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, groups_width: int,
        ratio: float, first: bool, use_bn: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.first, self.use_bn = first, use_bn
        mid, groups = int(c_out * ratio), c_out // groups_width
        self.bn1 = nn.BatchNorm1d(c_in)
        self.conv1 = SameConv(c_in, mid, 1)
        self.bn2 = nn.BatchNorm1d(mid)
        self.conv2 = SameConv(mid, mid, kernel_size, stride, groups)
        self.bn3 = nn.BatchNorm1d(mid)
        self.conv3 = SameConv(mid, c_out, 1)
        self.se_fc1 = nn.Linear(c_out, c_out // 2)
        self.se_fc2 = nn.Linear(c_out // 2, c_out)

    def _pre(self, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return F.silu(bn(x) if self.use_bn else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else self._pre(self.bn1, x))
        h = self.conv3(self._pre(self.bn3, self.conv2(self._pre(self.bn2, h))))
        gate = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(h.mean(-1)))))
        h = h * gate.unsqueeze(-1)
        identity = x
        if self.stride > 1:
            pad = self.stride - 1
            identity = F.max_pool1d(F.pad(x, (pad // 2, pad - pad // 2)), self.stride)
        if self.c_out != self.c_in:
            extra = self.c_out - self.c_in
            identity = F.pad(identity, (0, 0, extra // 2, extra - extra // 2))
        return h + identity


class Stage(nn.Module):
    """`block_list`: the first block downsamples by `stride` and changes the width."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    """ECGFounder's encoder: `(batch, in_channels, samples)` -> `(batch, filter_list[-1])`; the
    classifier `dense` is kept for the checkpoint but not applied."""

    def __init__(
        self,
        in_channels: int = 12,
        base_filters: int = 64,
        filter_list: Sequence[int] = RELEASED["filter_list"],
        m_blocks_list: Sequence[int] = RELEASED["m_blocks_list"],
        kernel_size: int = 16,
        stride: int = 2,
        groups_width: int = 16,
        ratio: float = 1.0,
        n_classes: int = 150,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        self.first_conv = SameConv(in_channels, base_filters, kernel_size, stride=2)
        self.first_bn = nn.BatchNorm1d(base_filters)
        self.use_bn = use_bn
        stages, c_in = [], base_filters
        for i, (c_out, m_blocks) in enumerate(zip(filter_list, m_blocks_list, strict=True)):
            blocks = []
            for b in range(m_blocks):
                first, width = i == 0 and b == 0, c_in if b == 0 else c_out
                blocks.append(
                    Block(width, c_out, kernel_size, stride if b == 0 else 1, groups_width,
                          ratio, first, use_bn)
                )  # fmt: skip
            stages.append(Stage(blocks))
            c_in = c_out
        self.stage_list = nn.ModuleList(stages)
        self.dense = nn.Linear(c_in, n_classes)
        self.embed_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1)
        std = flat.std(1, correction=0).view(-1, 1, 1)
        h = self.first_conv((x - mean) / (std + 1e-8))
        h = F.silu(self.first_bn(h) if self.use_bn else h)
        for stage in self.stage_list:
            h = stage(h)
        return h.mean(-1)


@contextlib.contextmanager
def _numpy_scalars() -> Iterator[None]:
    """Allow numpy scalars (ECGFounder's `val_auroc`) in a weights-only load: the scalar
    constructor and float/int/bool dtypes only, under numpy 1.x and 2.x module names."""
    scalar = np.float64(0).__reduce__()[0]
    dtypes = [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "?")]
    allowed = [np.dtype, *dtypes]
    allowed += [(scalar, f"numpy.{core}.multiarray.scalar") for core in ("core", "_core")]
    with torch.serialization.safe_globals(allowed):
        yield


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The Net1D tensors in a loaded checkpoint object (see the module docstring)."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected an ECGFounder checkpoint (a dict with a state_dict)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


_BLOCK = re.compile(r"stage_list\.(\d+)\.block_list\.(\d+)\.")


def _config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Net1D hyper-parameters that the tensor shapes fix (all but stride and use_bn, which
    stay as released), so fine-tuned and smaller Net1Ds load too; {} when the keys are not
    Net1D's (then `load_strict` names what is wrong)."""
    blocks: dict[int, int] = {}
    for key in state:
        if match := _BLOCK.match(key):
            stage, block = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    stages = range(len(blocks))
    try:
        first = state["first_conv.conv.weight"]
        filters = [state[f"stage_list.{s}.block_list.0.conv3.conv.weight"].shape[0] for s in stages]
        conv2 = state["stage_list.0.block_list.0.conv2.conv.weight"]  # (mid, mid / groups, k)
        return {
            "in_channels": first.shape[1],
            "base_filters": first.shape[0],
            "filter_list": filters,
            "m_blocks_list": [blocks[s] for s in stages],
            "kernel_size": conv2.shape[-1],
            "groups_width": filters[0] * conv2.shape[1] // conv2.shape[0],
            "ratio": conv2.shape[0] / filters[0],
            "n_classes": state["dense.weight"].shape[0],
        }
    except (KeyError, IndexError, ZeroDivisionError):
        return {}


@register_adapter
class ECGFounder(Adapter):
    name = "ecgfounder"
    contract = InputContract(fs=500.0, samples=5000, leads=STANDARD_LEADS, units="mV (z-scored)")
    description = "ECGFounder Net1D, 12 leads (Li et al. 2025; 12_lead_ECGFounder.pth)"

    def build(self, **config: Any) -> Net1D:
        return Net1D(in_channels=len(self.contract.leads), **{**RELEASED, **config})

    def load(self, path: Path) -> nn.Module:
        with _numpy_scalars():
            state = _state_dict(load_state(path), path)
        config = _config_from_state(state)
        leads = config.pop("in_channels", len(self.contract.leads))
        if leads != len(self.contract.leads):
            other = "ecgfounder-1lead" if leads == 1 else "ecgfounder"
            raise DataError(
                f"{path}: a {leads}-lead ECGFounder checkpoint; adapter {self.name!r} reads "
                f"{len(self.contract.leads)} (use {other}:PATH)"
            )
        return load_strict(self.build(**config), state, path).eval()

    def save(self, network: nn.Module, path: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        torch.save({"state_dict": state}, path)

    def random(self, seed: int = 0, **config: Any) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build(**config).eval()


@register_adapter
class ECGFounder1Lead(ECGFounder):
    name = "ecgfounder-1lead"
    contract = InputContract(fs=500.0, samples=5000, leads=("I",), units="mV (z-scored)")
    description = "ECGFounder Net1D, lead I (Li et al. 2025; 1_lead_ECGFounder.pth)"
