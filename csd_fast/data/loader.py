"""Training batches: epoch-style sampling without replacement, seeded, resumable, DataLoader workers.

The run is one stream of global positions ``p = 0, 1, 2, ...``; step ``t`` (from 1) takes the
global batch ``p = (t - 1) * B .. t * B - 1``. Position ``p`` reads item ``perm_e[p % n]`` of
epoch ``e = p // n``, where ``perm_e`` is a permutation of the ``n`` items seeded by
``(seed, e)``: every item once per epoch, a fresh order each epoch (as the official code's
shuffled DataLoader). The item's own randomness (patch position, flips) is seeded by
``(seed, p)``, inside a forked RNG, so it depends neither on the worker that reads it nor on
the caller's RNG. Hence a run resumed at step ``k`` (``start_step=k``) draws exactly the
batches of an uninterrupted run, with any ``num_workers``, and under DDP the ranks' shares
(rank ``r`` takes the batch positions ``r, r + world, ...``) together make the same global batch
for any world size.

``torch.utils.data.DataLoader`` does the work: worker processes, prefetching, collation.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["mix_seed", "EpochSampler", "SeededItems", "batches"]

_PERMUTATION, _ITEM, _LOADER = 0, 1, 2  # stream tags: no two uses share a seed


def mix_seed(*values: int) -> int:
    """A 63-bit seed from non-negative ints (``numpy.random.SeedSequence``: well mixed, stable)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> 1)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


class EpochSampler(Sampler):
    """Endless ``(index, item_seed)`` pairs of this rank, from step ``start_step + 1`` on (module docstring)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, start_step: int = 0, world_size: int = 1, rank: int = 0):
        for name, value, minimum in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                                     ("start_step", start_step, 0), ("world_size", world_size, 1), ("rank", rank, 0)):
            _check_int(name, value, minimum)
        if batch_size % world_size:
            raise ValueError(f"batch_size: expected a multiple of the world size {world_size}, got {batch_size}")
        if rank >= world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size = {world_size}, got {rank}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.world_size, self.rank = start_step, world_size, rank

    def permutation(self, epoch: int) -> Tensor:
        """The item order of epoch ``epoch``."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, _PERMUTATION, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, None
        step = self.start_step
        while True:
            for j in range(self.rank, self.batch_size, self.world_size):
                p = step * self.batch_size + j
                e, i = divmod(p, self.n)
                if e != epoch:
                    epoch, order = e, self.permutation(e).tolist()
                yield order[i], mix_seed(self.seed, _ITEM, p)
            step += 1


class SeededItems(Dataset):
    """``items[(index, seed)] = dataset[index]`` drawn under ``torch.manual_seed(seed)`` in a forked
    RNG (the caller's RNG state is left as it was)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def batches(
    dataset, batch_size: int, seed: int = 0, start_step: int = 0, num_workers: int = 0,
    world_size: int = 1, rank: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(lr, hr)`` batches of this rank's share (``batch_size / world_size`` items) of the
    global batches of steps ``start_step + 1, start_step + 2, ...`` (module docstring).

    ``dataset[i]`` gives ``(lr [3,h,w], hr [3,sh,sw])`` drawing its randomness from torch's RNG.
    ``num_workers``: DataLoader worker processes (0: read in this process).
    """
    _check_int("num_workers", num_workers, 0)
    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one training pair, got an empty dataset")
    sampler = EpochSampler(len(dataset), batch_size, seed, start_step, world_size, rank)
    # An own generator for the DataLoader's worker base seed: the caller's RNG is not consumed.
    generator = torch.Generator().manual_seed(mix_seed(seed, _LOADER, start_step))
    loader = DataLoader(SeededItems(dataset), batch_size=batch_size // world_size, sampler=sampler,
                        num_workers=num_workers, persistent_workers=num_workers > 0, generator=generator)
    return iter(loader)
