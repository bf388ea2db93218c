"""Contrastive multi-segment coding ("cmsc"; Kiyasseh et al., CLOCS, ICML 2021).

Each record of a batch gives two temporally adjacent, non-overlapping segments of
`segment_seconds` each: a pair of `round(segment_seconds * fs)` samples starting at a random offset
(drawn per record and step, so the pair wanders over the record across epochs). Defaults:
2.5 s segments, i.e. 250 samples at 100 Hz, 1000 at 400 Hz and 1250 at 500 Hz; the pair covers 5 s,
so records must be at least twice a segment long.

The 2B segments of a batch of B records are encoded, passed through a projection head
(`MLPProjectionHead`: `projection_layers - 1` blocks of Linear -> BatchNorm -> ReLU of the
encoder's width, then Linear to `projection_dim`) and L2-normalised; their cosine similarities
divided by the temperature (0.1) form a 2B x 2B matrix. For every segment (anchor) the positives
are the other segment of its record and both segments of every other record of the same patient;
every other segment is a negative and the anchor itself (the diagonal) is excluded. The loss is
the multi-positive InfoNCE

    loss_i = -mean_{j in P(i)} log( exp(s_ij) / sum_{k != i} exp(s_ik) ),

averaged over all 2B anchors. Every segment is an anchor, so the loss is symmetric in the two
segments of a pair. Under DDP the projections of all ranks are gathered first, so negatives come
from the whole global batch as in a single process.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.heads import MLPProjectionHead
from ecgscale.objectives import (
    Objective,
    ObjectiveBatch,
    ObjectiveContext,
    OptionsModel,
    register_objective,
)
from ecgscale.train.distributed import gather, gather_with_grad


class CMSCOptions(OptionsModel):
    """Options of "cmsc".

    Attributes:
        segment_seconds: length of each of the two segments, in seconds.
        temperature: softmax temperature of the cosine similarities.
        projection_dim: output size of the projection head.
        projection_layers: linear layers of the projection head (1: a single linear map, which
            keeps the loss free of batch statistics).
        same_patient_positives: count other records of the same patient as positives (CLOCS);
            when False only the other segment of the same record is.
    """

    segment_seconds: float = Field(2.5, gt=0)
    temperature: float = Field(0.1, gt=0)
    projection_dim: int = Field(128, ge=1)
    projection_layers: int = Field(2, ge=1)
    same_patient_positives: bool = True


def segment_samples(segment_seconds: float, fs: float) -> int:
    """Samples per segment at `fs` Hz: `round(segment_seconds * fs)`."""
    return max(1, round(segment_seconds * fs))


def positive_mask(patients: torch.Tensor, records: torch.Tensor) -> torch.Tensor:
    """`(n, n)` bool targets of n segments: True where two different segments share the patient
    (`patients` `(n,)` codes; pass record codes for record-only positives). The diagonal is False.

    `records` `(n,)` is checked: every record must contribute exactly two segments.
    """
    counts = torch.unique(records, return_counts=True)[1]
    if not bool((counts == 2).all()):
        raise ValueError("every record must contribute exactly two segments")
    same = patients[:, None] == patients[None, :]
    return same & ~torch.eye(len(patients), dtype=torch.bool, device=patients.device)


def multi_positive_info_nce(
    z: torch.Tensor, positives: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean multi-positive InfoNCE of L2-normalised `z` `(n, d)` with `positives` `(n, n)` bool
    (diagonal False, at least one positive per row); returns the loss and similarity metrics."""
    sim = z @ z.T
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (sim / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
    with torch.no_grad():
        negatives = ~positives & ~eye
        nearest = logits.argmax(dim=1)
        metrics = {
            "pos_sim": float(sim[positives].mean()),
            "neg_sim": float(sim[negatives].mean()) if negatives.any() else float("nan"),
            "top1": float(positives[torch.arange(len(z), device=z.device), nearest].float().mean()),
        }
    return per_anchor.mean(), metrics


@register_objective("cmsc")
class CMSC(Objective):
    """Contrastive multi-segment coding; see the module docstring."""

    input_kinds = frozenset({"waveform", "beats"})
    Options = CMSCOptions

    def __init__(self, options: CMSCOptions, context: ObjectiveContext) -> None:
        super().__init__(options, context)
        self.segment = segment_samples(options.segment_seconds, context.fs)
        if 2 * self.segment > context.length:
            raise ConfigError(
                f"objective 'cmsc': two {options.segment_seconds:g} s segments "
                f"({2 * self.segment} samples at {context.fs:g} Hz) do not fit in records of "
                f"{context.length} samples; lower segment_seconds"
            )
        if len(context.patient_codes) == 0:
            raise ConfigError("objective 'cmsc' needs the patient code of every store row")
        self.patient_codes = np.asarray(context.patient_codes, dtype=np.int64)
        width = context.encoder.embed_dim
        self.projection = MLPProjectionHead(
            width, width, options.projection_dim, options.projection_layers
        )

    def segments(self, batch: ObjectiveBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The two adjacent segments `(batch, leads, segment)` of every record."""
        slack = batch.x.shape[-1] - 2 * self.segment
        start = np.floor(batch.uniform(1)[:, 0] * (slack + 1)).astype(np.int64)
        offsets = torch.as_tensor(start, device=batch.x.device)[:, None] + torch.arange(
            2 * self.segment, device=batch.x.device
        )
        pair = torch.gather(batch.x, 2, offsets[:, None, :].expand(-1, batch.x.shape[1], -1))
        return pair[..., : self.segment], pair[..., self.segment :]

    def loss(
        self, encoder: Encoder, batch: ObjectiveBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        first, second = self.segments(batch)
        h = encoder.forward_features(torch.cat([first, second]))
        z = F.normalize(self.projection(h).float(), dim=1)
        rows = np.concatenate([batch.index, batch.index]).astype(np.int64)
        records = torch.as_tensor(rows, device=z.device)
        patients = torch.as_tensor(self.patient_codes[rows], device=z.device)
        if batch.sharded:
            z, records, patients = gather_with_grad(z), gather(records), gather(patients)
        owners = patients if self.options.same_patient_positives else records
        return multi_positive_info_nce(z, positive_mask(owners, records), self.options.temperature)

    def train_flops_per_record(self, encoder: Encoder, leads: int, length: int) -> int:
        """Two segments of `segment` samples are encoded per record."""
        return 2 * super().train_flops_per_record(encoder, leads, self.segment)
