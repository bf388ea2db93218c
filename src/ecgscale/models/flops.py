"""Size and compute accounting: parameter counts, FLOPs per record, ladders solved for a target N.

FLOP convention (used everywhere in ecgscale):
    FLOPs are measured with `torch.utils.flop_counter.FlopCounterMode`, which counts matrix
    multiplications, convolutions and attention at **2 FLOPs per multiply-accumulate** and ignores
    element-wise work (biases, normalisation, activations, pooling, residual additions, softmax);
    for the CNNs and transformers here that work is a few per cent of the total. Each gradient of a
    convolution costs what its forward product costs (torch's formula multiplies the weight
    gradient of grouped convolutions by the number of groups; corrected here). Attention counts
    its two products forward and four backward on every device (torch misses the CPU kernel and
    adds the fused GPU kernels' recomputation of the scores; both are corrected here), so a count
    does not depend on the device; heads zero-padded for a faster kernel count at their true size
    (the size whose 1/sqrt the attention's `scale` is).

    * forward FLOPs per record: one forward pass of the encoder on one record `(1, leads, samples)`;
    * training FLOPs per record: that forward pass plus the backward pass (gradients of every
      parameter and of every activation, not of the input), i.e. about 3x forward; the optimiser
      step is not counted.

Counting works on the `meta` device, so that a 200M-parameter model is counted without memory or
compute. N (the parameter count of every scaling fit) is the encoder's; heads are counted apart.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_flop_count,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder, count_parameters
from ecgscale.models.registry import LadderPoint, create_model, get_spec, ladder

FLOP_CONVENTION = (
    "FlopCounterMode: matmul/conv/attention only, 2 FLOPs per multiply-accumulate; "
    "train = forward + backward (no optimiser step); per record = batch of one"
)

# Default ladder: 9 targets from 20K to 200M encoder parameters, a factor sqrt(10) apart.
LADDER_MIN_PARAMS = 20_000
LADDER_MAX_PARAMS = 200_000_000
LADDER_POINTS = 9


Shape = Sequence[int]


def _true_heads(scale: float | None, *shapes: Shape) -> list[Shape]:
    """`shapes` `(batch, heads, tokens, head_size)` with the head size that a passed `scale` of
    1/sqrt(size) names when it is smaller: zero-padded heads (`beat_transformer.attention`) count
    at their true size."""
    size = shapes[0][-1]
    if scale:
        size = min(size, max(1, round(scale**-2)))
    return [(*shape[:-1], size) for shape in shapes]


def _sdpa_forward(query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(*_true_heads(kwargs.get("scale"), query, key, value))


def _sdpa_backward(
    grad: Shape, query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any
) -> int:
    """The four products of attention's backward; torch adds the fused kernels' recomputation of
    the scores (a fifth), which the unfused computation on other devices does not do."""
    grad, query, key, value = _true_heads(kwargs.get("scale"), grad, query, key, value)
    batch, heads, s_q, dim = query
    recompute = 2 * batch * heads * s_q * key[2] * dim
    return sdpa_backward_flop_count(grad, query, key, value) - recompute


def _conv_backward(
    grad_out: Shape,
    x: Shape,
    weight: Shape,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    output_mask: Sequence[bool],
    **kwargs: Any,
) -> int:
    """Each requested gradient (input, weight) costs one forward-sized product; torch's formula
    multiplies the weight gradient of a grouped convolution by the number of groups."""
    forward = conv_flop_count(x, weight, grad_out, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _custom_flop_mapping() -> dict[Any, Callable[..., int]]:
    """Corrections to torch's formulas: grouped convolutions' backward (`_conv_backward`), and
    attention counted the same on every device (torch does not count the CPU kernel, and counts a
    recomputation in the fused backward kernels that the unfused meta/CPU path lacks)."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {aten.convolution_backward: _conv_backward}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_forward),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_backward),
        ("_scaled_dot_product_flash_attention_backward", _sdpa_backward),
        ("_scaled_dot_product_efficient_attention_backward", _sdpa_backward),
        ("_scaled_dot_product_cudnn_attention_backward", _sdpa_backward),
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    return mapping


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def example_input(model: nn.Module, leads: int, length: int) -> torch.Tensor:
    """One record `(1, leads, length)` on the model's device for counting FLOPs.

    Zeros, unless the model defines `example_input(leads, length, device) -> Tensor`: models whose
    compute depends on the signal (beat tokens) provide a representative record that way.
    """
    device = _device_of(model)
    custom = getattr(model, "example_input", None)
    if callable(custom):
        return custom(leads, length, device)
    return torch.zeros(1, leads, length, device=device)


def count_flops(model: nn.Module, x: torch.Tensor, *, train: bool = False) -> int:
    """FLOPs of one forward pass of `model` on `x` (and of its backward when `train`).

    The model is put in eval mode while counting (FLOPs are the same; running statistics stay
    untouched) and restored afterwards; gradients are returned by autograd, not accumulated into
    `.grad`. The total is for the whole batch `x`.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping()) as counter:
            if train:
                params = [p for p in model.parameters() if p.requires_grad]
                torch.autograd.grad(model(x).float().sum(), params, allow_unused=True)
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def forward_flops(model: nn.Module, leads: int, length: int) -> int:
    """Forward FLOPs per record of shape `(leads, length)` (see the module's convention)."""
    return count_flops(model, example_input(model, leads, length))


def train_flops(model: nn.Module, leads: int, length: int) -> int:
    """Forward + backward FLOPs per record of shape `(leads, length)`."""
    return count_flops(model, example_input(model, leads, length), train=True)


def build_on_meta(factory: Callable[..., nn.Module], config: Mapping[str, Any]) -> nn.Module:
    """Build `factory(**config)` on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"):
        return factory(**config)


def meta_param_count(factory: Callable[..., nn.Module], config: Mapping[str, Any]) -> int:
    """Trainable parameters of `factory(**config)`, counted without allocating them."""
    return count_parameters(build_on_meta(factory, config))


@dataclass(frozen=True)
class ModelSize:
    """Size and compute of one encoder at one input shape.

    `params` is N (encoder only); `head_params` is the linear classification head for
    `num_classes` outputs (0 when `num_classes` is 0); FLOPs are per record (module docstring).
    """

    name: str
    params: int
    head_params: int
    embed_dim: int
    forward_flops: int
    train_flops: int
    leads: int
    length: int
    fs: float


def _accepts(factory: Callable[..., Any], argument: str) -> bool:
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def model_size(
    name: str,
    config: Mapping[str, Any] | None = None,
    *,
    fs: float | None = None,
    length: int | None = None,
    leads: int = 12,
    num_classes: int = 0,
    device: str | None = None,
) -> ModelSize:
    """Build model `name` with `config` and measure its `ModelSize` at `(leads, length)`.

    `fs` and `length` default to the family's registered input; `fs` is passed to factories that
    take an `fs` argument (tokenizers need it). `device` defaults to `meta` for waveform models
    (nothing is allocated, so 200M-parameter models cost nothing) and to `cpu` for the others,
    whose forward pass may depend on the signal's values.
    """
    spec = get_spec(name)
    fs = spec.default_fs if fs is None else fs
    length = spec.default_length if length is None else length
    if length < 1 or fs <= 0:
        raise ConfigError(f"model {name!r}: expected fs > 0 and length >= 1, got {fs} and {length}")
    config = dict(config or {})
    if _accepts(spec.factory, "fs"):
        config.setdefault("fs", fs)
    if device is None:
        device = "meta" if spec.input_kind == "waveform" else "cpu"
    with torch.device(device):
        encoder = create_model(name, **config)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"model {name!r} built a {type(encoder).__name__}, not an Encoder")
    head = 0 if num_classes <= 0 else encoder.embed_dim * num_classes + num_classes
    return ModelSize(
        name=name,
        params=count_parameters(encoder),
        head_params=head,
        embed_dim=int(encoder.embed_dim),
        forward_flops=forward_flops(encoder, leads, length),
        train_flops=train_flops(encoder, leads, length),
        leads=leads,
        length=length,
        fs=float(fs),
    )


def ladder_sizes(
    name: str,
    *,
    fs: float | None = None,
    length: int | None = None,
    leads: int = 12,
    num_classes: int = 0,
) -> list[tuple[LadderPoint, ModelSize]]:
    """`ModelSize` of every point of family `name`'s ladder at one input shape."""
    return [
        (
            point,
            model_size(
                name, point.config, fs=fs, length=length, leads=leads, num_classes=num_classes
            ),
        )
        for point in ladder(name)
    ]


# ---------------------------------------------------------------------------------------------
# Ladders: targets, depth rule, width solved for the target.


def ladder_targets(
    lo: int = LADDER_MIN_PARAMS, hi: int = LADDER_MAX_PARAMS, n: int = LADDER_POINTS
) -> list[int]:
    """`n` targets from `lo` to `hi`, evenly spaced in log N, rounded to two significant digits."""
    raw = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    return [int(round(t, 1 - math.floor(math.log10(t)))) for t in raw]


def cube_root_depth(target: int, ref_params: float, ref_depth: float, lo: int, hi: int) -> int:
    """Depth that grows as N^(1/3) from a reference architecture, clipped to `[lo, hi]`.

    With width also growing as N^(1/3), N ~ depth x width^2 holds along the ladder: the rule scales
    depth and width together, anchored at the family's published configuration.
    """
    depth = round(ref_depth * (target / ref_params) ** (1.0 / 3.0))
    return int(min(hi, max(lo, depth)))


def solve_width(
    count: Callable[[float], int], target: int, lo: float, hi: float, *, integer: bool = False
) -> float:
    """The width `x` in `[lo, hi]` whose `count(x)` is nearest to `target` in log ratio.

    `count` must be non-decreasing in `x` (a step function, since widths are rounded to integers);
    with `integer` only whole `x` are tried. The bracket `count(a) < target <= count(b)` is narrowed
    by the Illinois variant of regula falsi in log-log space (counts are nearly power laws of the
    width) until its ends differ by less than 0.1 % in width or in count (or are adjacent
    integers); the end nearer to the target is returned.
    """
    a, b = (math.ceil(lo), math.floor(hi)) if integer else (lo, hi)
    fa, fb = (math.log(max(count(v), 1) / target) for v in (a, b))
    if fa >= 0:
        return a
    if fb < 0:
        raise ConfigError(f"no width in [{lo}, {hi}] reaches {target} parameters")
    wa, wb, last = fa, fb, 0  # weighted ends for the interpolation; last: which end moved
    for _ in range(200):
        if fb - fa < 1e-3 or ((b - a <= 1) if integer else (math.log(b / a) < 1e-3)):
            break
        la, lb = math.log(a), math.log(b)
        x = math.exp((la * wb - lb * wa) / (wb - wa))
        x = min(max(round(x), a + 1), b - 1) if integer else min(max(x, a * 1.0001), b / 1.0001)
        fx = math.log(max(count(x), 1) / target)
        if fx >= 0:
            b, fb, wb = x, fx, fx
            wa = wa / 2 if last == 1 else wa
            last = 1
        else:
            a, fa, wa = x, fx, fx
            wb = wb / 2 if last == -1 else wb
            last = -1
    return a if abs(fa) < abs(fb) else b


def width_ladder(
    family: str,
    params_of: Callable[[dict[str, Any]], int],
    config_of: Callable[[int, float], dict[str, Any]],
    *,
    bounds: tuple[float, float],
    integer: bool = False,
    targets: Sequence[int] | None = None,
) -> list[LadderPoint]:
    """One `LadderPoint` per target: `config_of(target, x)`, the width `x` solved for the target.

    `config_of` fixes the depth for the target (the family's rule) and maps the continuous width
    `x` to a configuration; `params_of(config)` is its encoder parameter count (for instance
    `functools.partial(meta_param_count, factory)`, or an exact analytic count); with `integer`
    the width is a whole number.
    """
    points = []
    for target in targets or ladder_targets():

        @functools.cache
        def count(x: float, target: int = target) -> int:
            return params_of(config_of(target, x))

        x = solve_width(count, target, *bounds, integer=integer)
        x = x if integer else _tidy(x, count)
        points.append(LadderPoint(f"{family}-{format_count(target)}", target, config_of(target, x)))
    return points


LadderFn = Callable[[tuple[int, ...] | None], list[LadderPoint]]


def cached_ladder(fn: LadderFn) -> LadderFn:
    """Solve a ladder (the default targets, or the given `targets`) once per process; every call
    gets its own copies of the configs."""
    solved = functools.cache(fn)

    @functools.wraps(fn)
    def copy(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
        return [replace(point, config=dict(point.config)) for point in solved(targets)]

    return copy


def parse_count(text: str) -> int | None:
    """'20K' -> 20000, '6.3M' -> 6300000, '1500' -> 1500 (the inverse of `format_count`); None
    when `text` is not a count."""
    scales = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
    text = text.strip()
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    try:
        value = float(text[: len(text) - len(unit)])
    except ValueError:
        return None
    if unit not in scales or not math.isfinite(value) or value <= 0:
        return None
    return round(value * scales[unit])


def _tidy(x: float, count: Callable[[float], int]) -> float:
    """`x` rounded to the fewest significant digits (2 or more) that keep `count(x)` unchanged."""
    exact = count(x)
    for digits in range(2, 12):
        rounded = float(f"{x:.{digits}g}")
        if count(rounded) == exact:
            return rounded
    return x


def format_count(n: float) -> str:
    """20000 -> '20K', 6300000 -> '6.3M', 2e8 -> '200M' (three significant digits at most)."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"
