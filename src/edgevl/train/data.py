"""Endless, resumable batch stream over any edgevl reader, split across DDP ranks.

The sample order is a pure function of (seed, epoch): map-style readers are shuffled per epoch and dealt to
ranks (`RankSampler`), streaming readers shard themselves by rank and worker and seed their shard order and
shuffle buffer from the epoch. The position is therefore just (epoch, batches consumed in the epoch):
resuming re-creates that epoch's order and skips the consumed batches (map-style readers skip indices
without loading them; streaming readers must re-read the skipped samples).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset

from edgevl.data.readers.base import RankSampler, collate_samples
from edgevl.errors import DataError, NoUsableInputError

Batch = dict[str, Any]


class BatchStream:
    """Yields collated batches of `batch_size` (full batches only) forever, epoch after epoch."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        collate: Callable[[list], Batch] = collate_samples,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size, self.workers, self.collate = rank, world_size, workers, collate
        self.epoch, self.position = 0, 0
        self._iterator: Iterator[Batch] | None = None
        self.streaming = isinstance(dataset, IterableDataset)
        if not self.streaming and self.batches_per_epoch() == 0:
            raise DataError(
                f"{len(dataset)} samples cannot fill one batch of {batch_size} on each of {world_size} rank(s)"
            )

    def batches_per_epoch(self) -> int:
        """Full batches per rank and epoch for map-style data (the same on every rank)."""
        return (len(self.dataset) // self.world_size) // self.batch_size

    def _loader(self) -> Iterator[Batch]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        common = {"num_workers": self.workers, "collate_fn": self.collate, "persistent_workers": False}
        if self.streaming:
            loader = DataLoader(self.dataset, batch_size=self.batch_size, drop_last=True, **common)
            return itertools.islice(iter(loader), self.position, None)
        sampler = RankSampler(len(self.dataset), rank=self.rank, world_size=self.world_size, seed=self.seed)
        sampler.set_epoch(self.epoch)
        order = list(sampler)
        n = self.batches_per_epoch()
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.position, n)]
        return iter(DataLoader(self.dataset, batch_sampler=batches, **common))

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        fresh_epoch = False
        while True:
            if self._iterator is None:
                self._iterator = self._loader()
            batch = next(self._iterator, None)
            if batch is not None:
                self.position += 1
                if batch:  # a batch whose samples were all skipped collates to {}
                    return batch
                continue
            if fresh_epoch and self.position == 0:
                raise NoUsableInputError(f"the training data yields no full batch of {self.batch_size} "
                                         f"(epoch {self.epoch}; see the skip counts in the run's skips/ folder)")
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
            fresh_epoch = True

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._iterator = int(state["epoch"]), int(state["position"]), None
