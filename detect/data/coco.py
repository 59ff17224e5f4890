"""A COCO-format detection data set that yields what torchvision's detectors take."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from detect.errors import DataConfigError


def load_coco_json(path: Path) -> dict:
    """Read a COCO annotation file, naming the file and position when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataConfigError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.") from err


def resolve_classes(coco: dict, classes: list[str] | None, ann_file: Path,
                    fallback_categories: list[dict] | None = None) -> tuple[list[str], dict[int, int]]:
    """Return the class names and a map category_id -> contiguous label 1..K (0 is background).

    With `classes` given, the json's category names must match them (any order of ids);
    without, the classes are the json's categories sorted by id. A json without categories (a
    competition's test file may list only images) takes `fallback_categories` (the training run's).
    """
    categories = sorted(coco.get("categories") or fallback_categories or [], key=lambda c: c["id"])
    json_names = [c["name"] for c in categories]
    if classes is None:
        classes = json_names
    classes = list(classes)
    if sorted(json_names) != sorted(classes):
        raise DataConfigError(
            f"The categories of {ann_file} do not match the configured classes (data.classes).\n"
            f"  in the json ({len(json_names)}): {json_names}\n"
            f"  configured  ({len(classes)}): {classes}\n"
            "Fix data.classes (or set data.classes=null to take the json's categories)."
        )
    label_of_category = {c["id"]: classes.index(c["name"]) + 1 for c in categories}
    return classes, label_of_category


class CocoDetection(Dataset):
    """Images and boxes of one COCO annotation file.

    Item: (image, target). image: float tensor 3xHxW in [0, 1]; target: `boxes` (Nx4 float, xyxy,
    pixels), `labels` (N int64, 1..K), `image_id` (int, the json's id). Crowd boxes and boxes
    without area are left out of the targets (they are still in the json for evaluation).
    """

    def __init__(self, root: str | Path, ann_file: str | Path, classes: list[str] | None = None,
                 transforms=None, keep_empty: bool = True, fallback_categories: list[dict] | None = None):
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.coco = load_coco_json(self.ann_file)
        self.classes, self.label_of_category = resolve_classes(self.coco, classes, self.ann_file,
                                                               fallback_categories)
        self.category_of_label = {label: cat for cat, label in self.label_of_category.items()}
        self.transforms = transforms
        boxes_of_image: dict[int, list[dict]] = {img["id"]: [] for img in self.coco["images"]}
        for ann in self.coco.get("annotations", []):
            if ann["category_id"] not in self.label_of_category:
                raise DataConfigError(
                    f"{self.ann_file}: annotation {ann['id']} has category_id {ann['category_id']}, which is not "
                    f"among the file's categories {sorted(self.label_of_category)}. Fix the annotation or add the "
                    "category."
                )
            boxes_of_image.setdefault(ann["image_id"], []).append(ann)
        self.images = [img for img in self.coco["images"] if keep_empty or boxes_of_image[img["id"]]]
        self.annotations = boxes_of_image

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> dict:
        info = self.images[index]
        boxes, labels = [], []
        for ann in self.annotations.get(info["id"], []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of_category[ann["category_id"]])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": info["id"],
        }

    def __getitem__(self, index: int):
        info = self.images[index]
        path = self.root / info["file_name"]
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as err:
            raise DataConfigError(f"Cannot read image {path} (image id {info['id']}): {err}") from err
        image = image.float().div_(255)
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch):
    """Keep images and targets as lists: the detector batches (and pads) them itself."""
    images, targets = zip(*batch)
    return list(images), list(targets)
