"""Samplers that shard a split over processes and carry each epoch's augmentation seed to the workers.

A :class:`~torch.utils.data.DataLoader` with persistent workers keeps its dataset copies for the whole
run, so an attribute set on the dataset between epochs never reaches them.  The training sampler
therefore yields ``(index, epoch_seed)`` pairs: the dataset seeds that image's augmentation from the
pair, whichever worker or process loads it (see :class:`mlc.data.dataset.MultiLabelDataset`).

* :class:`TrainSampler`: a fresh permutation per epoch (``set_epoch``), cut to a multiple of the
  number of processes and split between them (no padding, so no image is seen twice in an epoch).
* :class:`EvalSampler`: every image exactly once over all processes (rank ``r`` takes ``r::world``),
  unlike ``DistributedSampler``, which pads with duplicates; gathered scores are therefore exact.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class TrainSampler(Sampler):
    """Shuffled indices of one process for the current epoch, as ``(index, epoch_seed)`` pairs."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = n, rank, world_size
        self.epoch_seed = 0

    def set_epoch(self, epoch_seed: int) -> None:
        """The epoch's seed: it fixes the order and every image's augmentation of the epoch."""
        self.epoch_seed = int(epoch_seed)

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.epoch_seed)
        order = torch.randperm(self.n, generator=g)
        mine = order[: len(self) * self.world_size][self.rank::self.world_size]
        return iter([(int(i), self.epoch_seed) for i in mine])


class EvalSampler(Sampler):
    """Indices ``rank, rank + world, ...``: over all processes every index exactly once."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = n, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))
