"""COCO box evaluation under MMDetection's metric names, plus per-class AP.

The numbers are pycocotools' (COCO + COCOeval, iouType "bbox"), bit for bit, computed with
faster-coco-eval: its C++ matching and accumulation gives the same per-image matches and recalls,
and the same precisions but in one case, which `_match_pycocotools_precision` repairs (see there).
tests/test_fast_coco_eval.py checks all 12 stats and the whole precision array against pycocotools;
benchmarks/eval_speed.py measures the gain.

Per-class AP is read from COCOeval's `precision` array, shaped [T, R, K, A, M]: T IoU thresholds
0.50:0.05:0.95, R recall points, K categories, A area ranges (0 = all), M max-detection settings
(-1 = 100). IoU index 0 gives AP50. A class without ground truth has only -1 entries: reported as
None (null in JSON), never NaN.

The ground truth is indexed once per ground-truth dict, not once per call (the trainer scores the
same `dataset.coco` every epoch): see `_indexed_ground_truth`.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

SUMMARY_KEYS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]

# pycocotools' precision after a single counted detection that is a true positive: tp / (fp + tp + eps)
# with tp = 1, fp = 0, i.e. 0.9999999999999998; faster-coco-eval's C++ divides without eps and gets 1.0.
_ONE_OF_ONE_PRECISION = 1.0 / (1.0 + np.spacing(1))
_CACHE_SIZE = 4  # ground-truth dicts kept indexed (train + val + test sets fit)


def _quiet(*args, **kwargs) -> None:
    """faster-coco-eval's print_function: its progress lines and summary table are not wanted here."""


@dataclass
class _IndexedGroundTruth:
    """A ground-truth dict indexed for faster-coco-eval, with what is needed to trust and use it again.

    snapshot: a deep copy of the caller's dict when it was indexed; the index is reused only while
        the caller's dict still equals it, so edits made in place between calls are never missed.
    coco: the index, over per-annotation copies of the snapshot with COCO's defaults filled in
        (faster-coco-eval writes an "ignore" flag into them on every evaluation; the caller's dicts
        never see it).
    areas: category id -> areas (pixels²) of the non-crowd boxes of the indexed images, to count the
        boxes each area range scores (COCOeval's npig).
    """

    snapshot: dict
    coco: COCO
    areas: dict[int, np.ndarray]

    @classmethod
    def build(cls, ground_truth: dict) -> _IndexedGroundTruth:
        snapshot = copy.deepcopy(ground_truth)
        dataset = dict(snapshot)
        if "images" in snapshot:
            dataset["images"] = [dict(img) for img in snapshot["images"]]
        if "categories" in snapshot:
            dataset["categories"] = [dict(cat) for cat in snapshot["categories"]]
        annotations = []
        for ann in snapshot.get("annotations", []):
            # Fields pycocotools needs but many exports leave out get their COCO defaults.
            ann = dict(ann)
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            annotations.append(ann)
        if "annotations" in snapshot:
            dataset["annotations"] = annotations
        coco = COCO(dataset, print_function=_quiet)  # indexes `dataset` itself, no copy
        areas: dict[int, list[float]] = {}
        for ann in annotations:  # COCOeval only scores boxes of listed images; crowds are ignored
            if ann["image_id"] in coco.imgs and not int(ann["iscrowd"]):
                areas.setdefault(ann["category_id"], []).append(float(ann["area"]))
        return cls(snapshot, coco, {cat: np.asarray(a, dtype=float) for cat, a in areas.items()})

    def valid_counts(self, category_ids: list[int], area_ranges: list[list[float]]) -> np.ndarray:
        """[K, A] number of ground-truth boxes COCOeval counts (npig) per category and area range
        [lo, hi] in pixels² (lo <= area <= hi, as COCOeval's ignore test)."""
        counts = np.zeros((len(category_ids), len(area_ranges)), dtype=np.int64)
        for k, cat in enumerate(category_ids):
            areas = self.areas.get(int(cat))
            if areas is not None:
                counts[k] = [np.count_nonzero((areas >= lo) & (areas <= hi)) for lo, hi in area_ranges]
        return counts


_cache: OrderedDict[int, _IndexedGroundTruth] = OrderedDict()


def _indexed_ground_truth(ground_truth: dict) -> _IndexedGroundTruth:
    """The index of `ground_truth`, built on the first call and reused while the dict is unchanged.

    Keyed by id(): a dict cannot be weakly referenced, and a recycled id is harmless since an entry
    is only used when the caller's dict equals its snapshot (a C-level comparison, ~1 ms for 6000
    boxes, against ~0.1 s for a deep copy and index). Contents that cannot be compared (e.g. numpy
    arrays) are indexed afresh every call.
    """
    key = id(ground_truth)
    entry = _cache.get(key)
    if entry is not None:
        try:
            unchanged = bool(entry.snapshot == ground_truth)
        except (TypeError, ValueError):  # e.g. numpy arrays inside: truth value is ambiguous
            unchanged = False
        if unchanged:
            _cache.move_to_end(key)
            return entry
    entry = _IndexedGroundTruth.build(ground_truth)
    _cache[key] = entry
    _cache.move_to_end(key)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return entry


def _results(detections: list[dict], gt: COCO) -> COCO:
    """The detections as a COCO result index: pycocotools' loadRes for boxes (area = w * h, ids 1..N in
    list order, iscrowd 0) on new dicts, so that the caller's detections are never written to. Boxes and
    scores become Python floats (exact, as pycocotools' own float64 arrays); the area is computed on the
    values as given, as loadRes does."""
    annotations = []
    for i, det in enumerate(detections, start=1):
        if det["image_id"] not in gt.imgs:
            raise ValueError(f"detection {i - 1} is on image {det['image_id']!r}, which the ground truth does "
                             "not list (pycocotools: 'Results do not correspond to current coco set')")
        x, y, w, h = det["bbox"]
        annotations.append({"id": i, "image_id": det["image_id"], "category_id": det["category_id"],
                            "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                            "score": float(det["score"]), "iscrowd": 0})
    dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset.get("categories", []),
               "annotations": annotations}
    return COCO(dataset, print_function=_quiet)


def _match_pycocotools_precision(precision: np.ndarray, num_recall: int, npig: np.ndarray) -> np.ndarray:
    """pycocotools' precision array from faster-coco-eval's, which was accumulated with one probe recall
    threshold 1.5 / npig per (category, area range) after the `num_recall` standard ones.

    The two differ only where the first counted detection of a precision-recall curve is a true
    positive: pycocotools' tp / (fp + tp + eps) there is 1 / (1 + eps), the C++ tp / (fp + tp) is 1.0
    (for fp + tp >= 2 adding eps does not change the float). After the right-to-left maximum this
    shows iff the second counted detection is no true positive; then every 1.0 on that curve comes
    from the first detection and is pycocotools' 1 / (1 + eps). Whether the second is a true positive
    is read from the probe: the interpolated precision at recall 1.5 / npig is taken from the first
    point with two true positives and is 1.0 exactly when that point has counted two detections.

    precision: [T, R + P, K, A, M] as accumulated; npig: [K, A]. Returns [T, R, K, A, M].
    """
    probes = np.unique(1.5 / npig[npig > 0])
    out = np.array(precision[:, :num_recall], dtype=float)  # a copy: the slices below are edited in place
    for k, a in zip(*np.nonzero(npig)):
        probe = num_recall + int(np.searchsorted(probes, 1.5 / npig[k, a]))
        one_leading_tp = precision[:, probe, k, a, :] != 1.0  # [T, M]
        curve = out[:, :, k, a, :]  # [T, R, M] view
        curve[(curve == 1.0) & one_leading_tp[:, None, :]] = _ONE_OF_ONE_PRECISION
    return out


def _evaluate(ground_truth: dict, detections: list[dict], category_ids: list[int]) -> tuple[np.ndarray, np.ndarray,
                                                                                             list[int]]:
    """COCOeval "bbox" of `detections` on `ground_truth` for `category_ids`. Returns the 12 summary stats,
    the precision array [T, R, K, A, M] and the category id of each K column (sorted, as COCOeval)."""
    gt = _indexed_ground_truth(ground_truth)
    # print_function=_quiet: no progress lines nor summary table. Defaults everywhere else
    # (separate_eval, lvis_style, extra_calc off): COCO's bbox protocol, as pycocotools.
    coco_eval = COCOeval_faster(gt.coco, _results(detections, gt.coco), iouType="bbox", print_function=_quiet)
    params = coco_eval.params
    params.catIds = sorted({int(c) for c in category_ids})  # COCOeval sorts them too (np.unique)
    standard = np.asarray(params.recThrs)
    npig = gt.valid_counts(params.catIds, params.areaRng)
    # Each recall threshold is sampled independently: the probes leave the standard 101 untouched.
    params.recThrs = np.concatenate([standard, np.unique(1.5 / npig[npig > 0])])
    coco_eval.evaluate()
    coco_eval.accumulate()
    precision = _match_pycocotools_precision(np.asarray(coco_eval.eval["precision"]), len(standard), npig)
    params.recThrs = standard
    coco_eval.eval["precision"] = precision
    coco_eval.summarize()  # the same means as pycocotools' summarize, over the repaired array
    return np.asarray(coco_eval.stats, dtype=float), precision, [int(c) for c in params.catIds]


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_boxes(ground_truth: dict, detections: list[dict], class_names: list[str],
                   category_ids: list[int]) -> dict:
    """Score COCO-format `detections` ({image_id, category_id, bbox xywh pixels, score}) against
    the COCO dict `ground_truth`. Neither argument is modified.

    `category_ids[i]` is the json category id of `class_names[i]`; detections of other categories
    are not scored. Returns the SUMMARY_KEYS (floats in [0, 1]; -1 where COCO has nothing to score,
    e.g. no small objects) and `classwise`: {name: {"AP": float | None, "AP50": float | None}}.
    """
    stats, precision, column_cats = _evaluate(ground_truth, detections, category_ids)
    result = {key: float(stats[i]) for i, key in enumerate(SUMMARY_KEYS)}
    # COCOeval sorts catIds: column k belongs to the k-th smallest id, not to class_names[k].
    column_of = {cat: k for k, cat in enumerate(column_cats)}
    classwise = {}
    for name, cat in zip(class_names, category_ids):
        k = column_of[int(cat)]
        classwise[name] = {
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[0, :, k, 0, -1]),
        }
    result["classwise"] = classwise
    return result


def precision_recall_iou50(ground_truth: dict, detections: list[dict], class_names: list[str],
                           category_ids: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """The precision-recall curve of each class at IoU 0.5, as COCOeval interpolates it (all areas,
    100 detections per image): the 101 recall points 0, 0.01, ..., 1 and, per class, the precision
    at each (0 past the highest recall reached; None for a class without ground truth). The mean of
    a class's curve is its AP50 in `evaluate_boxes`, exactly."""
    _, precision, column_cats = _evaluate(ground_truth, detections, category_ids)
    column_of = {cat: k for k, cat in enumerate(column_cats)}
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    curves = {}
    for name, cat in zip(class_names, category_ids):
        curve = precision[0, :, column_of[int(cat)], 0, -1]
        curves[name] = None if (curve <= -1).all() else np.asarray(curve, dtype=float)
    return recall, curves


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
