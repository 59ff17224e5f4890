"""Error analysis: which predictions are true positives, which false positives (and of which kind),
which ground-truth boxes are missed, per image and per class; which images are worst. The rules are
in detect/evaluation/matching.py; detect/plots/errors.py draws the result and `python -m
detect.error_analysis` is the command. numpy only: no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.errors import DetectError
from detect.evaluation.detections import DetectionsFileError, read_detections
from detect.evaluation.fusion import Detections
from detect.evaluation.matching import FP_KINDS, ImageMatch, match_image
from detect.evaluation.submission import SubmissionError, class_category_ids


class ErrorAnalysisError(DetectError, ValueError):
    """A missing or inconsistent input; the message names it and says what to do."""


@dataclass
class GroundTruth:
    """One image's gt: boxes (G, 4) xyxy pixels, labels (G,) 0-based class indices, crowd (G,) bools."""

    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray


def load_ground_truth(coco: dict, gt_path: Path, classes: list[str] | None = None
                      ) -> tuple[list[dict], list[str], list[int], dict[int, GroundTruth]]:
    """(images, class names, category ids, {image id: GroundTruth}); class k = the k-th of `classes`
    (names) when given, else the k-th category by id."""
    if not isinstance(coco, dict) or not coco.get("images") or not coco.get("categories"):
        raise ErrorAnalysisError(f"--gt {gt_path} is not a COCO ground-truth file with images and categories.")
    try:
        category_ids = class_category_ids(coco["categories"], classes)
    except SubmissionError as err:
        raise ErrorAnalysisError(f"--classes: {err}") from None
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    categories = [{"id": cat, "name": name_of[cat]} for cat in category_ids]
    label_of = {cat: k for k, cat in enumerate(category_ids)}
    rows: dict[int, list[tuple]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco.get("annotations") or []:
        if not {"image_id", "category_id", "bbox"} <= set(ann):
            raise ErrorAnalysisError(f"--gt {gt_path}: annotation {ann} lacks image_id, category_id or bbox.")
        if ann["image_id"] not in rows or ann["category_id"] not in label_of:
            raise ErrorAnalysisError(f"--gt {gt_path}: annotation {ann.get('id')} names image {ann['image_id']} or "
                                     f"category {ann['category_id']}, which the file does not list.")
        x, y, w, h = ann["bbox"]
        rows[ann["image_id"]].append((x, y, x + w, y + h, label_of[ann["category_id"]], ann.get("iscrowd", 0)))
    gts = {}
    for image_id, anns in rows.items():
        arr = np.array(anns, dtype=float).reshape(-1, 6)
        gts[image_id] = GroundTruth(arr[:, :4], arr[:, 4].astype(np.int64), arr[:, 5] > 0)
    return coco["images"], [c["name"] for c in categories], category_ids, gts


def read_predictions(path: Path, images: list[dict], category_ids: list[int], gt_path: Path) -> dict[int, Detections]:
    """{image id: Detections} of a COCO results json or a submission CSV, checked against --gt."""
    try:
        return read_detections(path, images, category_ids, images_name=f"--gt {gt_path.name}")
    except DetectionsFileError as err:
        raise ErrorAnalysisError(f"{err} Predictions of another split (e.g. test.json) cannot be checked "
                                 f"against {gt_path.name}.") from None


def match_all(gts: dict[int, GroundTruth], dets: dict[int, Detections], iou_thr: float,
              score_thr: float) -> dict[int, ImageMatch]:
    return {image_id: match_image(gt.boxes, gt.labels, dets[image_id].boxes, dets[image_id].scores,
                                  dets[image_id].labels, iou_thr, score_thr, gt.crowd)
            for image_id, gt in gts.items()}


def rank_images(images: list[dict], matches: dict[int, ImageMatch]) -> list[dict]:
    """All images, worst first: most FP + FN, then lower recall, then file name."""
    return sorted(images, key=lambda img: (-matches[img["id"]].num_errors, matches[img["id"]].recall,
                                           img["file_name"]))


def find_images(tokens: list[str], images: list[dict], gt_path: Path) -> list[dict]:
    """The images that --images names (file_name, id, or a unique base name), in the order given."""
    by_name = {img["file_name"]: img for img in images}
    by_id = {str(img["id"]): img for img in images}
    by_base: dict[str, list[dict]] = {}
    for img in images:
        by_base.setdefault(Path(img["file_name"]).name, []).append(img)
    chosen, unknown = [], []
    for token in tokens:
        img = by_name.get(token) or by_id.get(token)
        if img is None and len(by_base.get(token, [])) == 1:
            img = by_base[token][0]
        if img is None:
            unknown.append(token)
        elif img not in chosen:
            chosen.append(img)
    if unknown:
        example = images[0]
        raise ErrorAnalysisError(f"--images: {', '.join(unknown)} is not a file_name or an image id of --gt "
                                 f"{gt_path.name} (e.g. {example['file_name']} or {example['id']}).")
    return chosen


def class_table(class_names: list[str], gts: dict[int, GroundTruth], dets: dict[int, Detections],
                matches: dict[int, ImageMatch]) -> str:
    """Per-class TP / FP (by kind) / FN over all images, with precision and recall, and a total row."""
    k = len(class_names)
    counts = {name: np.zeros(k, np.int64) for name in ("gt", "tp", "fn", *FP_KINDS)}
    for image_id, match in matches.items():
        gt, det = gts[image_id], dets[image_id]
        np.add.at(counts["gt"], gt.labels[~gt.crowd], 1)
        np.add.at(counts["tp"], det.labels[match.tp], 1)
        np.add.at(counts["fn"], gt.labels[match.fn], 1)
        for p, kind in zip(match.fp, match.fp_kinds):
            counts[kind][det.labels[p]] += 1
    fp = sum(counts[kind] for kind in FP_KINDS)
    width = max(len("class"), *(len(n) for n in class_names))
    head = f"{'class':<{width}}  {'gt':>6} {'TP':>6} {'FP':>6} {'FN':>6} {'prec':>6} {'recall':>6}  " + "  ".join(
        FP_KINDS)
    lines = [head, "-" * len(head)]
    rows = [(name, slice(i, i + 1)) for i, name in enumerate(class_names)] + [("all", slice(None))]
    for name, sel in rows:
        tp_, fp_, fn_, gt_ = (int(a[sel].sum()) for a in (counts["tp"], fp, counts["fn"], counts["gt"]))
        prec = f"{tp_ / (tp_ + fp_):.3f}" if tp_ + fp_ else "-"
        rec = f"{tp_ / (tp_ + fn_):.3f}" if tp_ + fn_ else "-"
        kinds = "  ".join(f"{int(counts[kind][sel].sum()):>{len(kind)}}" for kind in FP_KINDS)
        if name == "all":
            lines.append("-" * len(head))
        lines.append(f"{name:<{width}}  {gt_:>6} {tp_:>6} {fp_:>6} {fn_:>6} {prec:>6} {rec:>6}  {kinds}")
    return "\n".join(lines)
