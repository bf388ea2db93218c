"""Key names of weight-normalised convolutions across torch versions (shared by the adapters).

`torch.nn.utils.weight_norm` stores a weight-normed parameter as `<name>_g` / `<name>_v`; the
newer `torch.nn.utils.parametrizations.weight_norm` stores the same tensors as
`parametrizations.<name>.original0` / `original1`. Checkpoints of fairseq (wav2vec 2.0, HuBERT)
and of transformers models hold either, depending on the torch that wrote them; the tensors are
identical, only their names differ. This module registers no adapter.
"""

from __future__ import annotations

import torch

_LEGACY_TO_PARAMETRIZED = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


def weight_norm_names(
    state: dict[str, torch.Tensor], parametrized: bool
) -> dict[str, torch.Tensor]:
    """`state` with every weight-norm key spelled the parametrized way (`parametrized=True`) or
    the legacy `weight_g` / `weight_v` way; all other keys unchanged."""
    pairs = _LEGACY_TO_PARAMETRIZED.items()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for legacy, new in pairs:
            old, wanted = (legacy, new) if parametrized else (new, legacy)
            if key.endswith("." + old):
                key = key[: -len(old)] + wanted
                break
        out[key] = value
    return out
