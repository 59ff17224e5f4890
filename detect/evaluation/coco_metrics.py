"""COCO box evaluation (pycocotools) under MMDetection's metric names, plus per-class AP.

Per-class AP is read from COCOeval's `precision` array, shaped [T, R, K, A, M]: T IoU thresholds
0.50:0.05:0.95, R recall points, K categories, A area ranges (0 = all), M max-detection settings
(-1 = 100). IoU index 0 gives AP50. A class without ground truth has only -1 entries: reported as
None (null in JSON), never NaN.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SUMMARY_KEYS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


def _coco_from_dict(dataset: dict) -> COCO:
    """A COCO index over a copy of `dataset` (COCOeval writes into the annotation dicts). Fields
    that pycocotools needs but many exports leave out get their COCO defaults."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    for ann in coco.dataset.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_boxes(ground_truth: dict, detections: list[dict], class_names: list[str],
                   category_ids: list[int]) -> dict:
    """Score COCO-format `detections` ({image_id, category_id, bbox xywh pixels, score}) against
    the COCO dict `ground_truth`.

    `category_ids[i]` is the json category id of `class_names[i]`. Returns the SUMMARY_KEYS
    (floats in [0, 1]; -1 where COCO has nothing to score, e.g. no small objects) and `classwise`:
    {name: {"AP": float | None, "AP50": float | None}}.
    """
    gt = _coco_from_dict(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            dt = gt.loadRes(copy.deepcopy(detections))
        else:  # loadRes refuses an empty list; an empty result set scores 0 (and -1 where COCO has no GT)
            dt = _coco_from_dict({"images": ground_truth["images"], "annotations": [],
                                  "categories": ground_truth["categories"]})
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.params.catIds = [int(c) for c in category_ids]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = coco_eval.stats
    result = {key: float(stats[i]) for i, key in enumerate(SUMMARY_KEYS)}
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    # COCOeval sorts params.catIds: column k belongs to the k-th smallest id, not to class_names[k].
    column_of = {cat: k for k, cat in enumerate(coco_eval.params.catIds)}
    classwise = {}
    for name, cat in zip(class_names, category_ids):
        k = column_of[int(cat)]
        classwise[name] = {
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[0, :, k, 0, -1]),
        }
    result["classwise"] = classwise
    return result


def format_classwise_table(metrics: dict) -> str:
    """A fixed-width table: one row per class with AP and AP50, then the overall mean row."""
    classwise = metrics["classwise"]
    width = max([len("mean (bbox_mAP)")] + [len(name) for name in classwise])

    def cell(value: float | None) -> str:
        return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.3f}"

    lines = [f"{'class':<{width}} | {'AP':>6} | {'AP50':>6}", f"{'-' * width}-+--------+-------"]
    for name, ap in classwise.items():
        lines.append(f"{name:<{width}} | {cell(ap['AP'])} | {cell(ap['AP50'])}")
    lines.append(f"{'-' * width}-+--------+-------")
    lines.append(f"{'mean (bbox_mAP)':<{width}} | {cell(metrics['bbox_mAP'])} | {cell(metrics['bbox_mAP_50'])}")
    return "\n".join(lines)
