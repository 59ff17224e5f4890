"""Fuse the detections of several models (ensembles) or of several views of one image (TTA).

All functions work on one image at a time: each input is a `Detections` (boxes Nx4 xyxy in pixels,
scores N, labels N). Methods:
- `wbf`: weighted boxes fusion (Solovyev et al. 2021, as in the `ensemble-boxes` package): boxes of
  one label are taken by descending (weighted) score; a box joins the first cluster whose fused box
  overlaps it with IoU > iou_thr, else starts a cluster. A cluster's box is the score-weighted mean
  of its boxes; its score the mean score, scaled by min(number of inputs, cluster size) / sum of
  weights, so a box found by only some inputs ends lower than one all inputs agree on.
- `nms`: all boxes together, per-label non-maximum suppression at iou_thr (the best box survives).
- `soft_nms`: per-label Gaussian soft-NMS (Bodla et al. 2017, sigma 0.5): overlapping boxes are
  down-weighted by exp(-IoU^2 / sigma) instead of removed; boxes that fall below skip_thr go.
Boxes scoring below skip_thr are dropped first. Weights: WBF multiplies scores by the input's
weight and divides by the sum of weights at the end (as ensemble-boxes does; tests check that our
WBF gives the same boxes and scores); NMS and soft-NMS multiply scores by weight / max weight, so
scores stay in [0, 1] and equal weights keep them as they are (ensemble-boxes divides by the sum
instead: the same ranking, other numbers). One input is returned as it is (nothing to fuse).
numpy only: the ensemble command starts at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("wbf", "nms", "soft_nms")
SOFT_NMS_SIGMA = 0.5


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy pixels, scores (N,), labels (N,) ints."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def sorted(self, max_detections: int | None = None) -> Detections:
        order = np.argsort(-self.scores, kind="stable")[:max_detections]
        return Detections(self.boxes[order], self.scores[order], self.labels[order])


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of `boxes` (an empty area gives IoU 0)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _weighted_inputs(inputs: list[Detections], weights: list[float], skip_thr: float) -> Detections:
    boxes, scores, labels = [], [], []
    for det, weight in zip(inputs, weights):
        keep = det.scores >= skip_thr
        boxes.append(det.boxes[keep])
        scores.append(det.scores[keep] * weight)
        labels.append(det.labels[keep])
    return Detections(np.concatenate(boxes).reshape(-1, 4).astype(float), np.concatenate(scores).astype(float),
                      np.concatenate(labels).astype(np.int64))


def weighted_boxes_fusion(inputs: list[Detections], weights: list[float], iou_thr: float,
                          skip_thr: float) -> Detections:
    pool = _weighted_inputs(inputs, weights, skip_thr)
    out_boxes, out_scores, out_labels = [], [], []
    for label in np.unique(pool.labels):
        mask = pool.labels == label
        boxes, scores = pool.boxes[mask], pool.scores[mask]
        order = np.argsort(-scores, kind="stable")
        clusters: list[list[int]] = []
        fused = np.zeros((0, 4))
        for i in order:
            if len(fused):
                ious = iou_one_to_many(boxes[i], fused)
                best = int(np.argmax(ious))
                if ious[best] > iou_thr:
                    clusters[best].append(i)
                    members = clusters[best]
                    fused[best] = (scores[members, None] * boxes[members]).sum(0) / scores[members].sum()
                    continue
            clusters.append([i])
            fused = np.vstack([fused, boxes[i]])
        for box, members in zip(fused, clusters):
            mean_score = scores[members].mean()
            out_boxes.append(box)
            out_scores.append(mean_score * min(len(weights), len(members)) / sum(weights))
            out_labels.append(label)
    if not out_scores:
        return Detections.empty()
    return Detections(np.array(out_boxes), np.array(out_scores), np.array(out_labels, dtype=np.int64)).sorted()


def non_maximum_suppression(inputs: list[Detections], weights: list[float], iou_thr: float,
                            skip_thr: float) -> Detections:
    pool = _weighted_inputs(inputs, [w / max(weights) for w in weights], skip_thr).sorted()
    keep = []
    for label in np.unique(pool.labels):
        idx = np.flatnonzero(pool.labels == label)  # already by descending score
        while len(idx):
            keep.append(idx[0])
            idx = idx[1:][iou_one_to_many(pool.boxes[idx[0]], pool.boxes[idx[1:]]) <= iou_thr]
    keep = np.array(sorted(keep), dtype=np.int64)
    return Detections(pool.boxes[keep], pool.scores[keep], pool.labels[keep]).sorted()


def soft_nms(inputs: list[Detections], weights: list[float], iou_thr: float, skip_thr: float,
             sigma: float = SOFT_NMS_SIGMA) -> Detections:
    """Gaussian soft-NMS; `iou_thr` is unused by the Gaussian rule (every overlap decays the score)."""
    pool = _weighted_inputs(inputs, [w / max(weights) for w in weights], skip_thr)
    out_boxes, out_scores, out_labels = [], [], []
    floor = max(skip_thr, 1e-3)  # boxes decayed below this are dropped (else every box survives)
    for label in np.unique(pool.labels):
        mask = pool.labels == label
        boxes, scores = pool.boxes[mask].copy(), pool.scores[mask].copy()
        while len(scores):
            top = int(np.argmax(scores))
            out_boxes.append(boxes[top])
            out_scores.append(scores[top])
            out_labels.append(label)
            boxes, scores = np.delete(boxes, top, 0), np.delete(scores, top)
            if len(scores):
                scores = scores * np.exp(-(iou_one_to_many(out_boxes[-1], boxes) ** 2) / sigma)
                keep = scores >= floor
                boxes, scores = boxes[keep], scores[keep]
    if not out_scores:
        return Detections.empty()
    return Detections(np.array(out_boxes), np.array(out_scores), np.array(out_labels, dtype=np.int64)).sorted()


def fuse(inputs: list[Detections], method: str = "wbf", weights: list[float] | None = None,
         iou_thr: float = 0.55, skip_thr: float = 0.0, max_detections: int | None = None) -> Detections:
    """Fuse one image's detections from several inputs (see the module docstring for the methods)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    weights = [1.0] * len(inputs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(inputs):
        raise ValueError(f"{len(weights)} weights for {len(inputs)} inputs: give one weight per input")
    if not all(w > 0 for w in weights):
        raise ValueError(f"weights {weights} must all be > 0 (leave an input out rather than weigh it 0)")
    if not 0 < iou_thr <= 1:
        raise ValueError(f"iou_thr={iou_thr} must be in (0, 1]")
    if len(inputs) == 1:
        return inputs[0].sorted(max_detections)
    fused = {"wbf": weighted_boxes_fusion, "nms": non_maximum_suppression, "soft_nms": soft_nms}[method](
        inputs, weights, iou_thr, skip_thr)
    return fused.sorted(max_detections)


def coco_results(per_image: dict[int, Detections], category_of) -> list[dict]:
    """COCO results (bbox xywh pixels, 2 decimals; score 5 decimals, as the trainer's evaluation writes
    them) from per-image detections; `category_of[label]` is the json category id of a label."""
    results = []
    for image_id, det in per_image.items():
        for (x1, y1, x2, y2), score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            results.append({"image_id": image_id, "category_id": int(category_of[int(label)]),
                            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                            "score": round(float(score), 5)})
    return results
