"""Checks of a COCO annotation file before any GPU time is spent: structure, ids, categories, image
files on disk and boxes. Pure python/numpy over the json dict; nothing on disk is changed.

What is an error and what is repaired (and counted in one log line per file):

- error (DataConfigError naming the file, the ids and the fix): no `images` list, an image or
  annotation without its required keys, duplicate image / annotation / category ids, an annotation
  whose image_id or category_id does not exist, image files listed in the json missing on disk;
- dropped: a bbox that is not 4 finite numbers, a box with zero or negative width or height, a box
  entirely outside its image (all three are errors with `strict=True`);
- clipped: a box partly outside its image is cut to the image (xywh, pixels). Images without a
  width/height in the json are not checked against their size.

Only the training targets are cleaned: the original json (`CocoDetection.coco`) stays the ground
truth of the COCO evaluation, as the competition's scorer reads it.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import itemgetter
from pathlib import Path

import numpy as np

from detect.errors import DataConfigError

log = logging.getLogger("detect")

CLIP_TOLERANCE = 1.0  # pixels: a box overshooting its image by less is rounding (INFO), by more a WARNING
SHOW = 5  # how many ids an error or a log line names before "... (N in all)"
_NUMBER = (int, float)
_SEQUENCE = (list, tuple)
_ID = (int, str)  # id types (exactly: True is not an id)
_REQUIRED = ("id", "image_id", "category_id", "bbox")  # keys of every annotation

# The kinds of dropped boxes: report field -> words used in messages.
DROP_KINDS = {
    "not_finite": "not 4 finite numbers",
    "degenerate": "zero or negative width or height",
    "outside": "entirely outside the image",
}


@dataclass
class ValidationReport:
    """Counts of one annotation file's check. `examples` maps a kind (a DROP_KINDS key or `clipped`)
    to the first few annotation ids of that kind."""

    ann_file: str
    images: int = 0
    annotations: int = 0
    kept: int = 0
    not_finite: int = 0
    degenerate: int = 0
    outside: int = 0
    clipped: int = 0
    clipped_far: int = 0  # of `clipped`, those cut by more than CLIP_TOLERANCE pixels
    images_without_size: int = 0
    empty_images: int = 0
    empty_left_out: int = 0
    examples: dict[str, list] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.not_finite + self.degenerate + self.outside

    def summary(self) -> str:
        """One line for the log, e.g. `train.json: 1781 boxes on 469 images: 3 dropped (...), ...`."""
        parts = []
        if self.dropped:
            kinds = "; ".join(f"{getattr(self, kind)} {words}, e.g. annotation {self.examples[kind][0]}"
                              for kind, words in DROP_KINDS.items() if getattr(self, kind))
            parts.append(f"{self.dropped} dropped ({kinds})")
        if self.clipped:
            far = (f"{self.clipped_far} by more than {CLIP_TOLERANCE:g} px" if self.clipped_far
                   else f"all by less than {CLIP_TOLERANCE:g} px")
            parts.append(f"{self.clipped} partly outside the image clipped to it ({far}), e.g. annotation "
                         f"{self.examples['clipped'][0]}")
        boxes = "; ".join(parts) if parts else "all usable"
        line = f"{self.ann_file}: {self.annotations} boxes on {self.images} images: {boxes}"
        if self.images_without_size:
            line += f"; {self.images_without_size} images have no width/height, their boxes were not clipped"
        if self.empty_left_out:
            line += (f"; {self.empty_left_out} images without boxes left out of training "
                     "(data.train_keep_empty=true keeps them)")
        elif self.empty_images and self.annotations:
            line += f"; {self.empty_images} images without boxes kept"
        if self.dropped:
            line += ". data.strict=true makes dropped boxes an error"
        return line + "."


def _name(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOW])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > SHOW else "")


def _duplicates(values: list) -> list:
    return [value for value, count in Counter(values).items() if count > 1]


def _hashable_id(value) -> bool:
    return type(value) in _ID


def check_categories(categories: list, ann_file: str | Path) -> None:
    """Every category has an `id` and a `name`; ids and names are unique."""
    for pos, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _hashable_id(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataConfigError(
                f"{ann_file}: categories[{pos}] = {cat!r} needs an integer 'id' and a string 'name'. "
                "Fix the category entry in the json.")
    ids = [c["id"] for c in categories]
    if dup := _duplicates(ids):
        raise DataConfigError(f"{ann_file}: duplicate category ids {_name(dup)}. Each category needs its own id: "
                              "fix the 'categories' of the json.")
    names = [c["name"] for c in categories]
    if dup := _duplicates(names):
        raise DataConfigError(
            f"{ann_file}: the category names {dup} appear more than once (ids "
            f"{[c['id'] for c in categories if c['name'] in dup]}). Give each category its own name, or merge "
            "them (and their annotations) into one category.")


def check_image_entries(coco: dict, ann_file: str | Path) -> list[dict]:
    """The `images` list, each with an `id` and a `file_name`, ids unique. Returns it."""
    images = coco.get("images") if isinstance(coco, dict) else None
    if not isinstance(images, list):
        raise DataConfigError(f"{ann_file} has no 'images' list: is it a COCO annotation file? It needs "
                              "'images' (and 'annotations', 'categories' for training).")
    for pos, img in enumerate(images):
        if not isinstance(img, dict) or not _hashable_id(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise DataConfigError(
                f"{ann_file}: images[{pos}] = {img!r} needs an integer 'id' and a string 'file_name' "
                "(relative to data.root). Fix the image entry in the json.")
    if len({img["id"] for img in images}) != len(images):
        dup = _duplicates([img["id"] for img in images])
        files = [img["file_name"] for img in images if img["id"] == dup[0]]
        raise DataConfigError(
            f"{ann_file}: duplicate image ids {_name(dup)} (id {dup[0]!r}: {files}). Each image needs its own id: "
            "renumber the images (and their annotations' image_id).")
    names = [img["file_name"] for img in images]
    if len(set(names)) != len(names):  # one file twice: its boxes split, or two rows of it in submission.csv
        dup = _duplicates(names)
        ids = [img["id"] for img in images if img["file_name"] == dup[0]]
        raise DataConfigError(
            f"{ann_file}: {len(dup)} file_name(s) listed more than once, e.g. {dup[0]!r} (image ids {ids}). Each "
            "image file must appear once: merge the entries (and point their annotations' image_id at one).")
    return images


def check_image_files(images: list[dict], root: str | Path, ann_file: str | Path) -> None:
    """Every image file listed in the json exists under `root`. One directory listing per folder
    (not a stat per file), and paths split as text (normalized once per folder): 20k images in one
    folder take some 35 ms (benchmarks/scale.py)."""
    root = str(root)
    if not os.path.isdir(root):
        raise DataConfigError(f"The image folder {os.path.abspath(root)} does not exist (the file_name entries of "
                              f"{ann_file} are relative to it). Fix data.root.")
    by_folder: dict[str, list[tuple[str, dict]]] = {}
    for img in images:
        folder, _, name = img["file_name"].rpartition("/")
        by_folder.setdefault(folder, []).append((name, img))
    missing = []
    for folder, entries in by_folder.items():
        try:
            present = set(os.listdir(os.path.normpath(os.path.join(root, folder))))
        except OSError:  # the folder itself is missing (or not a folder)
            present = set()
        missing += [img for name, img in entries if name not in present]
    if missing:
        shown = ", ".join(f"{img['file_name']} (image id {img['id']})" for img in missing[:SHOW])
        if len(missing) > SHOW:
            shown += f" and {len(missing) - SHOW} more"
        raise DataConfigError(
            f"{ann_file}: {len(missing)} of {len(images)} image files listed in it do not exist under "
            f"{os.path.abspath(root)}: {shown}. Check data.root (the "
            "file_name entries are relative to it) and that the images were copied completely, or remove "
            "these images from the json.")


def check_image_sizes(images: list[dict], root: str | Path, ann_file: str | Path) -> None:
    """The width and height the json gives match the image file (read from its header, no decoding:
    about 0.1 ms an image). Boxes are checked and clipped against the json's size, so a wrong size
    would keep boxes that lie outside the real image. Images without a size in the json are skipped."""
    from PIL import Image, UnidentifiedImageError

    wrong = []
    for img in images:
        declared = (img.get("width"), img.get("height"))
        if not all(type(v) in _NUMBER and v > 0 for v in declared):
            continue
        try:
            with Image.open(os.path.join(str(root), img["file_name"])) as image:
                actual = image.size
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # unreadable: the data set's own read reports it (or skips it: data.skip_bad_images)
        if tuple(declared) != actual:
            wrong.append((img, declared, actual))
    if wrong:
        shown = ", ".join(f"{img['file_name']} (image id {img['id']}): json {d[0]}x{d[1]}, file {a[0]}x{a[1]}"
                          for img, d, a in wrong[:SHOW])
        more = f" and {len(wrong) - SHOW} more" if len(wrong) > SHOW else ""
        raise DataConfigError(
            f"{ann_file}: {len(wrong)} of {len(images)} images have a width/height that differs from the image "
            f"file: {shown}{more}. Boxes are in the json's pixels, so they would not fit: fix width and height in "
            "the json (or re-export it; a photo's EXIF rotation is a common cause).")


def _image_size(img: dict) -> tuple[float, float]:
    w, h = img.get("width"), img.get("height")
    if type(w) in _NUMBER and type(h) in _NUMBER and w > 0 and h > 0:
        return float(w), float(h)
    return math.nan, math.nan


def _image_sizes(images: list[dict]) -> np.ndarray:
    """(N, 2) width and height of each image in pixels; NaN where the json gives no valid size."""
    widths = [img.get("width") for img in images]
    heights = [img.get("height") for img in images]
    if not (set(map(type, widths)) | set(map(type, heights))).issubset(_NUMBER):  # a null or text: one by one
        return np.array([_image_size(img) for img in images], dtype=np.float64).reshape(-1, 2)
    sizes = np.array([widths, heights], dtype=np.float64).T.reshape(-1, 2)
    sizes[~(sizes > 0).all(axis=1)] = math.nan  # zero, negative or NaN: as if absent
    return sizes


def validate_coco(coco: dict, ann_file: str | Path, label_of_category: dict, *, root: str | Path | None = None,
                  strict: bool = False, keep_empty: bool = True) -> tuple[list[dict], ValidationReport]:
    """Check one COCO dict and clean its boxes for training.

    `label_of_category`: the known category ids (from `resolve_classes`). `root`: when given, the
    image files must exist under it. `keep_empty`: only phrases the log line (how many images
    without boxes training leaves out). Returns the cleaned annotations (the json's own dicts, a copy
    with the clipped xywh `bbox` where one was clipped; dropped boxes left out) and the report.
    Raises DataConfigError for what cannot be repaired, and in `strict` mode for dropped boxes.
    The input dict is never modified.

    Column by column (map, set and numpy passes) rather than a dozen checks per annotation in a python
    loop: 20% less time on a million annotations (benchmarks/scale.py); the messages are the loop's.
    """
    ann_file = str(ann_file)
    images = check_image_entries(coco, ann_file)
    if root is not None:
        check_image_files(images, root, ann_file)
        check_image_sizes(images, root, ann_file)
    annotations = coco.get("annotations") or []
    if not isinstance(annotations, list):
        raise DataConfigError(f"{ann_file}: 'annotations' is a {type(annotations).__name__}, not a list. Fix the json.")
    report = ValidationReport(Path(ann_file).name, images=len(images), annotations=len(annotations))
    index_of_image = {img["id"]: i for i, img in enumerate(images)}

    ann_ids, image_ids, category_ids, bboxes = _columns(annotations, ann_file)
    if len(set(ann_ids)) != len(ann_ids):
        raise DataConfigError(f"{ann_file}: duplicate annotation ids {_name(_duplicates(ann_ids))}. Each annotation "
                              "needs its own id: renumber the annotations.")
    image_pos = list(map(index_of_image.get, image_ids))
    if None in image_pos:
        unknown = [ann for ann, pos in zip(annotations, image_pos) if pos is None]
        raise DataConfigError(
            f"{ann_file}: {len(unknown)} annotations point at image ids that are not in its 'images': "
            + _name([f"annotation {a['id']} -> image_id {a['image_id']!r}" for a in unknown])
            + ". Add the images or remove these annotations (check that the ids have the same type: 7 is not '7').")
    if not set(category_ids).issubset(label_of_category):
        unknown = [ann for ann, cat in zip(annotations, category_ids) if cat not in label_of_category]
        raise DataConfigError(
            f"{ann_file}: {len(unknown)} annotations have a category_id that is not among the file's "
            f"categories {sorted(label_of_category)}: "
            + _name([f"annotation {a['id']} -> category_id {a['category_id']!r}" for a in unknown])
            + ". Fix these annotations or add the category.")

    # Well-formed boxes (a list of 4 int/float) go to numpy; the others are "not 4 finite numbers".
    shaped = [type(b) in _SEQUENCE and len(b) == 4 for b in bboxes]
    values = list(chain.from_iterable(compress(bboxes, shaped)))
    if not set(map(type, values)).issubset(_NUMBER):  # a string, null or bool inside some box: find them
        shaped = [ok and all(type(v) in _NUMBER for v in b) for ok, b in zip(shaped, bboxes)]
        values = list(chain.from_iterable(compress(bboxes, shaped)))
    well = np.array(shaped, dtype=bool)
    well_pos = np.flatnonzero(well)  # positions in `annotations` of the rows of xywh

    # The arithmetic, vectorized: xywh -> finite? positive size? inside the image (clip)?
    xywh = np.fromiter(values, dtype=np.float64, count=len(values)).reshape(-1, 4)
    sizes = _image_sizes(images)
    report.images_without_size = int(np.isnan(sizes[:, 0]).sum())
    wh = sizes[np.array(image_pos, dtype=np.int64)[well]] if len(well_pos) else np.zeros((0, 2))
    finite = np.isfinite(xywh).all(axis=1)
    positive = finite & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    x1, y1 = xywh[:, 0], xywh[:, 1]
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    known = ~np.isnan(wh[:, 0])
    cx1 = np.where(known, np.clip(x1, 0, wh[:, 0]), x1)
    cy1 = np.where(known, np.clip(y1, 0, wh[:, 1]), y1)
    cx2 = np.where(known, np.clip(x2, 0, wh[:, 0]), x2)
    cy2 = np.where(known, np.clip(y2, 0, wh[:, 1]), y2)
    inside = positive & (cx2 > cx1) & (cy2 > cy1)
    clipped = inside & ((cx1 != x1) | (cy1 != y1) | (cx2 != x2) | (cy2 != y2))

    def ids_of(rows: np.ndarray) -> list:  # annotation ids of rows of xywh
        return [ann_ids[i] for i in well_pos[rows].tolist()]

    malformed = [ann_ids[i] for i in np.flatnonzero(~well).tolist()]
    dropped = {"not_finite": malformed + ids_of(~finite), "degenerate": ids_of(finite & ~positive),
               "outside": ids_of(positive & ~inside)}
    for kind, kind_ids in dropped.items():
        setattr(report, kind, len(kind_ids))
        if kind_ids:
            report.examples[kind] = kind_ids[:SHOW]
    report.clipped = int(clipped.sum())
    overshoot = np.maximum.reduce([cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2]) if len(xywh) else np.zeros(0)
    far = clipped & (overshoot > CLIP_TOLERANCE)
    report.clipped_far = int(far.sum())
    if report.clipped:  # name a far one first: that is the one worth looking at
        report.examples["clipped"] = (ids_of(far) + ids_of(clipped & ~far))[:SHOW]
    if strict and report.dropped:
        found = "; ".join(f"{len(v)} {DROP_KINDS[k]}: annotation {_name(v)}" for k, v in dropped.items() if v)
        raise DataConfigError(
            f"{ann_file}: {report.dropped} boxes cannot be used ({found}). bbox is [x, y, width, height] in "
            "pixels with width and height > 0, inside the image. Fix or remove these annotations, or set "
            "data.strict=false to drop them (counted in the log).")

    kept_rows = np.flatnonzero(inside)
    cleaned = [annotations[i] for i in well_pos[kept_rows].tolist()]
    for k in np.flatnonzero(clipped[kept_rows]).tolist():  # a copy with the clipped box: the json stays as it was
        j = kept_rows[k]
        cleaned[k] = {**cleaned[k], "bbox": [float(cx1[j]), float(cy1[j]), float(cx2[j] - cx1[j]),
                                             float(cy2[j] - cy1[j])]}
    report.kept = len(cleaned)
    with_boxes = {ann["image_id"] for ann in cleaned if not ann.get("iscrowd", 0)}
    report.empty_images = len(images) - len(with_boxes)
    report.empty_left_out = 0 if keep_empty else report.empty_images
    return cleaned, report


def _columns(annotations: list, ann_file: str) -> tuple[list, list, list, list]:
    """(ids, image_ids, category_ids, bboxes) of the annotations, ids checked to be int or str.
    DataConfigError naming the first annotation without a required key or with an id of another type."""
    try:
        columns = tuple(list(map(itemgetter(key), annotations)) for key in _REQUIRED)
        fine = all(set(map(type, ids)).issubset(_ID) for ids in columns[:3])
    except (KeyError, TypeError):  # a key is missing, or an annotation is not a dict
        fine = False
    if fine:
        return columns
    for pos, ann in enumerate(annotations):  # the first bad one, for the message
        lacking = [k for k in _REQUIRED if k not in ann] if isinstance(ann, dict) else list(_REQUIRED)
        if lacking:
            raise DataConfigError(
                f"{ann_file}: annotations[{pos}] (id {ann.get('id') if isinstance(ann, dict) else None}) has no "
                f"{', '.join(repr(k) for k in lacking)}. Every annotation needs 'id', 'image_id', 'category_id' "
                "and 'bbox' ([x, y, width, height] in pixels): fix or remove it.")
        if any(type(ann[key]) not in _ID for key in _REQUIRED[:3]):
            raise DataConfigError(
                f"{ann_file}: annotations[{pos}] has an id that is not an integer (or a string): id {ann['id']!r}, "
                f"image_id {ann['image_id']!r}, category_id {ann['category_id']!r}. Fix the annotation.")
    raise AssertionError("unreachable: a column failed its check but no annotation did")


def log_report(report: ValidationReport) -> None:
    """One line per file: a WARNING when boxes were dropped or clipped by more than CLIP_TOLERANCE
    pixels, else INFO."""
    level = logging.WARNING if report.dropped or report.clipped_far else logging.INFO
    log.log(level, "Data check: %s", report.summary())
