"""Batch sampling: aspect-ratio groups, every image once per epoch, seeded epochs, DDP shards."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
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


# Class imbalance: 20 images; class 1 in all of them, class 2 in two, class 3 in one; image 19 has no boxes.
LABELS = [{1} for _ in range(16)] + [{1, 2}, {1, 2}, {1, 3}, set()]


def test_repeat_factors_follow_lvis_rule_and_every_image_comes_at_least_once():
    from detect.data.samplers import RepeatFactorPicker

    picker = RepeatFactorPicker(LABELS, threshold=0.3, seed=0)
    # f_1 = 19/20 -> r = 1; f_2 = 2/20 -> sqrt(0.3 / 0.1) = 1.732; f_3 = 1/20 -> sqrt(6) = 2.449
    assert picker.class_factor[1] == 1.0
    assert picker.class_factor[2] == pytest.approx(3 ** 0.5) and picker.class_factor[3] == pytest.approx(6 ** 0.5)
    assert picker.image_factor[16] == pytest.approx(3 ** 0.5) and picker.image_factor[18] == pytest.approx(6 ** 0.5)
    assert picker.repeats[:16] == [1] * 16 and picker.repeats[19] == 1
    assert picker.repeats[16] in (1, 2) and picker.repeats[18] in (2, 3)
    # Over many runs' seeds the rounding averages to the factor.
    mean = sum(RepeatFactorPicker(LABELS, 0.3, seed).repeats[18] for seed in range(400)) / 400
    assert mean == pytest.approx(6 ** 0.5, abs=0.08)
    sampler = TrainBatchSampler(len(LABELS), 3, seed=1, picker=picker)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        counts = Counter(indices(sampler))
        assert [counts[i] for i in range(len(LABELS))] == picker.repeats  # every image, its repeats, each epoch
        assert len(list(sampler)) == len(sampler) == math.ceil(sum(picker.repeats) / 3)
    assert "the rarest class 'c' (1 images, r=2.45) comes" in picker.summary(["a", "b", "c"])


def test_repeats_get_their_own_augmentation_seeds_and_ddp_shards_are_disjoint():
    from detect.data.samplers import RepeatFactorPicker

    picker = RepeatFactorPicker(LABELS, threshold=0.3, seed=0)
    single = TrainBatchSampler(len(LABELS), 2, seed=4, picker=picker)
    single.set_epoch(2)
    everything = list(single)
    seeds_of_18 = [seed for batch in everything for index, seed, _ in batch if index == 18]
    assert len(seeds_of_18) == picker.repeats[18] and len(set(seeds_of_18)) == len(seeds_of_18)
    shares = []
    for rank in range(2):
        sampler = TrainBatchSampler(len(LABELS), 2, seed=4, rank=rank, world_size=2, picker=picker)
        sampler.set_epoch(2)
        shares.append(list(sampler))
    assert len(shares[0]) == len(shares[1])
    interleaved = [batch for pair in zip(*shares) for batch in pair]
    assert interleaved[:len(everything)] == everything  # rank r takes batches r, r + 2, ...: no batch twice


def test_class_aware_sampling_draws_every_class_about_equally_and_never_an_empty_image():
    from detect.data.samplers import ClassAwarePicker

    picker = ClassAwarePicker(LABELS, num_samples=3000)
    drawn = picker.indices(torch.Generator().manual_seed(0))
    assert 19 not in drawn
    with_class_3 = sum(1 for i in drawn if 3 in LABELS[i])
    assert with_class_3 == pytest.approx(1000, rel=0.1)  # a third of the draws, from 1 image of 20
    sampler = TrainBatchSampler(len(LABELS), 4, seed=0, groups=[i % 2 for i in range(20)], picker=picker)
    lengths = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        lengths.add(len(list(sampler)))
    assert lengths == {len(sampler)}  # the same length every epoch, whatever the group mix


@pytest.mark.parametrize("name,words", [("repeat_factor", "repeat-factor sampling: "),
                                        ("class_aware", "class-aware sampling: 8 draws per epoch")])
def test_data_sampler_from_the_config_shapes_the_training_loader(tiny_demo_root, caplog, name, words):
    from detect.engine.build import build_data
    from detect.engine.distributed import SINGLE_PROCESS
    from tests.conftest import TINY, compose_train

    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, f"data.sampler.name={name}",
                         "data.sampler.repeat_threshold=0.5"])
    with caplog.at_level("INFO", logger="detect"):
        train_set, _, loader, _ = build_data(cfg, SINGLE_PROCESS, torch.device("cpu"))
    assert f"data.sampler={name}: {words}" in caplog.text and "the rarest class" in caplog.text
    loader.batch_sampler.set_epoch(0)
    images, targets = next(iter(loader))
    assert 1 <= len(images) <= 2 and all(len(t["boxes"]) > 0 for t in targets)
    assert len(loader) == len(loader.batch_sampler) >= len(train_set) // 2
