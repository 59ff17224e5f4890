"""Pseudo-labels: the confident boxes of a submission CSV as a COCO annotation file, optionally merged
into a training file.

    python -m detect.pseudo_labels submission.csv /path/to/trash/test.json --score-thr 0.5 --out pseudo.json
    python -m detect.pseudo_labels submission.csv test.json --merge-into train.json --out train_pseudo.json

- The CSV's labels are class indices: label k is class k of `--classes` (the run dir that wrote
  the CSV, or comma-separated names), by default the k-th category (sorted by id) of `--categories`,
  which defaults to the `--merge-into` file, else test.json (a test.json without categories needs it).
- Kept: boxes scoring >= --score-thr; images left without a box are left out (they would teach
  "nothing here" for objects the model merely missed). Each annotation gets `area`, `iscrowd: 0`
  and `score` (its confidence, for weighting or auditing).
- With --merge-into the test images and boxes are appended to a copy of that file with fresh ids
  (above its largest image and annotation ids: no collisions); an image whose file_name is already
  in it is an error. The file named by --out is never an input and is not overwritten unless
  --overwrite is given. Train on the result with `data.train_ann=train_pseudo.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detect.errors import DetectError
from detect.evaluation.submission import (
    SubmissionError,
    class_category_ids,
    classes_option,
    label_index,
    parse_groups,
    read_rows,
)


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
        for label, score, x1, y1, x2, y2 in parse_groups(text):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect.pseudo_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="a submission CSV (python -m detect.test mode=predict)")
    parser.add_argument("test_json", help="the test.json it predicts")
    parser.add_argument("--out", required=True, help="the COCO json to write")
    parser.add_argument("--score-thr", type=float, default=0.5, help="keep boxes scoring at least this (0.5)")
    parser.add_argument("--merge-into", help="a training file to append the pseudo-labels to (written to --out)")
    parser.add_argument("--categories", help="json whose categories give the class order (default: --merge-into, "
                                             "else test.json)")
    parser.add_argument("--classes", help="class order of the CSV labels: the run dir that wrote it, or comma-"
                                          "separated names (default: the categories sorted by id)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        inputs = [Path(p).resolve() for p in (args.csv, args.test_json, args.merge_into, args.categories) if p]
        if out.resolve() in inputs:
            raise PseudoLabelError(f"--out {out} is one of the inputs: write the result to a new file.")
        if out.exists() and not args.overwrite:
            raise PseudoLabelError(f"{out} exists; pass --overwrite to replace it, or choose another --out.")
        test_coco = json.loads(Path(args.test_json).read_text())
        train = json.loads(Path(args.merge_into).read_text()) if args.merge_into else None
        source = args.categories or args.merge_into or args.test_json
        categories = (json.loads(Path(source).read_text()) if source != args.merge_into else train).get("categories")
        if not categories:
            raise PseudoLabelError(f"{source} lists no categories: pass --categories train.json (the class order).")
        pseudo = pseudo_label_coco(Path(args.csv), test_coco, categories, args.score_thr,
                                   classes_option(args.classes))
        result = merge_into(train, pseudo) if train is not None else pseudo
    except (OSError, json.JSONDecodeError, SubmissionError, PseudoLabelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n")
    what = f"merged into a copy of {args.merge_into}" if train is not None else "pseudo-labels only"
    print(f"Wrote {out}: {len(pseudo['annotations'])} boxes (score >= {args.score_thr}) on {len(pseudo['images'])} "
          f"of {len(test_coco['images'])} test images, {what}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
