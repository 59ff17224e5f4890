"""A COCO-format detection data set that yields what torchvision's detectors take."""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file

from detect.data.pipeline import AugmentPipeline
from detect.data.transforms import detection_transforms
from detect.data.validate import check_categories, log_report, validate_coco
from detect.errors import DataConfigError

log = logging.getLogger("detect")


def load_coco_json(path: Path) -> dict:
    """Read a COCO annotation file, naming the file and position when it is not valid JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataConfigError(f"The annotation file {path.resolve()} does not exist. Check data.root and the "
                              "data.*_ann file names.") from None
    except (UnicodeDecodeError, IsADirectoryError) as err:
        raise DataConfigError(f"{path} is not a JSON text file ({err}). Point data.*_ann at the COCO json.") from None
    # json.loads creates millions of small objects for a large file, and the garbage collector would
    # rescan them all many times over (a third of the load time for 1M annotations): pause it meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataConfigError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} "
                              f"(character {err.pos}). Fix the file (was it cut short or hand-edited?).") from err
    finally:
        if gc_was_enabled:
            gc.enable()


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A 16-bit image (PNG) as 8 bits: its top byte. The pipeline, the GPU conversion and the drawings
    all expect 0..255; kept as uint16 it would be clipped to white."""
    if image.dtype == torch.uint16:
        return (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def resolve_classes(coco: dict, classes: list[str] | None, ann_file: Path,
                    fallback_categories: list[dict] | None = None,
                    classes_source: str = "data.classes") -> tuple[list[str], dict[int, int]]:
    """Return the class names and a map category_id -> contiguous label 1..K (0 is background).

    With `classes` given, the json's category names must match them (any order of ids);
    without, the classes are the json's categories sorted by id. A json without categories (a
    competition's test file may list only images) takes `fallback_categories` (the training run's).
    `classes_source` says where `classes` came from, for the message (data.classes, the training file).
    """
    raw = (coco.get("categories") if isinstance(coco, dict) else None) or fallback_categories or []
    if not isinstance(raw, list):
        raise DataConfigError(f"{ann_file}: 'categories' is a {type(raw).__name__}, not a list. Fix the json.")
    check_categories(raw, ann_file)
    categories = sorted(raw, key=lambda c: c["id"])
    json_names = [c["name"] for c in categories]
    if classes is None:
        classes = json_names
    classes = list(classes)
    if dup := sorted({name for name in classes if classes.count(name) > 1}):
        raise DataConfigError(f"data.classes lists {dup} more than once: {classes}. Each class name once, please.")
    if sorted(json_names) != sorted(classes):
        fix = ("Fix data.classes (or set data.classes=null to take the json's categories)."
               if classes_source == "data.classes" else
               f"Give {ann_file.name} the same category names as {classes_source} (the ids may differ).")
        raise DataConfigError(
            f"The categories of {ann_file} do not match the classes of {classes_source}: "
            f"{len(classes)} configured, {len(json_names)} in the json.\n"
            f"{side_by_side(classes, json_names)}\n"
            f"  configured  ({len(classes)}): {classes}\n"
            f"  in the json ({len(json_names)}): {json_names}\n"
            + fix
        )
    label_of_category = {c["id"]: classes.index(c["name"]) + 1 for c in categories}
    return classes, label_of_category


def side_by_side(configured: list[str], in_json: list[str]) -> str:
    """Two columns, configured (label order) vs the json's (id order); `*` marks a name missing
    from the other list."""
    width = max([len("configured"), *(len(n) + 2 for n in configured)])
    rows = [f"  {'configured':<{width}}  in the json (by id)"]
    for i in range(max(len(configured), len(in_json))):
        left = (configured[i] + ("" if configured[i] in in_json else " *")) if i < len(configured) else "-"
        right = (in_json[i] + ("" if in_json[i] in configured else " *")) if i < len(in_json) else "-"
        rows.append(f"  {left:<{width}}  {right}")
    only_cfg = [n for n in configured if n not in in_json]
    only_json = [n for n in in_json if n not in configured]
    rows.append(f"  * only configured: {only_cfg}; only in the json: {only_json}")
    return "\n".join(rows)


BAD_IMAGE_POLICIES = ("error", "substitute", "blank")


class CocoDetection(Dataset):
    """Images and boxes of one COCO annotation file.

    Item: (image, target). image: float tensor 3xHxW in [0, 1] (uint8 with transforms built with
    float_output=False, for a GPU to convert); target: `boxes` (Nx4 float, xyxy,
    pixels), `labels` (N int64, 1..K), `image_id` (int, the json's id). Crowd boxes are left out of
    the targets. Images are decoded with torchvision.io (libjpeg-turbo/libpng, no PIL) and go through
    `transforms` (detect.data.transforms; default: conversion to float only).

    The key is an index, or `(index, seed[, epoch])` from the training batch sampler
    (detect.data.samplers): the transforms then draw their randomness from a generator seeded with
    `seed`, so an image is augmented the same way whatever the worker count, with persistent
    workers, and after a resume.

    The json is checked once on construction (`detect.data.validate`): what cannot be repaired is a
    DataConfigError; boxes that are not 4 finite numbers, have no area or lie outside the image are
    dropped (an error with `strict=True`), boxes partly outside are clipped; one log line counts
    them (`self.report`). `coco` stays the unmodified json (the evaluation's ground truth);
    `annotations` (image id -> list of annotation dicts) holds the cleaned ones used for targets.
    `keep_empty=False` leaves out images without a (non-crowd) box. `check_files=True` requires every
    listed image file to exist under `root` (one directory listing per folder).

    `on_bad_image` says what an image that cannot be decoded at load time does:
    `error` (DataConfigError naming the file); `substitute` (training: the next readable index
    takes its place, so the epoch keeps its length and the loader cannot hang or shrink);
    `blank` (evaluation/prediction: a black image of the json's size under the same image id, so
    its boxes count as missed and the submission keeps its row). Both log a warning naming the
    file, once per file and loader process (loader workers are fresh each epoch, so once an epoch).
    """

    def __init__(self, root: str | Path, ann_file: str | Path, classes: list[str] | None = None,
                 transforms=None, keep_empty: bool = True, fallback_categories: list[dict] | None = None,
                 strict: bool = False, check_files: bool = False, on_bad_image: str = "error",
                 classes_source: str = "data.classes"):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r}: use one of {BAD_IMAGE_POLICIES}")
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.coco = load_coco_json(self.ann_file)
        if not isinstance(self.coco, dict):
            raise DataConfigError(f"{self.ann_file} holds a JSON {type(self.coco).__name__}, not a COCO object with "
                                  "'images', 'annotations' and 'categories'. Point data.*_ann at a COCO file.")
        self.classes, self.label_of_category = resolve_classes(self.coco, classes, self.ann_file,
                                                               fallback_categories, classes_source)
        self.category_of_label = {label: cat for cat, label in self.label_of_category.items()}
        self.transforms = transforms if transforms is not None else detection_transforms()
        self.on_bad_image = on_bad_image
        cleaned, self.report = validate_coco(self.coco, self.ann_file, self.label_of_category,
                                             root=self.root if check_files else None, strict=strict,
                                             keep_empty=keep_empty)
        log_report(self.report)
        boxes_of_image: dict[int, list[dict]] = {img["id"]: [] for img in self.coco["images"]}
        for ann in cleaned:
            boxes_of_image[ann["image_id"]].append(ann)
        self.images = [img for img in self.coco["images"]
                       if keep_empty or any(not a.get("iscrowd", 0) for a in boxes_of_image[img["id"]])]
        self.annotations = boxes_of_image
        self.bad_images: set[int] = set()  # indexes found unreadable by this process

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> dict:
        info = self.images[index]
        boxes, labels = [], []
        for ann in self.annotations.get(info["id"], []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of_category[ann["category_id"]])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": info["id"],
        }

    def read_image(self, index: int) -> torch.Tensor | None:
        """The decoded image (uint8 3xHxW); None when it cannot be read and the policy is not `error`."""
        info = self.images[index]
        path = self.root / info["file_name"]
        try:
            # (The decoder returns a channels-last view; making it contiguous here would double the
            # per-image cost in the workers, ~2 ms at 640 px, for ~0.5% of a CPU training step.)
            return to_uint8(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
        except (RuntimeError, OSError, ValueError) as err:
            if self.on_bad_image == "error":
                raise DataConfigError(
                    f"Cannot read image {path} (image id {info['id']} of {self.ann_file.name}): {err}. Replace or "
                    "remove the file (or its entry in the json), or set data.skip_bad_images=true to skip it "
                    "(logged)."
                ) from err
            if index not in self.bad_images:
                self.bad_images.add(index)
                what = ("training uses the next readable image in its place" if self.on_bad_image == "substitute"
                        else "it is evaluated as a black image: its boxes count as missed")
                log.warning("Cannot read image %s (image id %s of %s): %s. data.skip_bad_images=true: %s "
                            "(%d unreadable so far in this loader process).", path, info["id"], self.ann_file.name,
                            err, what, len(self.bad_images))
            return None

    def aspect_ratios(self) -> list[float | None]:
        """width / height of each image from the json (None where the json gives no size)."""
        ratios = []
        for info in self.images:
            width, height = info.get("width"), info.get("height")
            ok = isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0
            ratios.append(width / height if ok else None)
        return ratios

    def load_sample(self, index: int) -> tuple[tv_tensors.Image, dict]:
        """Image `index` as decoded (uint8 Image) and its target (`boxes` as BoundingBoxes, xyxy pixels),
        before any transform; an unreadable image is stood in for as data.skip_bad_images says."""
        image = self.read_image(index) if index not in self.bad_images else None
        if image is None and self.on_bad_image == "substitute":
            # A deterministic stand-in (the next readable index), so every epoch has its full length.
            for step in range(1, len(self.images)):
                candidate = (index + step) % len(self.images)
                if candidate not in self.bad_images and (image := self.read_image(candidate)) is not None:
                    index = candidate
                    break
            else:
                raise DataConfigError(f"None of the {len(self.images)} images of {self.ann_file} can be read "
                                      f"(e.g. {self.root / self.images[index]['file_name']}). Check data.root and "
                                      "the image files.")
        elif image is None:  # blank: same id, the json's size
            info = self.images[index]
            height, width = int(info.get("height") or 32), int(info.get("width") or 32)
            image = torch.zeros((3, height, width), dtype=torch.uint8)
        target = self.target(index)
        target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=image.shape[-2:])
        return tv_tensors.Image(image), target

    def __getitem__(self, key: int | tuple[int, int] | tuple[int, int, int]):
        """`index`, or the training sampler's `(index, augmentation seed, epoch)` (detect/data/samplers.py;
        `(index, seed)` means epoch 0): the transforms run on torch's RNG seeded with the seed."""
        index, seed, epoch = (key + (0,))[:3] if isinstance(key, tuple) else (key, None, 0)
        if seed is None:
            return self.transform(*self.load_sample(index), epoch)
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
            torch.manual_seed(seed)
            # Inside: mosaic's and mixup's other images are picked on the same seeded RNG.
            return self.transform(*self.load_sample(index), epoch)

    def transform(self, image: tv_tensors.Image, target: dict, epoch: int):
        if isinstance(self.transforms, AugmentPipeline):  # may read other images (mosaic) and the epoch
            return self.transforms(image, target, source=self, epoch=epoch)
        return self.transforms(image, target)


def collate(batch):
    """Keep images and targets as lists: the detector batches (and pads) them itself."""
    images, targets = zip(*batch)
    return list(images), list(targets)
