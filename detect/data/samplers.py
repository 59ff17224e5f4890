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

Class imbalance (`data.sampler`): `RepeatFactorPicker` (LVIS's repeat-factor sampling) and
`ClassAwarePicker` (MMDetection's ClassAwareSampler) decide which images an epoch holds, with
repeats; the batch sampler then groups, batches and shards that list as above, each repeat with its
own augmentation seed. Both keep every epoch the same length (the loop and the lr schedule count on it).

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


def labels_per_image(dataset) -> list[set[int]]:
    """The labels (1..K) of each training image's boxes, from the annotations (no image is read)."""
    out = []
    for info in dataset.images:
        anns = dataset.annotations.get(info["id"], [])
        out.append({dataset.label_of_category[a["category_id"]] for a in anns if not a.get("iscrowd", 0)})
    return out


class RepeatFactorPicker:
    """Repeat-factor sampling (Gupta et al. 2019, LVIS; Detectron2's RepeatFactorTrainingSampler): class
    c in a fraction f_c of the images gets r_c = max(1, sqrt(threshold / f_c)); an image repeats
    r_i = max of its classes' r_c times per epoch (images without boxes: 1). The fractional part is
    rounded once per run, stochastically from `seed` (an image with r_i = 1.4 is in 40% of the runs'
    draws twice), so every epoch holds the same images and has the same length; each epoch shuffles them."""

    def __init__(self, image_labels: Sequence[set[int]], threshold: float, seed: int):
        if not threshold > 0:
            raise ValueError(f"data.sampler.repeat_threshold={threshold} must be > 0")
        n = len(image_labels)
        counts: dict[int, int] = {}
        for labels in image_labels:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        self.class_factor = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
        self.image_factor = [max((self.class_factor[c] for c in labels), default=1.0) for labels in image_labels]
        generator = torch.Generator().manual_seed(seed)
        draws = torch.rand(n, generator=generator).tolist()
        self.repeats = [int(r) + (1 if u < r - int(r) else 0) for r, u in zip(self.image_factor, draws)]
        self.image_labels = list(image_labels)

    def __len__(self) -> int:
        return sum(self.repeats)

    def indices(self, generator: torch.Generator) -> list[int]:
        expanded = [i for i, k in enumerate(self.repeats) for _ in range(k)]
        return [expanded[j] for j in torch.randperm(len(expanded), generator=generator).tolist()]

    def summary(self, classes: Sequence[str]) -> str:
        """One log line: epoch length and how often the rarest class's images come per epoch."""
        if not self.class_factor:
            return f"repeat-factor sampling: {len(self)} images per epoch (no class has boxes)"
        rarest = min(self.class_factor, key=lambda c: (-self.class_factor[c], c))
        mine = [k for k, labels in zip(self.repeats, self.image_labels) if rarest in labels]
        return (f"repeat-factor sampling: {len(self)} images per epoch (of {len(self.repeats)}); the rarest class "
                f"{classes[rarest - 1]!r} ({len(mine)} images, r={self.class_factor[rarest]:.2f}) comes "
                f"{sum(mine)} times per epoch, {sum(mine) / max(1, len(mine)):.2f} per image")


class ClassAwarePicker:
    """Class-aware sampling (Shen et al. 2016; MMDetection's ClassAwareSampler): each of the epoch's
    `num_samples` draws picks a class uniformly, then one of its images uniformly, so every class is
    seen about equally often whatever its frequency (images of no class are never drawn)."""

    def __init__(self, image_labels: Sequence[set[int]], num_samples: int):
        by_class: dict[int, list[int]] = {}
        for index, labels in enumerate(image_labels):
            for label in labels:
                by_class.setdefault(label, []).append(index)
        if not by_class:
            raise ValueError("class-aware sampling needs images with boxes")
        self.classes = sorted(by_class)
        self.images_of = by_class
        self.num_samples = int(num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, generator: torch.Generator) -> list[int]:
        picks = torch.randint(0, len(self.classes), (self.num_samples,), generator=generator).tolist()
        slots = torch.rand(self.num_samples, generator=generator).tolist()
        return [self.images_of[self.classes[c]][int(u * len(self.images_of[self.classes[c]]))]
                for c, u in zip(picks, slots)]

    def summary(self, classes: Sequence[str]) -> str:
        rarest = min(self.classes, key=lambda c: (len(self.images_of[c]), c))
        share = self.num_samples / len(self.classes)
        return (f"class-aware sampling: {self.num_samples} draws per epoch, about {share:.0f} per class; the rarest "
                f"class {classes[rarest - 1]!r} ({len(self.images_of[rarest])} images) comes about {share:.0f} times "
                f"per epoch, {share / len(self.images_of[rarest]):.2f} per image")


class TrainBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of (index, augmentation seed, epoch) for one rank; call `set_epoch` before each epoch.

    groups: a group id per image (`aspect_ratio_groups`), or None for plain shuffled batches.
    `len()` is the number of steps of a full epoch on this rank; `set_epoch(e, start_batch=k)` makes
    the next iteration skip the first k of them (a run resumed inside epoch e) without loading them.
    """

    def __init__(self, num_images: int, batch_size: int, seed: int, groups: Sequence[int] | None = None,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 picker: RepeatFactorPicker | ClassAwarePicker | None = None):
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"num_images={num_images} and batch_size={batch_size} must be >= 1")
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.groups = list(groups) if groups is not None else [0] * num_images
        if len(self.groups) != num_images:
            raise ValueError(f"{len(self.groups)} group ids for {num_images} images")
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.picker = picker  # None: each image once per epoch
        self.epoch, self.start_batch = 0, 0
        sizes = [self.groups.count(g) for g in set(self.groups)]
        self.num_batches = sum(math.ceil(n / batch_size) for n in sizes)  # over all ranks, before padding
        if picker is not None:
            # The picked epoch's batches: the same number every epoch for repeat factors; class-aware
            # draws vary in their group mix, so each epoch is cut or topped up to this count.
            self.num_batches = len(self._picked_batches(torch.Generator().manual_seed(seed)))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return math.ceil(self.num_batches / self.world_size)

    def _batches(self, picks: list[tuple[int, int]], generator: torch.Generator) -> list[list[tuple[int, int, int]]]:
        """(index, seed) picks in order -> batches of one group each; short batches at random places."""
        batches, open_batch = [], {}  # group id -> the batch being filled
        for index, seed in picks:
            batch = open_batch.setdefault(self.groups[index], [])
            batch.append((index, seed, self.epoch))
            if len(batch) == self.batch_size:
                batches.append(open_batch.pop(self.groups[index]))
        leftovers = list(open_batch.values())  # at most one short batch per group
        if not self.shuffle:
            return batches + leftovers
        for batch in leftovers:
            position = int(torch.randint(0, len(batches) + 1, (1,), generator=generator))
            batches.insert(position, batch)
        return batches

    def _picked_batches(self, generator: torch.Generator) -> list[list[tuple[int, int, int]]]:
        order = self.picker.indices(generator)
        seeds = torch.randint(0, 2**62, (len(order),), generator=generator).tolist()  # one per repeat
        return self._batches(list(zip(order, seeds)), generator)

    def all_batches(self) -> list[list[tuple[int, int, int]]]:
        """The epoch's batches of every rank, in order, before sharding and padding."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.picker is not None:
            batches = self._picked_batches(generator)
            return [batches[i % len(batches)] for i in range(self.num_batches)]
        order = torch.randperm(self.num_images, generator=generator) if self.shuffle else torch.arange(self.num_images)
        aug_seeds = torch.randint(0, 2**62, (self.num_images,), generator=generator)
        return self._batches([(index, int(aug_seeds[index])) for index in order.tolist()], generator)

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
