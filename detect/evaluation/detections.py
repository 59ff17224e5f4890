"""Detections files as the file commands read and write them: submission CSVs (label = 0-based
class index, image_id = file_name) and COCO results json (category_id), per image as `Detections`
with 0-based labels. Used by detect.ensemble and detect.error_analysis. numpy only: no torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from detect.errors import DetectError
from detect.evaluation.fusion import Detections, coco_results
from detect.evaluation.submission import (
    SubmissionError,
    label_index,
    parse_groups,
    prediction_string,
    read_rows,
    write_submission,
)
from detect.inputs import read_json


class DetectionsFileError(DetectError, ValueError):
    """A detections file that does not fit its images file; the message names the file and the line."""


def read_detections(path: Path, images: list[dict], category_ids: list[int],
                    images_name: str = "the images file") -> dict[int, Detections]:
    """{image id: Detections with labels 0..K-1} of a submission CSV or a COCO results json.
    `images` (with `category_ids`, class k = category_ids[k]) is the image list the file predicts;
    `images_name` names it in messages ("--gt val.json")."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            groups = _csv_groups(path, images, len(category_ids) or None, images_name)
        else:
            groups = _json_groups(path, images, category_ids, images_name)
    except SubmissionError as err:
        raise DetectionsFileError(str(err)) from None
    except OSError as err:
        raise DetectionsFileError(f"{path} cannot be read: {err}.") from None
    out = {}
    for image_id, rows in groups.items():
        arr = np.array(rows, dtype=float).reshape(-1, 6)
        out[image_id] = Detections(arr[:, 2:6], arr[:, 1], arr[:, 0].astype(np.int64))
    return out


def _csv_groups(path: Path, images: list[dict], num_classes: int | None, images_name: str) -> dict[int, list]:
    by_id: dict[int, list[tuple]] = {img["id"]: [] for img in images}
    id_of_file = {img["file_name"]: img["id"] for img in images}
    for line, text, image_id in read_rows(path):
        where = f"{path} line {line}"
        if text is None or image_id not in id_of_file:
            raise DetectionsFileError(f"{where}: image_id {image_id!r} is not a file_name of {images_name} "
                                      "(check the file with python -m detect.check_submission).")
        try:
            parsed = parse_groups(text)
        except ValueError as err:  # a PredictionString that does not parse
            raise DetectionsFileError(f"{where}: {err} (check it with python -m detect.check_submission).") from None
        for label, *rest in parsed:
            by_id[id_of_file[image_id]].append((label_index(label, num_classes, where), *rest))
    return by_id


def _json_groups(path: Path, images: list[dict], category_ids: list[int], images_name: str) -> dict[int, list]:
    if not category_ids:
        raise DetectionsFileError(f"{path} is a COCO results file, but {images_name} lists no categories to map "
                                  "its category_id values to classes: give an images file with categories.")
    results = read_json(path)
    what = f"{path} is not a COCO results file (a list of {{image_id, category_id, bbox, score}})"
    if not isinstance(results, list):
        raise DetectionsFileError(f"{what}; a ground-truth json is not an input.")
    by_id: dict[int, list[tuple]] = {img["id"]: [] for img in images}
    label_of = {cat: k for k, cat in enumerate(category_ids)}
    for n, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise DetectionsFileError(f"{what}: entry {n} is {str(r)[:80]}.")
        if r["image_id"] not in by_id or r["category_id"] not in label_of:
            raise DetectionsFileError(f"{path}: result for image {r['image_id']} category {r['category_id']} is not "
                                      f"in {images_name}.")
        numbers = [r["score"], *r["bbox"]] if isinstance(r["bbox"], list) and len(r["bbox"]) == 4 else None
        if numbers is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise DetectionsFileError(f"{path}: entry {n} (image {r['image_id']}) has score {r['score']!r} and bbox "
                                      f"{r['bbox']!r}: a score and 4 box numbers must be finite numbers.")
        x, y, w, h = r["bbox"]
        by_id[r["image_id"]].append((label_of[r["category_id"]], r["score"], x, y, x + w, y + h))
    return by_id


def write_detections(path: Path, per_image: dict[int, Detections], images: list[dict],
                     category_ids: list[int]) -> None:
    """A submission CSV or a COCO results json, by the suffix of `path`."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        rows = []
        for img in images:
            det = per_image[img["id"]]
            groups = [(label, score, *box) for box, score, label in zip(det.boxes, det.scores, det.labels)]
            rows.append([prediction_string(groups), img["file_name"]])
        write_submission(path, rows)
    else:
        if not category_ids:
            raise DetectionsFileError(f"{path}: a COCO results file needs categories in the images file; "
                                      "write a .csv instead.")
        path.write_text(json.dumps(coco_results(per_image, category_ids)) + "\n")


def score_table(val: dict, named: list[tuple[str, dict[int, Detections]]], category_ids: list[int]) -> str:
    """mAP, mAP50, mAP75 of each (name, detections) on the ground truth `val`, one line each."""
    from detect.evaluation.coco_metrics import evaluate_boxes

    classes = [c["name"] for c in sorted(val["categories"], key=lambda c: c["id"])]
    width = max(len(name) for name, _ in named)
    lines = [f"{'input':<{width}}  bbox_mAP  bbox_mAP_50  bbox_mAP_75", "-" * (width + 37)]
    for name, per_image in named:
        m = evaluate_boxes(val, coco_results(per_image, category_ids), classes, category_ids)
        lines.append(f"{name:<{width}}  {m['bbox_mAP']:8.4f}  {m['bbox_mAP_50']:11.4f}  {m['bbox_mAP_75']:11.4f}")
    return "\n".join(lines)
