"""Beat-token Transformer in the style of HeartLang (Jin et al., ICLR 2025).

A record `(batch, 12, samples)` at 100 Hz becomes a sentence of heartbeat words
(`ecgscale.models.beats`: one 0.6 s window per beat and lead, lead by lead, at most 256 tokens).
Each token's embedding is

    Linear(word) + lead embedding + time-bin embedding + learned position (1..T),

a CLS token (with position 0) is put in front, and a pre-LayerNorm Transformer encoder (`depth`
blocks of multi-head self-attention and a GELU MLP of `mlp_ratio x width`, each on a LayerNormed
input and added back; a final LayerNorm) reads the sequence. Padding tokens are never attended to,
and a batch is encoded in groups of similar sentence length (`GROUP_RECORDS`), each trimmed to its
longest sentence, so that short sentences do not pay for the padding of long ones.
`forward_features` returns the CLS output `(batch, width)`; `forward_tokens` also returns every
token's output, and takes a `token_mask` plus a mask embedding (owned by the masked-beat objective,
so that N does not depend on the objective) that replaces the masked tokens' word embeddings.

The tokenizer has no parameters: N is the encoder's parameters only.

**Ladder** (9 points, 20K to 200M, a factor sqrt(10) apart): depth = round(2 (N / 20K)^(1/5)), at
least 2 (2 ... 13 blocks), and the width is solved for the target (so width grows about as
N^(2/5)): even below 128, a multiple of 16 below 512, a multiple of 64 above; heads = the largest
divisor of the width not above max(2, width // 64) (head size about 64, 2 heads for narrow models).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.beats import BeatTokens, TokenBatch, TokenizerConfig, tokenize_beats
from ecgscale.models.flops import cached_ladder, width_ladder
from ecgscale.models.registry import LadderPoint, register_model

MIN_HEAD_SIZE = 16
"""Attention heads of 2 to 15 are zero-padded to this size for the attention kernel: torch's CPU
kernel is up to twice as fast at 16 as at 2-15 (the 20K ladder point has heads of 11); heads of 1
are fastest as they are. Exact: the zero columns add nothing to the scores, the scale stays
1/sqrt(true size), and the padded output columns are dropped; FLOPs are counted at the true size
(`ecgscale.models.flops`)."""


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """`scaled_dot_product_attention` of `(batch, heads, tokens, head_size)` inputs, with heads of
    2 to `MIN_HEAD_SIZE - 1` zero-padded to `MIN_HEAD_SIZE`."""
    size = q.shape[-1]
    if size == 1 or size >= MIN_HEAD_SIZE:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    q, k, v = (F.pad(z, (0, MIN_HEAD_SIZE - size)) for z in (q, k, v))
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=size**-0.5
    )
    return out[..., :size]


class PreLNBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)); `mask` `(batch, 1, 1, tokens)`, True = attend."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """`(batch, tokens, width)` -> the same; with `cls_only` only the first token's output
        `(batch, 1, width)` is computed (it attends to every token as usual)."""
        b, t, d = x.shape
        h = self.norm1(x)
        if cls_only:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(h[:, :1], weight[:d], bias[:d]).view(b, 1, self.heads, d // self.heads)
            kv = F.linear(h, weight[d:], bias[d:]).view(b, t, 2, self.heads, d // self.heads)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            q, x = q.transpose(1, 2), x[:, :1]
        else:
            qkv = self.qkv(h).view(b, t, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        p = self.dropout if self.training else 0.0
        a = attention(q, k, v, mask, p)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, x.shape[1], d)))
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x))))))


GROUP_RECORDS = 16
"""Records per group of `forward_tokens`: a batch is sorted by sentence length and encoded in
groups of this many, each trimmed to its longest sentence (padding is never attended to, so the
outputs are those of the whole batch; short sentences skip the padding work of long ones)."""


@dataclass(frozen=True)
class TokenOutputs:
    """`forward_tokens` result: tokens `(batch, T, width)` (final-LayerNormed outputs of the input
    tokens, in their order; padding rows are meaningless), cls `(batch, width)`, valid
    `(batch, T)`."""

    tokens: torch.Tensor
    cls: torch.Tensor
    valid: torch.Tensor


class BeatTransformer(Encoder):
    """HeartLang-style encoder over beat tokens (module docstring), input at `tokenizer.fs`."""

    input_kind = "beats"

    def __init__(
        self,
        width: int = 128,
        depth: int = 4,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        leads: int = 12,
        tokenizer: TokenizerConfig | None = None,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1 or heads < 1 or width % heads:
            raise ConfigError(
                f"beat_transformer: expected width, depth, heads >= 1 with width divisible by "
                f"heads, got width={width}, depth={depth}, heads={heads}"
            )
        if not (mlp_ratio > 0 and 0 <= dropout < 1 and leads >= 1):
            raise ConfigError(
                f"beat_transformer: expected mlp_ratio > 0, 0 <= dropout < 1, leads >= 1, got "
                f"{mlp_ratio}, {dropout}, {leads}"
            )
        self.tokenizer = tokenizer or TokenizerConfig()
        self.leads = leads
        self.embed_dim = width
        cfg = self.tokenizer
        self.beat_embed = nn.Linear(cfg.word_len, width)
        self.lead_embed = nn.Embedding(leads, width)
        self.time_embed = nn.Embedding(cfg.n_time_bins, width)
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.max_tokens + 1, width))
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        hidden = max(1, round(mlp_ratio * width))
        self.blocks = nn.ModuleList(PreLNBlock(width, heads, hidden, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal (std 0.02) weights and embeddings, zero biases, unit LayerNorms
        (ViT/BERT practice); nothing to do on the meta device."""
        for module in self.modules():
            if isinstance(module, nn.Linear) and not module.weight.is_meta:
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding) and not module.weight.is_meta:
                nn.init.trunc_normal_(module.weight, std=0.02)
        for p in (self.pos_embed, self.cls_token):
            if not p.is_meta:
                nn.init.trunc_normal_(p, std=0.02)

    def tokenize(self, x: torch.Tensor | np.ndarray) -> BeatTokens:
        """Beat tokens of `x` `(batch, leads, samples)` mV at `tokenizer.fs` (numpy, on the CPU)."""
        if x.ndim != 3 or x.shape[1] != self.leads:
            raise ConfigError(
                f"beat_transformer: expected input (batch, {self.leads}, samples), got "
                f"{tuple(x.shape)}"
            )
        return tokenize_beats(x, self.tokenizer)

    def forward_tokens(
        self,
        tokens: TokenBatch | BeatTokens,
        token_mask: torch.Tensor | None = None,
        mask_embedding: torch.Tensor | None = None,
    ) -> TokenOutputs:
        """Encode a batch of sentences.

        Args:
            tokens: a `TokenBatch` (or numpy `BeatTokens`, moved to the model's device) of T tokens.
            token_mask: optional `(batch, T)` bool, True where the token's word embedding is
                replaced by `mask_embedding` `(width,)` (masked-beat pre-training; lead, time and
                position embeddings are kept so the model knows where the missing beat is).
        """
        if isinstance(tokens, BeatTokens):
            tokens = tokens.to_torch(self.pos_embed.device)
        if token_mask is not None and mask_embedding is None:
            raise ConfigError("beat_transformer: a token_mask needs a mask_embedding (width,)")
        x = self._grouped(tokens, token_mask, mask_embedding, cls_only=False)
        return TokenOutputs(tokens=x[:, 1:], cls=x[:, 0], valid=tokens.valid)

    def _grouped(
        self,
        tokens: TokenBatch,
        token_mask: torch.Tensor | None,
        mask_embedding: torch.Tensor | None,
        cls_only: bool,
    ) -> torch.Tensor:
        """`_encode` over groups of `GROUP_RECORDS` records of similar sentence span (up to the
        last real token), back in batch order: `(batch, 1 + T, width)`, or `(batch, 1, width)`
        with `cls_only`."""
        t = tokens.words.shape[1]
        if t > self.tokenizer.max_tokens:
            raise ConfigError(
                f"beat_transformer: {t} tokens, more than max_tokens={self.tokenizer.max_tokens}"
            )
        position = torch.arange(1, t + 1, device=tokens.valid.device)
        span = (tokens.valid * position).amax(dim=1)
        order = torch.argsort(span, stable=True)
        parts = []
        for rows in order.split(GROUP_RECORDS):
            n = int(span[rows].max())
            x = self._encode(tokens, rows, n, token_mask, mask_embedding, cls_only)
            parts.append(x if cls_only else F.pad(x, (0, 0, 0, t - n)))
        return torch.cat(parts)[torch.argsort(order)]

    def _encode(
        self,
        tokens: TokenBatch,
        rows: torch.Tensor,
        n: int,
        token_mask: torch.Tensor | None,
        mask_embedding: torch.Tensor | None,
        cls_only: bool,
    ) -> torch.Tensor:
        """CLS and the first `n` tokens of records `rows` through embeddings, blocks and the final
        LayerNorm: `(len(rows), 1 + n, width)`; with `cls_only` the last block computes the CLS
        output only: `(len(rows), 1, width)`."""
        x = self.beat_embed(tokens.words[rows, :n])
        if token_mask is not None and mask_embedding is not None:
            x = torch.where(token_mask[rows, :n, None], mask_embedding.to(x.dtype), x)
        x = x + self.lead_embed(tokens.lead[rows, :n]) + self.time_embed(tokens.time[rows, :n])
        x = x + self.pos_embed[:, 1 : n + 1]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(rows), -1, -1)
        x = torch.cat([cls, x], dim=1)
        valid = tokens.valid[rows, :n]
        keep = torch.cat([valid.new_ones(len(rows), 1), valid], dim=1)[:, None, None, :]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, keep, cls_only and i == last)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor | BeatTokens) -> torch.Tensor:
        """`(batch, leads, samples)` mV at `tokenizer.fs`, or their `BeatTokens` -> CLS output
        `(batch, width)`.

        A waveform is tokenized on the CPU on every call; training and embedding passes over a
        store pass the store's cached tokens (`ecgscale.models.beats.store_tokens`) instead. The
        last block computes the CLS output only (the other outputs do not reach it).
        """
        tokens = x if isinstance(x, BeatTokens) else self.tokenize(x)
        return self._grouped(tokens.to_torch(self.pos_embed.device), None, None, True)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`forward_features` computed in full (every token's output in every block): what FLOPs
        are counted on (`ecgscale.models.flops`), so that the count, like the pretext tasks that
        read every token, does not depend on the CLS-only shortcut."""
        return self.forward_tokens(self.tokenize(x)).cls

    def example_input(self, leads: int, length: int, device: torch.device | str) -> torch.Tensor:
        """A representative record for counting FLOPs: 72 beats/min (a QRS-like 1 mV Gaussian of
        20 ms every 0.833 s from 0.4 s) on every lead (12 leads, 10 s: 144 tokens)."""
        fs = self.tokenizer.fs
        t = np.arange(length) / fs
        beats = np.arange(0.4, length / fs, 60.0 / 72.0)
        wave = np.exp(-0.5 * ((t[:, None] - beats[None, :]) / 0.02) ** 2).sum(axis=1)
        x = np.broadcast_to(wave.astype(np.float32), (1, leads, length))
        return torch.tensor(x, device=device)


def _snap_width(x: float) -> int:
    """The ladder's width grid: even below 128, a multiple of 16 below 512, of 64 above."""
    step = 2 if x < 128 else 16 if x < 512 else 64
    return max(step, step * round(x / step))


def _heads(width: int) -> int:
    """The largest divisor of `width` not above max(2, width // 64): head size about 64."""
    return next(h for h in range(max(2, width // 64), 0, -1) if width % h == 0)


def _depth(target: int) -> int:
    """depth = round(2 (N / 20K)^(1/5)), at least 2."""
    return max(2, round(2 * (target / 20_000) ** 0.2))


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    width = _snap_width(x)
    return {"width": width, "depth": _depth(target), "heads": _heads(width)}


_TOKENIZER_ARGS = ("fs", "pre_s", "post_s", "max_tokens", "time_bin_s", "n_time_bins")


def _tokenizer(config: dict[str, Any]) -> TokenizerConfig:
    """The `TokenizerConfig` named by the factory arguments in `config`."""
    return TokenizerConfig(**{name: config[name] for name in _TOKENIZER_ARGS})


def param_count(config: dict[str, Any]) -> int:
    """N of `beat_transformer(**config)` in closed form (tests pin it to the built model's count).

    Per block: qkv and output projections 4 d^2 + 4 d, MLP 2 d h + h + d, two LayerNorms 4 d;
    embeddings: beat (word_len + 1) d, lead, time bins, positions (max_tokens + 1) and CLS one d
    each, final LayerNorm 2 d.
    """
    full = {**_DEFAULTS, **config}
    d, depth = int(full["width"]), int(full["depth"])
    hidden = max(1, round(full["mlp_ratio"] * d))
    tok = _tokenizer(full)
    block = 4 * d * d + 4 * d + 2 * d * hidden + hidden + d + 4 * d
    embed = (tok.word_len + 1) * d + (full["leads"] + tok.n_time_bins + tok.max_tokens + 2) * d
    return depth * block + embed + 2 * d


@cached_ladder
def beat_transformer_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """9 sizes from 20K to 200M encoder parameters (depth and width rule: module docstring)."""
    return width_ladder(
        "beat_transformer",
        param_count,
        _ladder_config,
        bounds=(2, 4096),
        integer=True,
        targets=targets,
    )


@register_model(
    "beat_transformer",
    ladder=beat_transformer_ladder,
    default_fs=100.0,
    default_length=1000,
    input_kind="beats",
)
def beat_transformer(
    width: int = 128,
    depth: int = 4,
    heads: int = 2,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    leads: int = 12,
    fs: float = 100.0,
    pre_s: float = 0.25,
    post_s: float = 0.35,
    max_tokens: int = 256,
    time_bin_s: float = 1.0,
    n_time_bins: int = 32,
) -> BeatTransformer:
    """A `BeatTransformer`; `fs`, `pre_s`, `post_s`, `max_tokens`, `time_bin_s`, `n_time_bins` set
    its `TokenizerConfig` (the detector keeps its defaults)."""
    tokenizer = _tokenizer(locals())
    return BeatTransformer(width, depth, heads, mlp_ratio, dropout, leads, tokenizer)


_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(beat_transformer).parameters.items()
}
