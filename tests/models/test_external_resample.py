"""`Resample`, the polyphase resampler that adapts store batches to an external contract, is
`scipy.signal.resample_poly` (same filter, zero-padded edges, same output length)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal as sps

from ecgscale.models.external import Resample


@pytest.mark.parametrize(("up", "down"), [(1, 5), (5, 1), (4, 5), (5, 4), (1, 1)])
def test_resample_equals_resample_poly(up: int, down: int) -> None:
    x = np.random.default_rng(up * 10 + down).standard_normal((2, 12, 1003)).astype(np.float32)
    expected = sps.resample_poly(x, up, down, axis=-1)
    got = Resample(up, down)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
