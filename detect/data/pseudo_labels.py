"""Pseudo-labels: the confident boxes of a submission CSV as COCO annotations, and their merge into a
training file under fresh ids. The command is `python -m detect.pseudo_labels` (its docstring gives
the rules). No torch."""

from __future__ import annotations

from pathlib import Path

from detect.errors import DetectError
from detect.evaluation.submission import class_category_ids, label_index, parse_groups, read_rows


class PseudoLabelError(DetectError, ValueError):
    """Input that cannot become pseudo-labels; the message names the file and the fix."""


def pseudo_label_coco(csv_path: Path, test_coco: dict, categories: list[dict], score_thr: float,
                      classes: list[str] | None = None) -> dict:
    """COCO dict of the CSV's boxes scoring >= score_thr, on the test images that keep at least one.
    CSV label k is class k of `classes` (names) if given, else the k-th category sorted by id."""
    category_ids = class_category_ids(categories, classes)
    images_by_file = {img["file_name"]: img for img in test_coco["images"]}
    images, annotations, seen = [], [], {}
    for line, text, file_name in read_rows(csv_path):
        if text is None or file_name not in images_by_file:
            raise PseudoLabelError(f"{csv_path} line {line}: image_id {file_name!r} is not a file_name of test.json "
                                   "(check it with python -m detect.check_submission).")
        if file_name in seen:
            raise PseudoLabelError(f"{csv_path} line {line}: image_id {file_name!r} again (first on line "
                                   f"{seen[file_name]}); check it with python -m detect.check_submission.")
        seen[file_name] = line
        kept = []
        try:
            groups = parse_groups(text)
        except ValueError as err:  # a PredictionString that does not parse
            raise PseudoLabelError(f"{csv_path} line {line}: {err} (check it with python -m "
                                   "detect.check_submission).") from None
        for label, score, x1, y1, x2, y2 in groups:
            label = label_index(label, len(category_ids), f"{csv_path} line {line}")
            if score < score_thr:
                continue
            kept.append({"image_id": images_by_file[file_name]["id"], "category_id": category_ids[label],
                         "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                         "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0, "score": score})
        if kept:
            images.append(images_by_file[file_name])
            annotations += kept
    for ann_id, ann in enumerate(annotations, 1):
        ann["id"] = ann_id
    return {"images": images, "annotations": annotations, "categories": categories}


def merge_into(train: dict, pseudo: dict) -> dict:
    """A copy of `train` with the pseudo images and boxes appended under fresh ids."""
    train_names = {img["file_name"] for img in train["images"]}
    clashes = [img["file_name"] for img in pseudo["images"] if img["file_name"] in train_names]
    if clashes:
        raise PseudoLabelError(f"{len(clashes)} pseudo-labelled image(s) are already in the training file, e.g. "
                               f"{clashes[0]}: pseudo-label images the model has not been trained on.")
    if sorted(c["name"] for c in train["categories"]) != sorted(c["name"] for c in pseudo["categories"]):
        raise PseudoLabelError("The training file's categories differ from the pseudo-labels' categories.")
    next_image = max((img["id"] for img in train["images"]), default=0) + 1
    next_ann = max((ann["id"] for ann in train.get("annotations", [])), default=0) + 1
    new_image_id = {img["id"]: next_image + i for i, img in enumerate(pseudo["images"])}
    merged = {**train, "images": list(train["images"]), "annotations": list(train.get("annotations", []))}
    merged["images"] += [{**img, "id": new_image_id[img["id"]]} for img in pseudo["images"]]
    merged["annotations"] += [{**ann, "id": next_ann + i, "image_id": new_image_id[ann["image_id"]]}
                              for i, ann in enumerate(pseudo["annotations"])]
    return merged
