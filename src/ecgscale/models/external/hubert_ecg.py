"""HuBERT-ECG (Coppola et al. 2024), a `transformers` HuBERT over the 12 leads laid end to end.

Sources: "HuBERT-ECG as a self-supervised foundation model for broad and scalable cardiac
applications" (medRxiv 10.1101/2024.11.14.24317328); code github.com/Edoar-do/HuBERT-ECG
(`hubert_ecg/modeling.py`, `modeling_classification.py`, `dataset.py`, `scripts/pretrain.py`,
the older `code/utils.py`); weights huggingface.co/Edoardo-BS/hubert-ecg-{small,base,large}.

Checkpoint layout (what users download, and what `save` writes): a Hugging Face folder with
`config.json` (`model_type` "hubert_ecg", a `HubertConfig` plus `ensemble_length` and
`vocab_sizes`) and `model.safetensors` (or `pytorch_model.bin`, read with weights_only=True).
`HuBERTECG` subclasses `transformers.HubertModel`, so its keys carry no prefix::

    feature_extractor.conv_layers.{i}.conv.weight  (+ .layer_norm.* on layer 0: group norm)
    feature_projection.{layer_norm,projection}.*   masked_spec_embed
    encoder.pos_conv_embed.conv.{bias,weight_g,weight_v}  (or parametrizations.weight.original0/1)
    encoder.layer_norm.*  encoder.layers.{i}.{attention.{q,k,v,out}_proj,layer_norm,
                                              feed_forward.{intermediate,output}_dense,
                                              final_layer_norm}.*
    final_proj.{k}.*  label_embedding.{k}.weight   pre-training heads, one per k-means codebook

The network here is assembled from the real `transformers.HubertModel` modules (optional
dependency: `pip install ecgscale[external]`; nothing is downloaded). Fine-tuned
`HuBERTECGForClassification` folders (keys under `hubert_ecg.` plus `classifier.*`) load too:
the backbone is kept, the classification head dropped. Legacy single-file `.pt` checkpoints
pickle a `HubertConfig` object and are refused; convert them with HuBERT-ECG's
`hubert-ecg-convert --input old.pt --output DIR --safe_serialization`.

Released sizes (`scripts/pretrain.py`, Hub config.json): small 512 hidden / 8 layers / 8 heads /
2048 FFN, base 768 / 12 / 12 / 3072, large 960 / 16 / 12 / 3840; a 5-layer feature encoder
(512 channels, kernels 10,3,3,2,2, strides 4,2,2,2,2: 64x), positional convolution 128 wide in
16 groups, post-LN transformer.

Input contract (`dataset.py`, `utils.ecg_preprocessing`): 12 leads I..V6 at 100 Hz, 5 s = 500
samples a lead, each lead min-max scaled to [-1, 1], the leads laid end to end into one
6000-sample sequence. The authors band-pass (0.05-47 Hz) and scale the 500 Hz record, crop
5 s, flatten, then decimate the flat sequence by 5; here the store is resampled per lead and
the network scales each lead of the 5 s window and flattens, so it reads mV.
Embedding: the time average of the last hidden states (`HuBERTECGForClassification` pools
that way before its head), `hidden_size` features.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.errors import ConfigError, DataError
from ecgscale.models.external import (
    Adapter,
    InputContract,
    load_safetensors,
    load_state,
    load_strict,
    register_adapter,
)
from ecgscale.models.external.weightnorm import weight_norm_names

# Hyper-parameters of the released checkpoints (config.json of each Hub folder).
ARCHITECTURE: dict[str, Any] = {
    "conv_dim": [512] * 5,
    "conv_kernel": [10, 3, 3, 2, 2],
    "conv_stride": [4, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_proj_layer_norm": True,
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "mask_time_prob": 0.33,
    "mask_time_length": 1,
    "ensemble_length": 1,
    "vocab_sizes": [100],
}
SIZES: dict[str, dict[str, int]] = {
    "small": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
              "intermediate_size": 2048, "classifier_proj_size": 256},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "classifier_proj_size": 256},
    "large": {"hidden_size": 960, "num_hidden_layers": 16, "num_attention_heads": 12,
              "intermediate_size": 3840, "classifier_proj_size": 512},
}  # fmt: skip

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_CLASSIFIER_PREFIX = "hubert_ecg."
_NOT_ARCHITECTURE = ("model_type", "architectures", "auto_map", "transformers_version")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            "hubert-ecg needs the transformers package: pip install ecgscale[external]"
        ) from exc
    return transformers


class HuBERTECGNetwork(nn.Module):
    """HuBERT-ECG's encoder: `(batch, 12, 500)` in mV at 100 Hz -> `(batch, hidden_size)`.

    The modules are those of a `transformers.HubertModel` under the names `HuBERTECG` gives them;
    the pre-training heads (`final_proj`, `label_embedding`) are kept for the checkpoint but not
    applied. SpecAugment masking is never applied (the forward pass skips it)."""

    def __init__(self, config: Any, vocab_sizes: Sequence[int]) -> None:
        super().__init__()
        hubert = _transformers().HubertModel(config)
        self.config = config
        self.feature_extractor = hubert.feature_extractor
        self.feature_projection = hubert.feature_projection
        self.encoder = hubert.encoder
        if hasattr(hubert, "masked_spec_embed"):
            self.masked_spec_embed = hubert.masked_spec_embed
        self.vocab_sizes = tuple(vocab_sizes)
        if self.vocab_sizes:
            width, proj = config.hidden_size, config.classifier_proj_size
            self.final_proj = nn.ModuleList(nn.Linear(width, proj) for _ in self.vocab_sizes)
            self.label_embedding = nn.ModuleList(nn.Embedding(v, proj) for v in self.vocab_sizes)
        self.embed_dim = int(config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        x = 2 * (x - low) / (high - low + 1e-8) - 1
        features = self.feature_extractor(x.flatten(1)).transpose(1, 2)
        hidden = self.encoder(self.feature_projection(features))[0]
        return hidden.mean(1)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise DataError(
            f"{folder}: no config.json; expected a Hugging Face HuBERT-ECG folder (config.json + "
            "model.safetensors or pytorch_model.bin; a legacy .pt converts with hubert-ecg-convert)"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON config ({exc})") from exc
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in ("hubert_ecg", "hubert"):
        raise DataError(f"{path}: model_type {kind!r}; expected 'hubert_ecg' (a HuBERT-ECG folder)")
    return config


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint at `path` (a folder or one of its weight files)."""
    if path.is_file():
        weights = path
    else:
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise DataError(f"{path}: no {' or '.join(WEIGHT_FILES)} beside config.json")
        weights = found[0]
    if weights.suffix == ".safetensors":
        return load_safetensors(weights)
    state = load_state(weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{weights}: expected a state dict of tensors")
    return state


@register_adapter
class HuBERTECG(Adapter):
    name = "hubert-ecg"
    contract = InputContract(fs=100.0, samples=500, leads=STANDARD_LEADS, units="mV (min-max)")
    description = "HuBERT-ECG small/base/large (Coppola et al. 2024; Edoardo-BS/hubert-ecg-*)"

    def build(self, config: dict[str, Any], vocab_sizes: Sequence[int]) -> HuBERTECGNetwork:
        """The network of a config.json dictionary, with one pre-training head per vocabulary."""
        fields = {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}
        config_class = _transformers().HubertConfig
        try:
            hubert_config = config_class(**fields)
        except Exception as exc:  # ValueError, TypeError, or huggingface_hub's validation error
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            raise DataError(f"HuBERT-ECG config.json: not a HubertConfig ({detail})") from exc
        return HuBERTECGNetwork(hubert_config, vocab_sizes)

    def load(self, path: Path) -> nn.Module:
        config = _read_config(path if path.is_dir() else path.parent)
        state = _weights(path)
        if any(k.startswith(_CLASSIFIER_PREFIX) for k in state):  # fine-tuned: backbone only
            n = len(_CLASSIFIER_PREFIX)
            state = {k[n:]: v for k, v in state.items() if k.startswith(_CLASSIFIER_PREFIX)}
        vocab: list[int] = []
        while (codebook := state.get(f"label_embedding.{len(vocab)}.weight")) is not None:
            vocab.append(int(codebook.shape[0]))
        network = self.build(config, vocab)
        own = network.state_dict()
        parametrized = any(".parametrizations." in k for k in own)
        return load_strict(network, weight_norm_names(state, parametrized), path).eval()

    def save(self, network: nn.Module, path: Path) -> None:
        if not isinstance(network, HuBERTECGNetwork):
            raise ConfigError(f"hubert-ecg saves a HuBERTECGNetwork, not {type(network).__name__}")
        path.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in network.config.to_dict().items() if k not in _NOT_ARCHITECTURE}
        vocab = list(network.vocab_sizes)
        config |= {"model_type": "hubert_ecg", "architectures": ["HuBERTECG"]}
        config |= {"ensemble_length": len(vocab), "vocab_sizes": vocab} if vocab else {}
        (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(weight_norm_names(state, parametrized=False), str(path / WEIGHT_FILES[0]),
                  metadata={"format": "pt"})  # fmt: skip

    def random(self, seed: int = 0, **config: Any) -> nn.Module:
        """A random network; `size` ("small", "base", "large") picks the released shape and any
        other keyword overrides a config.json field (e.g. `hidden_size=32` for tests)."""
        size = config.pop("size", "small")
        if size not in SIZES:
            raise ConfigError(f"hubert-ecg size {size!r}; expected one of {', '.join(SIZES)}")
        fields = {**ARCHITECTURE, **SIZES[size], **config}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build(fields, fields["vocab_sizes"]).eval()
