"""Fast random batches from a store for training loops.

Batches are gathered from the memory-mapped signals with sorted fancy indexing (sequential reads),
converted to float32 mV and handed over as torch tensors; a background thread prefetches the next
batches so the training step never waits on the disk. The order is a seeded permutation per epoch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ecgscale.data.store import Store


@dataclass
class Batch:
    """One batch: `x` `(batch, 12, length)` float32 mV, `y` `(batch, classes)` float32 or None,
    `index` the store rows."""

    x: torch.Tensor
    y: torch.Tensor | None
    index: np.ndarray


class BatchLoader:
    """Iterate over `indices` of `store` in random batches.

    Args:
        store: the prepared store.
        indices: store rows to draw from.
        batch_size: records per batch.
        labels: optional `(records, classes)` matrix over the whole store; rows are gathered.
        shuffle: seeded permutation per epoch (else the given order).
        seed: base seed; epoch `e` uses the permutation of `(seed, e)`.
        drop_last: drop a final incomplete batch.
        prefetch: batches prepared ahead in a background thread (0: none).
    """

    def __init__(
        self,
        store: Store,
        indices: np.ndarray,
        batch_size: int,
        *,
        labels: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
    ) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.labels = labels
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of epoch `epoch` (deterministic for a seed)."""
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """The rows of this epoch, in iteration order."""
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def load(self, rows: np.ndarray) -> Batch:
        """Gather `rows` into a `Batch`."""
        x = torch.from_numpy(self.store.batch(rows))
        y = None
        if self.labels is not None:
            y = torch.from_numpy(np.asarray(self.labels[rows], dtype=np.float32))
        return Batch(x, y, rows)

    def _chunks(self) -> Iterator[np.ndarray]:
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            if self.drop_last and len(rows) < self.batch_size:
                return
            yield rows

    def __iter__(self) -> Iterator[Batch]:
        if self.prefetch <= 0:
            for rows in self._chunks():
                yield self.load(rows)
            return
        slots: queue.Queue = queue.Queue(maxsize=self.prefetch)
        done = object()
        stop = threading.Event()

        def work() -> None:
            try:
                for rows in self._chunks():
                    if stop.is_set():
                        return
                    slots.put(self.load(rows))
            except BaseException as exc:  # re-raised in the consumer
                slots.put(exc)
            slots.put(done)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while (item := slots.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    slots.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.01)
