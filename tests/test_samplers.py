"""Batch sampling: aspect-ratio groups, every image once per epoch, seeded epochs, DDP shards."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from detect.data.build import build_loader
from detect.data.coco import CocoDetection
from detect.data.samplers import ShardSampler, TrainBatchSampler, aspect_ratio_groups

# 20 landscape, 14 portrait, 3 without a size and 3 square (both batched with the landscape ones)
RATIOS = [1.5] * 20 + [0.75] * 14 + [None] * 3 + [1.0] * 3


def indices(batches) -> list[int]:
    return [index for batch in batches for index, *_ in batch]


def test_groups_follow_width_over_height():
    assert aspect_ratio_groups([2.0, 1.0, 0.5, None]) == [0, 0, 1, 0]


@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_every_batch_holds_one_group_and_every_image_comes_once_per_epoch(batch_size):
    groups = aspect_ratio_groups(RATIOS)
    sampler = TrainBatchSampler(len(RATIOS), batch_size, seed=7, groups=groups)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len({groups[i] for i, *_ in batch}) == 1 for batch in batches)
        assert sorted(indices(batches)) == list(range(len(RATIOS)))
        assert sum(len(b) < batch_size for b in batches) <= 2  # at most one short batch per group


def test_epochs_are_seeded_and_differ():
    sampler = TrainBatchSampler(40, 4, seed=1, groups=aspect_ratio_groups(RATIOS))
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # same seed and epoch: same batches and augmentation seeds
    sampler.set_epoch(1)
    assert indices(list(sampler)) != indices(first)


def test_a_resumed_epoch_skips_its_first_batches_without_changing_the_rest():
    sampler = TrainBatchSampler(40, 4, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=4)
    assert list(sampler) == full[4:]
    assert len(sampler) == len(full)  # the epoch's length stays the full one (the loop counts from step 4)
    assert list(sampler) == full  # the skip applies once


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_equal_shares_that_cover_every_image(world_size):
    groups = aspect_ratio_groups(RATIOS)
    shares = []
    for rank in range(world_size):
        sampler = TrainBatchSampler(len(RATIOS), 4, seed=5, groups=groups, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        shares.append(list(sampler))
    assert len({len(share) for share in shares}) == 1  # the same number of steps on every rank
    counts = Counter(i for share in shares for i in indices(share))
    assert set(counts) == set(range(len(RATIOS)))
    single = TrainBatchSampler(len(RATIOS), 4, seed=5, groups=groups)
    single.set_epoch(1)
    padding = sum(len(share) for share in shares) - len(single)  # repeated batches to even out the ranks
    assert padding < world_size
    assert all(len({groups[i] for i, *_ in batch}) == 1 for share in shares for batch in share)


def test_evaluation_shards_cover_every_image_exactly_once():
    seen = [i for rank in range(3) for i in ShardSampler(10, rank, 3)]
    assert sorted(seen) == list(range(10))


def test_the_training_loader_batches_landscape_and_portrait_images_apart(tmp_path):
    images, annotations = [], []
    for k in range(10):
        width, height = (48, 32) if k % 3 else (32, 48)
        Image.new("RGB", (width, height)).save(tmp_path / f"{k}.jpg")
        images.append({"id": k, "file_name": f"{k}.jpg", "width": width, "height": height})
        annotations.append({"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 8, 8], "iscrowd": 0})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    dataset = CocoDetection(tmp_path, tmp_path / "ann.json")
    loader = build_loader(dataset, batch_size=3, train=True, workers=0, seed=0)
    loader.batch_sampler.set_epoch(0)
    seen = []
    for batch_images, targets in loader:
        assert len({tuple(img.shape) for img in batch_images}) == 1  # one shape per batch: no padding waste
        seen += [t["image_id"] for t in targets]
    assert sorted(seen) == list(range(10))
