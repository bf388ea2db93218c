"""Building blocks shared by the CNN families: input checks and conv-BN-activation layers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ecgscale.errors import ConfigError


def check_waveform(x: torch.Tensor, leads: int, min_length: int, model: str) -> None:
    """Raise `ConfigError` unless `x` is `(batch, leads, samples >= min_length)`."""
    if x.ndim != 3 or x.shape[1] != leads or x.shape[2] < min_length:
        raise ConfigError(
            f"model {model!r}: expected input (batch, {leads}, samples >= {min_length}), "
            f"got {tuple(x.shape)}"
        )


def check_odd_kernel(kernel_size: int, what: str) -> None:
    """Odd kernels keep 'same' padding symmetric, so strided paths and skips agree in length."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{what}: expected an odd kernel size >= 1, got {kernel_size}")


def check_positive(value: float, what: str) -> None:
    if not value > 0:
        raise ConfigError(f"{what}: expected a positive value, got {value}")


class ConvBNAct(nn.Sequential):
    """Conv1d (no bias, 'same' padding for odd kernels) -> BatchNorm1d -> optional ReLU.

    With stride s the output has ceil(samples / s) samples.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv1d(
                c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm1d(c_out),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def kaiming_init_(model: nn.Module, mode: str = "fan_in") -> None:
    """He-normal initialisation of every conv weight (skipped on the meta device: shapes only)."""
    for module in model.modules():
        if isinstance(module, nn.Conv1d) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")


def same_padding(length: int, kernel_size: int, stride: int = 1) -> tuple[int, int]:
    """(left, right) padding of TensorFlow's 'SAME' rule, for any kernel and stride (torch's
    `padding="same"` refuses strides): the output has ceil(length / stride) samples, and an odd
    total puts the extra sample on the right (kernel 16, stride 1: 7 left, 8 right)."""
    total = max(0, (math.ceil(length / stride) - 1) * stride + kernel_size - length)
    return total // 2, total - total // 2
