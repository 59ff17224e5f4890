"""Match one image's predictions to its ground truth and name each error (for error analysis).

Pure numpy. Boxes are (N, 4) xyxy in pixels; labels are 0-based class indices. See `match_image`
for the rule (COCO-style greedy matching at one IoU threshold) and the kinds of false positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FP_KINDS = ("wrong class", "localisation", "duplicate", "background")
LOCALISATION_MIN_IOU = 0.1  # below this a same-class overlap does not count as a badly placed box


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes a (N, 4) and b (M, 4); an empty union gives 0."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _indices(values=()) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass
class ImageMatch:
    """One image's matching. All fields are index arrays into the inputs of `match_image`.

    tp / tp_gt: true-positive predictions (by descending score) and the gt box each one matched;
    fp / fp_kinds: false-positive predictions (by descending score) and their kind (one of FP_KINDS);
    fn: missed gt boxes (crowd boxes are never missed);
    ignored: predictions that fall on a crowd region of their class (neither TP nor FP).
    Predictions scoring below the threshold are in none of the lists.
    """

    tp: np.ndarray = field(default_factory=_indices)
    tp_gt: np.ndarray = field(default_factory=_indices)
    fp: np.ndarray = field(default_factory=_indices)
    fp_kinds: list[str] = field(default_factory=list)
    fn: np.ndarray = field(default_factory=_indices)
    ignored: np.ndarray = field(default_factory=_indices)

    @property
    def num_errors(self) -> int:
        """False positives plus misses: what `--worst` ranks images by."""
        return len(self.fp) + len(self.fn)

    @property
    def recall(self) -> float:
        """TP / (TP + FN) of this image; 1.0 when it has no (non-crowd) ground truth."""
        found = len(self.tp) + len(self.fn)
        return len(self.tp) / found if found else 1.0

    def fp_counts(self) -> dict[str, int]:
        """{kind: number of false positives of that kind}, every kind of FP_KINDS present."""
        return {kind: self.fp_kinds.count(kind) for kind in FP_KINDS}


def match_image(gt_boxes: np.ndarray, gt_labels: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray,
                pred_labels: np.ndarray, iou_thr: float = 0.5, score_thr: float = 0.0,
                gt_crowd: np.ndarray | None = None) -> ImageMatch:
    """Greedy COCO-style matching of one image's predictions to its ground truth.

    gt_boxes (G, 4) and pred_boxes (P, 4) are xyxy pixels; gt_labels (G,), pred_labels (P,) class
    indices; pred_scores (P,); gt_crowd (G,) bools (default: no crowd boxes).

    Predictions with score >= score_thr are taken by descending score (ties keep input order). Each
    one matches the unmatched, non-crowd gt box of its own class with which it has the highest IoU,
    if that IoU >= iou_thr: a true positive. Otherwise, as COCOeval does, a prediction whose
    intersection covers >= iou_thr of its own area inside a crowd box of its class is ignored.
    Every other prediction is a false positive of the first kind that fits:
    - "duplicate": a gt box of its class overlaps it with IoU >= iou_thr, but a higher-scoring
      prediction already matched that box;
    - "wrong class": a gt box of another class overlaps it with IoU >= iou_thr;
    - "localisation": a gt box of its class overlaps it with LOCALISATION_MIN_IOU <= IoU < iou_thr;
    - "background": anything else (no gt box it could have meant).
    Non-crowd gt boxes left unmatched are misses (false negatives).
    """
    gt_boxes = np.asarray(gt_boxes, float).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1).astype(np.int64)
    pred_boxes = np.asarray(pred_boxes, float).reshape(-1, 4)
    pred_scores = np.asarray(pred_scores, float).reshape(-1)
    pred_labels = np.asarray(pred_labels).reshape(-1).astype(np.int64)
    crowd = np.zeros(len(gt_boxes), bool) if gt_crowd is None else np.asarray(gt_crowd, bool).reshape(-1)

    keep = np.flatnonzero(pred_scores >= score_thr)
    order = keep[np.argsort(-pred_scores[keep], kind="stable")]
    ious = box_iou(pred_boxes, gt_boxes)  # (P, G)
    pred_area = np.maximum(_area(pred_boxes), 1e-12)
    covered = _intersection(pred_boxes, gt_boxes) / pred_area[:, None]  # share of the prediction inside each gt
    matched = np.zeros(len(gt_boxes), bool)
    tp, tp_gt, fp, fp_kinds, ignored = [], [], [], [], []
    for p in order:
        same = gt_labels == pred_labels[p]
        candidates = same & ~crowd & ~matched
        if candidates.any():
            best = int(np.argmax(np.where(candidates, ious[p], -1.0)))
            if ious[p, best] >= iou_thr:
                matched[best] = True
                tp.append(p)
                tp_gt.append(best)
                continue
        if (same & crowd & (covered[p] >= iou_thr)).any():
            ignored.append(p)
            continue
        real = ~crowd
        if (same & real & matched & (ious[p] >= iou_thr)).any():
            kind = "duplicate"
        elif (~same & real & (ious[p] >= iou_thr)).any():
            kind = "wrong class"
        elif (same & real & (ious[p] >= LOCALISATION_MIN_IOU)).any():
            kind = "localisation"
        else:
            kind = "background"
        fp.append(p)
        fp_kinds.append(kind)
    return ImageMatch(tp=_indices(tp), tp_gt=_indices(tp_gt), fp=_indices(fp), fp_kinds=fp_kinds,
                      fn=np.flatnonzero(~matched & ~crowd).astype(np.int64), ignored=_indices(ignored))
