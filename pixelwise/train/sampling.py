"""A resumable, reproducible order of training samples.

The training stream is an endless sequence of positions 0, 1, 2, ...; position ``p`` falls in epoch
``p // N`` (N = data set size) and picks sample ``permutation(seed, epoch)[p % N]``. Each sample also gets
its own augmentation seed, a pure function of (seed, epoch, p % N). So the stream from any position is
known without replaying what came before: a run resumed at optimizer step ``s`` restarts the stream at
position ``s * images_per_step`` and sees exactly the images, crops and flips an uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The sample order of one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def sample_seed(seed: int, epoch: int, slot: int) -> int:
    """The augmentation seed of the sample in position ``slot`` of ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, slot]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SampleStream(Sampler[tuple[int, int]]):
    """Endless ``(index, augmentation seed)`` pairs from global stream position ``start`` on.

    For distributed training, rank ``r`` of ``world_size`` takes every ``world_size``-th position
    (``p % world_size == r``), so the ranks together cover the same stream as one process.
    """

    def __init__(self, num_samples: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty data set")
        self.num_samples = num_samples
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        epoch, order = -1, None
        while True:
            if position // self.num_samples != epoch:
                epoch = position // self.num_samples
                order = epoch_permutation(self.seed, epoch, self.num_samples)
            slot = position % self.num_samples
            yield int(order[slot]), sample_seed(self.seed, epoch, slot)
            position += self.world_size


class SeededSamples(Dataset):
    """Wraps a data set so that ``self[(index, seed)]`` draws the item's augmentation from ``seed`` alone.

    ``fork_rng`` keeps the caller's global torch RNG untouched: loading in the main process or in a
    worker gives the same item, and the model's own randomness (dropout) does not depend on the data.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
