"""Model tests run torch on one thread: their tensors are small, and on the shared 2-core machine
intra-op threads mostly wait for each other (a forward pass here is 5-20x faster on one thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
