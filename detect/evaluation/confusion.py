"""Confusion matrix of a detector: which class a box was predicted as against what it really is.

Pure numpy. Layout (as Ultralytics' confusion matrix): rows are the predicted class, columns the
true class, both in class order with one extra index K for "background":
- a detection matched to a ground-truth box adds 1 at [its predicted class, the box's class]
  (on the diagonal when the class is right, off it when the model confused two classes);
- a ground-truth box no detection matched adds 1 at [background, its class] (a miss);
- a detection that matched no box adds 1 at [its class, background] (a false alarm).
So the matrix sums to (ground-truth boxes) + (unmatched detections).

Matching ignores the class (that is what lets confusions show): per image, every pair of a
ground-truth box and a detection scoring at least `score_thr` whose IoU is at least `iou_thr` is a
candidate; pairs are taken by decreasing IoU, each box and each detection at most once.
Crowd boxes (iscrowd=1) are left out; detections of categories outside `category_ids` too.
"""

from __future__ import annotations

import numpy as np

from detect.evaluation.matching import box_iou


def _xyxy(boxes: list) -> np.ndarray:
    """COCO xywh boxes (pixels) -> (N, 4) xyxy."""
    out = np.asarray(boxes, dtype=float).reshape(-1, 4).copy()
    out[:, 2:] += out[:, :2]
    return out


def match_by_iou(iou: np.ndarray, iou_thr: float) -> list[tuple[int, int]]:
    """One-to-one (gt, detection) pairs from an (G, D) IoU matrix: candidates with IoU >= iou_thr,
    taken by decreasing IoU."""
    gt_idx, det_idx = np.nonzero(iou >= iou_thr)
    order = np.argsort(-iou[gt_idx, det_idx], kind="stable")
    used_gt, used_det, pairs = set(), set(), []
    for g, d in zip(gt_idx[order].tolist(), det_idx[order].tolist()):
        if g not in used_gt and d not in used_det:
            used_gt.add(g)
            used_det.add(d)
            pairs.append((g, d))
    return pairs


def confusion_matrix(ground_truth: dict, detections: list[dict], category_ids: list[int],
                     score_thr: float = 0.25, iou_thr: float = 0.5) -> np.ndarray:
    """(K + 1, K + 1) int64 counts, rows = predicted, columns = true; index K is background.

    ground_truth: a COCO dict; detections: COCO results ({image_id, category_id, bbox xywh, score});
    category_ids[k]: the json category id of class k.
    """
    index_of = {int(cat): k for k, cat in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)

    gt_of_image: dict = {img["id"]: [] for img in ground_truth.get("images", [])}
    for ann in ground_truth.get("annotations", []):
        if not ann.get("iscrowd", 0) and int(ann["category_id"]) in index_of and ann["image_id"] in gt_of_image:
            gt_of_image[ann["image_id"]].append(ann)
    det_of_image: dict = {image_id: [] for image_id in gt_of_image}
    for det in detections:
        if det["image_id"] not in det_of_image:
            raise ValueError(f"a detection is on image {det['image_id']!r}, which the ground truth does not list")
        if det["score"] >= score_thr and int(det["category_id"]) in index_of:
            det_of_image[det["image_id"]].append(det)

    for image_id, gts in gt_of_image.items():
        dets = det_of_image[image_id]
        gt_class = [index_of[int(a["category_id"])] for a in gts]
        det_class = [index_of[int(d["category_id"])] for d in dets]
        iou = box_iou(_xyxy([a["bbox"] for a in gts]), _xyxy([d["bbox"] for d in dets]))
        pairs = match_by_iou(iou, iou_thr)
        for g, d in pairs:
            matrix[det_class[d], gt_class[g]] += 1
        matched_gt = {g for g, _ in pairs}
        matched_det = {d for _, d in pairs}
        for g, cls in enumerate(gt_class):
            if g not in matched_gt:
                matrix[background, cls] += 1
        for d, cls in enumerate(det_class):
            if d not in matched_det:
                matrix[cls, background] += 1
    return matrix


def normalize_columns(matrix: np.ndarray) -> np.ndarray:
    """Each column divided by its sum (the share of each true class's boxes per predicted row);
    an empty column stays 0."""
    totals = matrix.sum(axis=0, keepdims=True).astype(float)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
