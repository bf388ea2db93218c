"""Masked beat modelling ("masked"; in the style of HeartLang, Jin et al., ICLR 2025).

Each record is tokenized into beat words by the encoder's own tokenizer
(`ecgscale.models.beats`: one window of `word_len` samples per beat and lead, padding after the
real tokens; batches from the trainer carry the store's cached tokens). About `mask_ratio`
(default half) of each record's real tokens are masked: their word embedding is replaced by a
learned mask embedding (lead, time and position embeddings stay, so the model knows which beat of
which lead is missing), and a linear head reads each masked token's output and reconstructs its
waveform. The loss is the mean squared error in mV^2 over the samples of the
masked tokens of the batch:

    loss = sum_{masked tokens} mean_samples (prediction - word)^2 / (masked tokens).

Padding is never masked and never scored: the mask is drawn among real tokens only and the encoder
does not attend to padding, so the padded words cannot change the loss.

Masking units: "token" (default) masks single (beat, lead) tokens, exactly
`max(1, round(mask_ratio * real tokens))` per record; "beat" masks a beat on all leads at once
(`max(1, round(mask_ratio * beats))` beats per record), so that a masked beat cannot be read off
the other leads of the same beat. Which tokens are masked is drawn per record from the batch seed
and the record's store row.

Discrete targets from a learned vector-quantised beat tokenizer (HeartLang's VQ-HBR) are not
implemented; reconstruction of the waveform is the target.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.beats import BeatTokens
from ecgscale.objectives import (
    Objective,
    ObjectiveBatch,
    ObjectiveContext,
    OptionsModel,
    register_objective,
)
from ecgscale.train.distributed import all_reduce_sum, global_mean


class MaskedBeatsOptions(OptionsModel):
    """Options of "masked".

    Attributes:
        mask_ratio: fraction of each record's real tokens (or beats) that are masked.
        mask_unit: "token" masks (beat, lead) tokens; "beat" masks every lead of a beat.
    """

    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    mask_unit: Literal["token", "beat"] = "token"


def choose_mask(tokens: BeatTokens, draws: np.ndarray, ratio: float, unit: str) -> np.ndarray:
    """`(batch, max_tokens)` bool mask over real tokens only.

    `draws` `(batch, max_tokens)` uniform numbers rank the candidates of each record (the smallest
    are masked); `unit` "token" ranks tokens, "beat" ranks beats and masks all leads of the chosen
    ones. Token `j` of a record with `b` beats per lead is beat `j % b` of lead `j // b`.
    """
    valid = np.asarray(tokens.valid, dtype=bool)
    width = valid.shape[1]
    if unit == "token":
        count = valid.sum(axis=1)
        keys = np.where(valid, draws[:, :width], np.inf)
    else:
        count = np.asarray(tokens.beats, dtype=np.int64)
        keys = np.where(np.arange(width)[None, :] < count[:, None], draws[:, :width], np.inf)
    chosen = np.maximum(1, np.round(ratio * count)).astype(np.int64)
    chosen = np.where(count > 0, chosen, 0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    picked = rank < chosen[:, None]
    if unit == "token":
        return picked & valid
    beat_of_token = np.arange(width)[None, :] % np.maximum(count, 1)[:, None]
    return np.take_along_axis(picked, beat_of_token, axis=1) & valid


@register_objective("masked")
class MaskedBeats(Objective):
    """Masked beat reconstruction; see the module docstring."""

    input_kinds = frozenset({"beats"})
    whole_records = True
    Options = MaskedBeatsOptions

    def __init__(self, options: MaskedBeatsOptions, context: ObjectiveContext) -> None:
        super().__init__(options, context)
        encoder = context.encoder
        for needed in ("tokenize", "forward_tokens", "tokenizer"):
            if not hasattr(encoder, needed):
                raise ConfigError(
                    f"objective 'masked': encoder {type(encoder).__name__} has no {needed!r} "
                    "(a beat-token encoder is needed)"
                )
        width = encoder.embed_dim
        self.max_tokens = int(encoder.tokenizer.max_tokens)
        self.mask_embedding = nn.Parameter(torch.empty(width))
        nn.init.trunc_normal_(self.mask_embedding, std=0.02)
        self.decoder = nn.Linear(width, int(encoder.tokenizer.word_len))
        nn.init.zeros_(self.decoder.weight)  # start from predicting silence (nmse 1), not noise
        nn.init.zeros_(self.decoder.bias)

    def token_loss(
        self, encoder: Encoder, tokens: BeatTokens, batch: ObjectiveBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of already tokenized records (`batch` gives the seed, rows and sharding)."""
        draws = batch.uniform(self.max_tokens)
        mask = choose_mask(tokens, draws, self.options.mask_ratio, self.options.mask_unit)
        device = self.mask_embedding.device
        inputs = tokens.to_torch(device)
        width = inputs.words.shape[1]
        token_mask = torch.as_tensor(mask[:, :width], device=device)
        out = encoder.forward_tokens(inputs, token_mask, self.mask_embedding)
        prediction = self.decoder(out.tokens[token_mask]).float()
        target = inputs.words[token_mask]
        error = (prediction - target).pow(2).mean(dim=1)
        count = token_mask.sum()
        loss = global_mean(error.sum(), count, batch.sharded)
        with torch.no_grad():  # normalised MSE: error over the masked words' mean square
            sums = torch.stack([error.sum(), target.pow(2).mean(dim=1).sum()]).detach()
            sums = all_reduce_sum(sums) if batch.sharded else sums
            metrics = {
                "masked_fraction": float(count / inputs.valid.sum().clamp_min(1)),
                "nmse": float(sums[0] / sums[1].clamp_min(1e-12)),
            }
        return loss, metrics

    def loss(
        self, encoder: Encoder, batch: ObjectiveBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = encoder.tokenize(batch.x) if batch.tokens is None else batch.tokens
        return self.token_loss(encoder, tokens, batch)
