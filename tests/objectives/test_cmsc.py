"""CMSC: the similarity-matrix targets, the loss against a hand computation, the segment pairs,
and the held-out loss going down on synthetic and real (PTB-XL) records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.objectives import ObjectiveBatch, ObjectiveContext, create_objective
from ecgscale.objectives.cmsc import multi_positive_info_nce, positive_mask, segment_samples


class ConvMean(Encoder):
    """A small deterministic encoder: one convolution, then the mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(12, 8, 5)
        self.embed_dim = 8

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(-1)


def _cmsc(length: int = 1000, fs: float = 100.0, patients=None, **options):
    torch.manual_seed(0)
    encoder = ConvMean()
    codes = np.arange(64) if patients is None else np.asarray(patients)
    context = ObjectiveContext(encoder, fs=fs, length=length, patient_codes=codes)
    return encoder, create_objective("cmsc", options, context)


def test_targets_are_other_segment_and_same_patient_and_exclude_the_diagonal() -> None:
    # Records 0..3; records 0 and 1 belong to one patient. Segments: first halves 0-3, seconds 4-7.
    records = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    patients = torch.tensor([7, 7, 8, 9, 7, 7, 8, 9])
    expected = torch.tensor(
        [
            # 0  1  2  3  4  5  6  7
            [0, 1, 0, 0, 1, 1, 0, 0],  # record 0, first segment
            [1, 0, 0, 0, 1, 1, 0, 0],  # record 1 (same patient as 0)
            [0, 0, 0, 0, 0, 0, 1, 0],  # record 2
            [0, 0, 0, 0, 0, 0, 0, 1],  # record 3
            [1, 1, 0, 0, 0, 1, 0, 0],  # record 0, second segment
            [1, 1, 0, 0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(positive_mask(patients, records), expected)
    # Record-only positives: just the other segment of the same record.
    own = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(4):
        own[i, i + 4] = own[i + 4, i] = True
    assert torch.equal(positive_mask(records, records), own)
    with pytest.raises(ValueError, match="exactly two segments"):
        positive_mask(patients[:7], records[:7])


def test_info_nce_equals_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    records = torch.tensor([0, 1, 2, 0, 1, 2])
    patients = torch.tensor([5, 5, 6, 5, 5, 6])
    positives = positive_mask(patients, records)
    loss, metrics = multi_positive_info_nce(z, positives, temperature=0.1)
    s = (z @ z.T).tolist()
    total = 0.0
    for i in range(6):
        denominator = sum(math.exp(s[i][k] / 0.1) for k in range(6) if k != i)
        pos = [j for j in range(6) if j != i and bool(positives[i, j])]
        total += -sum(math.log(math.exp(s[i][j] / 0.1) / denominator) for j in pos) / len(pos)
    assert float(loss) == pytest.approx(total / 6, rel=1e-12)
    negatives = [s[i][j] for i in range(6) for j in range(6) if i != j and not positives[i, j]]
    assert metrics["neg_sim"] == pytest.approx(np.mean(negatives))


def test_segments_are_adjacent_non_overlapping_and_seeded_per_record() -> None:
    _, cmsc = _cmsc()
    assert cmsc.segment == segment_samples(2.5, 100.0) == 250
    assert segment_samples(2.5, 400.0) == 1000 and segment_samples(2.5, 500.0) == 1250
    t = torch.arange(1000, dtype=torch.float32)
    x = t.expand(4, 12, 1000).clone()
    rows = np.array([10, 20, 30, 40])
    first, second = cmsc.segments(ObjectiveBatch(x, None, rows, seed=(0, 0, 5)))
    assert first.shape == second.shape == (4, 12, 250)
    starts = first[:, 0, 0].long()
    assert torch.equal(second[:, :, 0].long(), (starts + 250)[:, None].expand(4, 12))
    expected = (starts[:, None, None] + torch.arange(250)).float().expand(4, 12, 250)
    assert torch.equal(first, expected)  # contiguous samples, every lead alike
    assert int(starts.min()) >= 0 and int(starts.max()) <= 1000 - 500
    assert len(set(starts.tolist())) > 1  # records get different positions
    # The same record at the same step gets the same pair, whatever its place in the batch.
    swapped, _ = cmsc.segments(ObjectiveBatch(x, None, rows[::-1].copy(), seed=(0, 0, 5)))
    assert torch.equal(swapped[:, 0, 0].long(), starts.flip(0))
    later, _ = cmsc.segments(ObjectiveBatch(x, None, rows, seed=(0, 0, 6)))
    assert not torch.equal(later[:, 0, 0].long(), starts)


def test_loss_uses_the_patient_targets() -> None:
    """The objective's loss equals InfoNCE on the encoded segments with patient positives."""
    patients = np.array([0, 0, 1, 2, 3, 3])
    encoder, cmsc = _cmsc(patients=patients, projection_layers=1)
    g = torch.Generator().manual_seed(2)
    batch = ObjectiveBatch(torch.randn(4, 12, 1000, generator=g), None, np.array([0, 1, 2, 4]))
    loss, _ = cmsc.loss(encoder, batch)
    first, second = cmsc.segments(batch)
    z = torch.nn.functional.normalize(cmsc.projection(encoder(torch.cat([first, second]))), dim=1)
    records = torch.tensor([0, 1, 2, 4, 0, 1, 2, 4])
    owners = torch.tensor([0, 0, 1, 3, 0, 0, 1, 3])
    expected, _ = multi_positive_info_nce(z, positive_mask(owners, records), 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    _, record_only = _cmsc(patients=patients, projection_layers=1, same_patient_positives=False)
    record_only.load_state_dict(cmsc.state_dict())
    other, _ = record_only.loss(encoder, batch)
    plain, _ = multi_positive_info_nce(z, positive_mask(records, records), 0.1)
    assert other.item() == pytest.approx(plain.item(), rel=1e-6)
    assert other.item() != pytest.approx(loss.item(), rel=1e-3)


def test_records_too_short_for_two_segments_are_rejected() -> None:
    with pytest.raises(ConfigError, match="do not fit"):
        _cmsc(length=400)
    _cmsc(length=400, segment_seconds=2.0)  # 2 x 200 samples fit exactly
    with pytest.raises(ConfigError, match="temperature"):
        _cmsc(temperature=0)


def test_heldout_loss_goes_down_on_synthetic_records(train, synth_store) -> None:
    result = train(synth_store, "cmsc", epochs=3)
    assert result.best_val_loss < 0.9 * result.initial_metrics["loss"]
    assert result.best_metrics["top1"] > result.initial_metrics["top1"]
    # Two 250-sample segments are encoded per record.
    assert result.flops_per_record > 0 and result.params > 0


def test_heldout_loss_goes_down_on_ptbxl(train, ptbxl_100hz_store) -> None:
    result = train(ptbxl_100hz_store, "cmsc", epochs=2, data_fraction=0.4)
    assert result.records < 0.5 * len(ptbxl_100hz_store.split_indices("train"))
    assert result.best_val_loss < 0.9 * result.initial_metrics["loss"]
    assert result.best_metrics["pos_sim"] > result.best_metrics["neg_sim"]
