"""From the `data` config to data sets and loaders: paths, folds, the demo set, clear errors."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from detect.data.coco import CocoDetection, collate
from detect.data.demo import ensure_demo_data
from detect.data.samplers import ShardSampler, TrainBatchSampler, aspect_ratio_groups
from detect.data.transforms import detection_transforms
from detect.errors import DataConfigError


def annotation_files(data: DictConfig) -> dict[str, str | None]:
    """The train/val/test annotation file names, with `data.fold=k` selecting train{k}/val{k}."""
    files = {"train": data.train_ann, "val": data.val_ann, "test": data.get("test_ann")}
    if data.get("fold") is not None:
        files["train"] = str(data.fold_train_ann).format(fold=data.fold)
        files["val"] = str(data.fold_val_ann).format(fold=data.fold)
    return files


def check_root(data: DictConfig, splits: list[str]) -> Path:
    """Make sure the data root and the annotation files of `splits` exist; generate the demo set.

    Raises DataConfigError with one paragraph that says which path was tried and how to fix it.
    """
    if OmegaConf.is_missing(data, "root") or data.root in (None, ""):
        raise DataConfigError(
            f"data.root is not set for data={data.name}. Pass the folder that holds the COCO json "
            f"files, e.g. `data.root=/path/to/dataset`, or run `python -m detect.train data=demo`, "
            "which generates its own data and needs no download."
        )
    if data.get("demo") is not None:
        ensure_demo_data(data.root, **data.demo)
    root = Path(data.root).expanduser()
    env_hint = (f" or set the environment variable {data.root_env}" if data.get("root_env") else "")
    if not root.is_dir():
        raise DataConfigError(
            f"The data root {root.resolve()} (data={data.name}, data.root={data.root}) does not exist. "
            f"Point data.root at the folder that holds the annotation files (`data.root=/path/to/dataset`"
            f"{env_hint}). `python -m detect.train data=demo` runs without any download."
        )
    files = annotation_files(data)
    for split in splits:
        name = files[split]
        if name is None:
            continue
        if not (root / name).is_file():
            key = f"data.fold_{split}_ann" if data.get("fold") is not None and split != "test" else f"data.{split}_ann"
            fold_hint = (f" data.fold={data.fold} selects it: the fold files must exist in the root."
                         if key.startswith("data.fold_") else "")
            raise DataConfigError(
                f"The {split} annotation file {(root / name).resolve()} does not exist (data={data.name}, "
                f"data.root={data.root}, {key}={name!r}). Check data.root{env_hint} and {key}.{fold_hint} "
                "`python -m detect.train data=demo` runs without any download."
            )
    return root


def build_dataset(data: DictConfig, split: str, train: bool, classes: list[str] | None = None,
                  categories: list[dict] | None = None, float_output: bool = True) -> CocoDetection:
    """The data set of `split`. `classes` (e.g. the training set's) fixes the label order; by
    default it is `data.classes`, or the json's categories when that is null. `categories` stand in
    for a json that lists none (a test file of image entries only)."""
    root = check_root(data, [split])
    ann = annotation_files(data)[split]
    # float_output=False (training on a GPU): uint8 images, converted to float on the GPU (move_to).
    transforms = detection_transforms(data.hflip_prob if train else 0.0, float_output=float_output)
    if classes is None and data.get("classes") is not None:
        classes = list(data.classes)
    # Checked once here (detect.data.validate), for training and detect.test alike: the image files
    # must exist, broken boxes are dropped (an error with data.strict=true) or clipped, one log line.
    # An unreadable image at load time is an error, or with data.skip_bad_images=true replaced by the
    # next readable one (training) / a black image under its own id (val/test: counted as missed).
    dataset = CocoDetection(root, root / ann, classes=classes, transforms=transforms,
                            keep_empty=not train or bool(data.get("train_keep_empty", False)),
                            fallback_categories=categories, strict=bool(data.get("strict", False)),
                            check_files=True,
                            on_bad_image=("error" if not data.get("skip_bad_images", False)
                                          else "substitute" if train else "blank"))
    if len(dataset) == 0:
        report = dataset.report
        raise DataConfigError(
            f"{root / ann} has no usable images for {split}: {report.images} images, {report.kept} usable boxes "
            f"({report.dropped} dropped, see the log line above); images without boxes are left out of training "
            "unless data.train_keep_empty=true. Check the file's 'images' and 'annotations'."
        )
    return dataset


def seed_worker(worker_id: int) -> None:
    """Give python's and numpy's RNG in each loader worker a seed derived from torch's (seeded) one,
    for transforms that use them (ours draw from the per-image seed, see detect/data/samplers.py).
    Workers ignore Ctrl-C: the terminal signals the whole process group, and the main process stops
    cleanly after the current step, then shuts the workers down itself. (SIGTERM keeps its default:
    the loader's shutdown terminates workers with it; a group SIGTERM that kills them mid-batch is
    handled by the training loop.)"""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset: CocoDetection, batch_size: int, train: bool, workers: int, seed: int,
                 pin_memory: bool = False, persistent_workers: bool = False, group_by_aspect_ratio: bool = True,
                 rank: int = 0, world_size: int = 1) -> DataLoader:
    """The training loader (seeded shuffled batches, grouped by aspect ratio, this rank's share; call
    `loader.batch_sampler.set_epoch(e)` before each epoch) or the evaluation loader (this rank's
    images in order). See detect/data/samplers.py."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    common = dict(
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=generator,  # seeds the workers' python/numpy RNGs (augmentation has per-image seeds)
        pin_memory=pin_memory,
        # Keeping workers across epochs saves their start-up (and the data set's copy) every epoch;
        # augmentation seeds travel with the batches, so this does not change the results.
        persistent_workers=persistent_workers and workers > 0,
    )
    if train:
        groups = aspect_ratio_groups(dataset.aspect_ratios()) if group_by_aspect_ratio else None
        sampler = TrainBatchSampler(len(dataset), batch_size, seed, groups, rank=rank, world_size=world_size)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                      drop_last=False, **common)
