"""Supervised pre-training ("sl"): multi-label binary cross-entropy on one label set.

A linear head maps the encoder's pooled representation `(batch, embed_dim)` to one logit per class
of the label set; the loss is the mean BCE over records and classes. Held-out evaluation reports
the loss and the macro AUROC over the classes that have both labels in the held-out set.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ecgscale.errors import ConfigError
from ecgscale.evaluate.metrics import auroc
from ecgscale.models.base import Encoder
from ecgscale.models.heads import LinearHead
from ecgscale.objectives import (
    Objective,
    ObjectiveBatch,
    ObjectiveContext,
    OptionsModel,
    register_objective,
)


class SupervisedOptions(OptionsModel):
    """Options of "sl".

    Attributes:
        head_dropout: dropout before the linear head (0: none).
    """

    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register_objective("sl")
class Supervised(Objective):
    """Multi-label BCE; batches carry `y` `(batch, classes)`."""

    input_kinds = frozenset({"waveform", "beats"})
    needs_labels = True
    whole_records = True
    Options = SupervisedOptions

    def __init__(self, options: SupervisedOptions, context: ObjectiveContext) -> None:
        super().__init__(options, context)
        if not context.classes:
            raise ConfigError("objective 'sl' needs a label set with at least one class")
        self.classes = tuple(context.classes)
        self.head = LinearHead(context.encoder.embed_dim, len(self.classes), options.head_dropout)

    def logits(self, encoder: Encoder, batch: ObjectiveBatch) -> torch.Tensor:
        """`(batch, classes)` logits."""
        return self.head(encoder.forward_features(batch.records)).float()

    def loss(
        self, encoder: Encoder, batch: ObjectiveBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.y is None:
            raise ConfigError("objective 'sl': the batch carries no labels")
        loss = F.binary_cross_entropy_with_logits(self.logits(encoder, batch), batch.y)
        return loss, {}

    @torch.no_grad()
    def evaluate(self, encoder: Encoder, batches: Iterable[ObjectiveBatch]) -> dict[str, float]:
        """Held-out mean BCE and macro AUROC (NaN when no class has both labels)."""
        logits, labels = [], []
        for batch in batches:
            if batch.y is None:
                raise ConfigError("objective 'sl': the held-out batch carries no labels")
            logits.append(self.logits(encoder, batch).cpu())
            labels.append(batch.y.cpu())
        if not logits:
            raise ConfigError("objective 'sl': no held-out records to evaluate")
        z, y = torch.cat(logits), torch.cat(labels)
        loss = float(F.binary_cross_entropy_with_logits(z, y))
        return {"loss": loss, "auroc_macro": auroc(y.numpy().astype(np.uint8), z.numpy()).macro}
