"""A resumable, distributed-aware infinite sampler.

Training draws batches from an endless stream of epochs. Epoch ``e`` is a permutation seeded by
``(seed, e)``; each rank takes its share; every index comes with its own augmentation seed
derived from ``(seed, e, position)``. The stream is therefore a pure function of the seed and
the number of samples already consumed, so a run resumed at iteration ``k`` starts the stream
at sample ``k * batch_size`` and sees exactly the batches the uninterrupted run would have,
without loading the skipped data.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    """Endless sampler yielding ``(index, augmentation_seed)`` keys.

    Args:
        num_items: dataset length.
        batch_size: per-rank batch size; each epoch keeps whole batches only (drop_last).
        seed: base seed of the permutations and augmentations.
        shuffle: permute each epoch (training) or keep the order.
        rank, world_size: this process's share in distributed training.
        start_iter: number of batches already consumed (for resume).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, start_iter: int = 0) -> None:
        if num_items // world_size < batch_size:
            raise ValueError(f"dataset of {num_items} items is too small for batch size {batch_size} "
                             f"on {world_size} process(es)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, int(seed)
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.start_iter = start_iter

    @property
    def iters_per_epoch(self) -> int:
        """Whole batches per epoch for one rank."""
        return self.num_items // self.world_size // self.batch_size

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch`` (whole batches only)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.num_items, generator=g).numpy()
        else:
            perm = np.arange(self.num_items)
        per_rank = self.iters_per_epoch * self.batch_size
        return perm[self.rank::self.world_size][:per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        ipe = self.iters_per_epoch
        epoch, it = divmod(self.start_iter, ipe)
        offset = it * self.batch_size
        while True:
            idx = self.epoch_indices(epoch)
            seeds = np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(len(idx))
            for pos in range(offset, len(idx)):
                yield int(idx[pos]), int(seeds[pos])
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2 ** 62
