"""ECG-FM (McKeen et al. 2024), the fairseq-signals wav2vec 2.0 encoder of its released checkpoint.

Sources: "ECG-FM: An Open Electrocardiogram Foundation Model" (arXiv 2408.05178); code
github.com/bowang-lab/ECG-FM (README, `notebooks/infer_quickstart.ipynb`, `scripts/embs.py`)
and github.com/Jwoo5/fairseq-signals (`models/wav2vec2/wav2vec2.py`, `wav2vec2_cmsc.py`,
`models/conv_transformer.py`, `modules/conv_feature_extraction.py`, `transformer_encoder.py`,
`transformer_encoder_layer.py`, `gumbel_vector_quantizer.py`, `utils/checkpoint_utils.py`);
weights huggingface.co/wanglab/ecg-fm (`mimic_iv_ecg_physionet_pretrained.pt`).

Checkpoint layout (what users download, and what `save` writes): a fairseq `torch.save` dict
with `model` (the state dict) and `cfg` (the training configuration; `cfg["model"]` holds the
architecture: `conv_feature_layers`, `in_d`, `encoder_*`, `conv_pos*`, `quantize_targets`,
`final_dim`, `latent_*`); optimizer and trainer state, if present, are ignored. Keys::

    feature_extractor.conv_layers.{i}.0.weight      conv (kernel, stride from conv_feature_layers)
    feature_extractor.conv_layers.0.2.{weight,bias} group norm of the first conv ("default" mode;
                                                     "layer_norm" mode: .2.1.* on every conv)
    layer_norm.*  post_extract_proj.*  mask_emb      conv features -> encoder width
    encoder.pos_conv.0.{bias,weight_g,weight_v}     positional conv (weight-normed; newer
                                                     fairseq-signals: conv_pos.pos_conv.0.*)
    encoder.layers.{i}.{self_attn.{q,k,v,out}_proj,self_attn_layer_norm,fc1,fc2,final_layer_norm}.*
    encoder.layer_norm.*
    quantizer.{vars,weight_proj.*}  project_q.*  final_proj.*     pre-training heads (kept, unused)

Both positions of the positional conv and both spellings of weight norm (`weight_g`/`weight_v`,
`parametrizations.weight.original0/1`) load; `save` writes the position it read, legacy spelling.
The released model is BERT-Base sized: 4 convs (256 channels, kernel 2, stride 2: 16x), 12 layers
of width 768, 12 heads, FFN 3072, a 128-wide positional conv in 16 groups, post-LN; 90,883,072
parameters with the pre-training heads (README).

Checkpoints are read with `torch.load(weights_only=True)`; besides tensors and plain Python
data only `argparse.Namespace` (pre-hydra fairseq `args`) is allowed. Fairseq keeps `cfg` as a
plain dict, which loads; a file whose `cfg` (or other state) pickles other objects (an omegaconf
DictConfig, numpy arrays, a defaultdict) is refused with a one-line error that names them and
gives this conversion, to be run once where fairseq-signals and omegaconf are installed::

    python -c "import torch; from omegaconf import OmegaConf as O; c = torch.load('IN.pt', \
map_location='cpu', weights_only=False); m = c['cfg']['model']; torch.save({'model': \
c['model'], 'cfg': {'model': O.to_container(m) if O.is_config(m) else dict(m)}}, 'OUT.pt')"

Input contract (`infer_quickstart.ipynb`): 12 leads I..V6 at 500 Hz, 5 s = 2500 samples, each
lead standardised (zero mean, unit variance; constant leads zero); the network standardises
itself, so it reads mV. Embedding (`scripts/embs.py`, `ecg_transformer_classifier.py`): the
time average of the encoder output, 768 features.
"""

from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.errors import ConfigError, DataError
from ecgscale.models.external import (
    Adapter,
    InputContract,
    load_state,
    load_strict,
    register_adapter,
)
from ecgscale.models.external.weightnorm import weight_norm_names

# fairseq-signals' Wav2Vec2Config defaults, overridden by what a checkpoint's cfg["model"] holds.
DEFAULTS: dict[str, Any] = {
    "_name": "wav2vec2_cmsc",
    "extractor_mode": "default",
    "conv_feature_layers": "[(256, 2, 2)] * 4",
    "in_d": 12,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "layer_norm_first": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "final_dim": 256,
    "quantize_targets": True,
    "quantize_input": False,
    "target_glu": False,
    "latent_vars": 320,
    "latent_groups": 2,
    "latent_dim": 0,
}
# The plain attribute bag of pre-hydra fairseq checkpoints (`args`); a weights-only load cannot
# rebuild defaultdict or deque at all (it only fills dicts and lists), so those need converting.
PLAIN_CONTAINERS = [argparse.Namespace]
CONVERT = (
    'python -c "import torch; from omegaconf import OmegaConf as O; '
    "c = torch.load('IN.pt', map_location='cpu', weights_only=False); m = c['cfg']['model']; "
    "torch.save({'model': c['model'], 'cfg': {'model': O.to_container(m) if O.is_config(m) "
    "else dict(m)}}, 'OUT.pt')\""
)


def conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` string (a Python list expression such as
    "[(256, 2, 2)] * 4" or "[(512, 10, 5)] + [(512, 3, 2)] * 4") as (dim, kernel, stride)
    triples, evaluated without `eval`: only lists, tuples, integers, `+` and `*`."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        layers = value(ast.parse(spec, mode="eval").body)
        if not layers or not all(len(t) == 3 and min(t) > 0 for t in layers):
            raise ValueError(spec)
        return [tuple(int(v) for v in t) for t in layers]
    except (SyntaxError, ValueError, TypeError) as exc:
        raise DataError(
            f"ECG-FM conv_feature_layers {spec!r}: expected a list of (dim, kernel, stride)"
        ) from exc


class Channels(nn.LayerNorm):
    """Layer norm over the channels of a `(batch, channels, time)` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class FeatureExtractor(nn.Module):
    """`conv_layers.{i}` = (conv, dropout, [norm], GELU): `(batch, in_d, samples)` ->
    `(batch, dim, frames)`. "default" mode: a group norm (one group per channel) after the
    first conv only; "layer_norm" mode: a channel layer norm after every conv (at `.2.1`)."""

    def __init__(self, layers: list[tuple[int, int, int]], in_d: int, mode: str, bias: bool):
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise DataError(f"ECG-FM extractor_mode {mode!r}: expected 'default' or 'layer_norm'")
        self.conv_layers = nn.ModuleList()
        for i, (dim, kernel, stride) in enumerate(layers):
            conv = nn.Conv1d(in_d, dim, kernel, stride, bias=bias)
            block: list[nn.Module] = [conv, nn.Dropout(0)]
            if mode == "layer_norm":  # fairseq: Sequential(TransposeLast, LayerNorm, TransposeLast)
                block.append(nn.Sequential(nn.Identity(), Channels(dim)))
            elif i == 0:
                block.append(nn.GroupNorm(dim, dim))
            self.conv_layers.append(nn.Sequential(*block, nn.GELU()))
            in_d = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv(nn.Module):
    """Grouped conv whose weight is `weight_g * weight_v / |weight_v|`, the norm taken per
    kernel tap (dim 2, as fairseq's weight_norm(dim=2)); 'same' length output."""

    def __init__(self, width: int, kernel: int, groups: int) -> None:
        super().__init__()
        std = math.sqrt(4 / (kernel * width))
        self.weight_v = nn.Parameter(torch.randn(width, width // groups, kernel) * std)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(width))
        self.groups, self.kernel = groups, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        y = F.conv1d(x, weight, self.bias, padding=self.kernel // 2, groups=self.groups)
        return F.gelu(y[..., : x.shape[-1]])  # an even kernel makes one sample too many


class PositionalConv(nn.Module):
    """`pos_conv.0` is the weight-normed conv (fairseq: Sequential(conv, SamePad, GELU))."""

    def __init__(self, width: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.pos_conv = nn.ModuleList([WeightNormConv(width, kernel, groups)])


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # fmt: skip
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """fairseq's TransformerSentenceEncoderLayer: attention and a GELU FFN, each residual, the
    layer norms after (post-LN) or before (`layer_norm_first`) them."""

    def __init__(self, width: int, ffn: int, heads: int, norm_first: bool) -> None:
        super().__init__()
        self.self_attn = SelfAttention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, ffn), nn.Linear(ffn, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x))
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any], pos_conv: PositionalConv | None) -> None:
        super().__init__()
        width = int(cfg["encoder_embed_dim"])
        if pos_conv is not None:  # the older layout keeps the positional conv here
            self.pos_conv = pos_conv.pos_conv
        self.layers = nn.ModuleList(
            EncoderLayer(width, int(cfg["encoder_ffn_embed_dim"]),
                         int(cfg["encoder_attention_heads"]), bool(cfg["layer_norm_first"]))
            for _ in range(int(cfg["encoder_layers"]))
        )  # fmt: skip
        self.layer_norm = nn.LayerNorm(width)
        self.norm_first = bool(cfg["layer_norm_first"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.norm_first:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.norm_first else x


class Quantizer(nn.Module):
    """Gumbel quantizer parameters (`vars`, `weight_proj`), kept for the checkpoint only."""

    def __init__(self, dim: int, num_vars: int, groups: int, vq_dim: int) -> None:
        super().__init__()
        if vq_dim % groups:
            raise DataError(f"ECG-FM latent dim {vq_dim} is not divisible by {groups} groups")
        self.vars = nn.Parameter(torch.rand(1, groups * num_vars, vq_dim // groups))
        self.weight_proj = nn.Linear(dim, groups * num_vars)


class ECGFMNetwork(nn.Module):
    """ECG-FM's encoder: `(batch, 12, 2500)` in mV at 500 Hz -> `(batch, encoder_embed_dim)`.

    `cfg` is the checkpoint's whole (plain) cfg, written back by `save`; `pos_in_encoder` and
    `mask_emb` record the layout of the checkpoint it was built for. Masking, quantizer and
    projections (pre-training only) are never applied."""

    def __init__(self, cfg: dict[str, Any], pos_in_encoder: bool = True, mask_emb: bool = True):
        super().__init__()
        model = {**DEFAULTS, **cfg.get("model", {})}
        if model["quantize_input"] or model["target_glu"]:
            raise DataError("ECG-FM cfg: quantize_input / target_glu checkpoints are not supported")
        layers = conv_layers(str(model["conv_feature_layers"]))
        embed, width = layers[-1][0], int(model["encoder_embed_dim"])
        self.cfg, self.pos_in_encoder = cfg, pos_in_encoder
        self.feature_extractor = FeatureExtractor(
            layers, int(model["in_d"]), str(model["extractor_mode"]), bool(model["conv_bias"])
        )
        self.layer_norm = nn.LayerNorm(embed)
        self.post_extract_proj = nn.Linear(embed, width) if embed != width else None
        if mask_emb:
            self.mask_emb = nn.Parameter(torch.rand(width))
        pos = PositionalConv(width, int(model["conv_pos"]), int(model["conv_pos_groups"]))
        if not pos_in_encoder:
            self.conv_pos = pos
        self.encoder = Encoder(model, pos if pos_in_encoder else None)
        final = int(model["final_dim"]) or width
        if model["quantize_targets"]:
            vq_dim = int(model["latent_dim"]) or final
            groups = int(model["latent_groups"])
            self.quantizer = Quantizer(embed, int(model["latent_vars"]), groups, vq_dim)
            self.project_q = nn.Linear(vq_dim, final)
        else:
            self.project_q = nn.Linear(embed, final)
        self.final_proj = nn.Linear(width, final)
        self.embed_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True, correction=0)
        x = (x - mean) / (std + 1e-8)
        h = self.layer_norm(self.feature_extractor(x).transpose(1, 2))
        if self.post_extract_proj is not None:
            h = self.post_extract_proj(h)
        pos = self.encoder.pos_conv if self.pos_in_encoder else self.conv_pos.pos_conv
        h = h + pos[0](h.transpose(1, 2)).transpose(1, 2)
        return self.encoder(h).mean(1)


def _checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and plain cfg of a fairseq checkpoint, read with weights_only=True."""
    try:
        with torch.serialization.safe_globals(PLAIN_CONTAINERS):
            obj = load_state(path)
    except DataError as exc:
        refused = "weights_only" in str(exc) and path.is_file() and _pickled_objects(path)
        if not refused:
            raise
        raise DataError(
            f"{path}: the checkpoint pickles {refused}, which a weights-only load refuses; "
            f"convert it once where fairseq-signals is installed: {CONVERT}"
        ) from exc
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise DataError(f"{path}: expected a fairseq-signals checkpoint (a dict with 'model')")
    cfg = obj.get("cfg")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise DataError(f"{path}: no cfg['model'] (the architecture); expected ECG-FM's .pt file")
    name = str(cfg["model"].get("_name", DEFAULTS["_name"]))
    if not name.startswith("wav2vec2"):
        raise DataError(
            f"{path}: model {name!r}; expected a pre-trained wav2vec2 checkpoint "
            "(e.g. mimic_iv_ecg_physionet_pretrained.pt)"
        )
    return model, cfg


def _pickled_objects(path: Path) -> str:
    """The globals a weights-only load refuses in `path` (beyond the plain containers it allows),
    sorted and comma-separated ("" if unknown)."""
    try:
        with torch.serialization.safe_globals(PLAIN_CONTAINERS):
            refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        return ", ".join(sorted(refused)[:3])
    except (OSError, RuntimeError, ValueError):
        return ""


@register_adapter
class ECGFM(Adapter):
    name = "ecg-fm"
    contract = InputContract(fs=500.0, samples=2500, leads=STANDARD_LEADS, units="mV (z-scored)")
    description = "ECG-FM wav2vec 2.0 + CMSC + RLM (McKeen et al. 2024; wanglab/ecg-fm)"

    def load(self, path: Path) -> nn.Module:
        state, cfg = _checkpoint(path)
        state = weight_norm_names(state, parametrized=False)
        pos_in_encoder = not any(k.startswith("conv_pos.") for k in state)
        network = ECGFMNetwork(cfg, pos_in_encoder, mask_emb="mask_emb" in state)
        return load_strict(network, state, path).eval()

    def save(self, network: nn.Module, path: Path) -> None:
        if not isinstance(network, ECGFMNetwork):
            raise ConfigError(f"ecg-fm saves an ECGFMNetwork, not {type(network).__name__}")
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        torch.save({"model": state, "cfg": network.cfg}, path)

    def random(self, seed: int = 0, **config: Any) -> nn.Module:
        """A random network; keywords override cfg["model"] fields of the released model (e.g.
        `encoder_layers=2, encoder_embed_dim=32` for tests)."""
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"ecg-fm: unknown config {unknown}; expected {sorted(DEFAULTS)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ECGFMNetwork({"model": {**DEFAULTS, **config}}).eval()
