"""Which images go into which batch, on which process: seeded per epoch, grouped by aspect ratio,
sharded across DDP ranks.

Training (`TrainBatchSampler`): every epoch draws a permutation from `seed + epoch`, so a resumed
run sees the same batches as the uninterrupted one. With `group_by_aspect_ratio`, images wider
than tall and the others go into separate batches (as MMDetection's AspectRatioBatchSampler and
torchvision's GroupedBatchSampler do): a batch is padded to its largest image, so mixing a
landscape and a portrait image nearly doubles the padded area. Each image appears exactly once per
epoch; a group's last batch may be short. Under DDP all ranks compute the same batch list and rank r
takes batches r, r + W, r + 2W, ...; the list is first topped up by repeating its first batches to a
multiple of W, because every rank must take the same number of steps (as DistributedSampler pads).

Each yielded item is `(index, augmentation seed, epoch)`: the data set seeds the transforms with the
seed, so an image's augmentation depends on (run seed, epoch, position) only, not on the loader
workers; the epoch lets a pipeline change with it (mosaic switched off for the last epochs) even in
persistent workers, which never see the main process's state.

Evaluation (`ShardSampler`): rank r reads images r, r + W, ... in order, without padding (no
image is evaluated twice); the predictions are gathered on rank 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def aspect_ratio_groups(ratios: Sequence[float | None]) -> list[int]:
    """Group id per image: 0 for width >= height (or unknown size), 1 for portrait."""
    return [1 if ratio is not None and ratio < 1 else 0 for ratio in ratios]


class TrainBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of (index, augmentation seed, epoch) for one rank; call `set_epoch` before each epoch.

    groups: a group id per image (`aspect_ratio_groups`), or None for plain shuffled batches.
    `len()` is the number of steps of a full epoch on this rank; `set_epoch(e, start_batch=k)` makes
    the next iteration skip the first k of them (a run resumed inside epoch e) without loading them.
    """

    def __init__(self, num_images: int, batch_size: int, seed: int, groups: Sequence[int] | None = None,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"num_images={num_images} and batch_size={batch_size} must be >= 1")
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.groups = list(groups) if groups is not None else [0] * num_images
        if len(self.groups) != num_images:
            raise ValueError(f"{len(self.groups)} group ids for {num_images} images")
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0
        sizes = [self.groups.count(g) for g in set(self.groups)]
        self.num_batches = sum(math.ceil(n / batch_size) for n in sizes)  # over all ranks, before padding

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return math.ceil(self.num_batches / self.world_size)

    def all_batches(self) -> list[list[tuple[int, int, int]]]:
        """The epoch's batches of every rank, in order, before sharding and padding."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_images, generator=generator) if self.shuffle else torch.arange(self.num_images)
        aug_seeds = torch.randint(0, 2**62, (self.num_images,), generator=generator)
        batches, open_batch = [], {}  # group id -> the batch being filled
        for index in order.tolist():
            batch = open_batch.setdefault(self.groups[index], [])
            batch.append((index, int(aug_seeds[index]), self.epoch))
            if len(batch) == self.batch_size:
                batches.append(open_batch.pop(self.groups[index]))
        leftovers = list(open_batch.values())  # at most one short batch per group
        if not self.shuffle:
            return batches + leftovers
        # Short batches go in at random places, not always last.
        for batch in leftovers:
            position = int(torch.randint(0, len(batches) + 1, (1,), generator=generator))
            batches.insert(position, batch)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        batches = self.all_batches()
        padded = len(self) * self.world_size
        batches += [batches[i % len(batches)] for i in range(padded - len(batches))]
        mine = batches[self.rank::self.world_size]
        start, self.start_batch = self.start_batch, 0  # the skip applies to one iteration only
        yield from mine[start:]


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ... in order: each image on exactly one rank."""

    def __init__(self, num_images: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_images, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
