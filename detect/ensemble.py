"""Fuse several submissions (CSV) or COCO results files into one, and score them side by side on val.

    python -m detect.ensemble a/submission.csv b/submission.csv --images test.json --out fused.csv
    python -m detect.ensemble a.csv b.csv c.csv --weights 2 1 1 --method wbf --iou-thr 0.6 --skip-thr 0.01 \\
        --val val.json --out fused_val.csv

Inputs may mix submission CSVs (label = 0-based class index) and COCO results json files
(`category_id`); label k is the k-th class of `--classes` (a run dir, whose `data.classes` order
detect.test wrote, or comma-separated names), by default the k-th category of the images file sorted
by id (the order of `data.classes: null`; for the trash data, ids 0..9 in the competition's order). `--images` (the
test.json or val.json the inputs were predicted on) gives the image list, order and sizes; with
`--val <val.json>` (ground truth) it defaults to that file, and every input and the fused result
are evaluated and printed in one table: tune weights and thresholds on val, not on the leaderboard.
The output is a CSV or a COCO results json, by the suffix of `--out`. See detect/evaluation/fusion.py
for the methods (wbf, nms, soft_nms). numpy and pycocotools only: no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from detect.errors import DetectError
from detect.evaluation.fusion import METHODS, Detections, coco_results, fuse
from detect.evaluation.submission import (
    SubmissionError,
    class_category_ids,
    classes_option,
    label_index,
    parse_groups,
    prediction_string,
    read_rows,
    write_submission,
)


class EnsembleError(DetectError, ValueError):
    """An input that does not fit the images file or the other inputs; the message names it."""


def read_detections(path: Path, images: list[dict], category_ids: list[int]) -> dict[int, Detections]:
    """{image id: Detections with 0-based labels} of a submission CSV or a COCO results json."""
    by_id: dict[int, list[tuple]] = {img["id"]: [] for img in images}
    if path.suffix.lower() == ".csv":
        id_of_file = {img["file_name"]: img["id"] for img in images}
        for line, text, image_id in read_rows(path):
            if text is None or image_id not in id_of_file:
                raise EnsembleError(f"{path} line {line}: image_id {image_id!r} is not a file_name of the images "
                                    "file (check the file with python -m detect.check_submission).")
            for label, *rest in parse_groups(text):
                where = f"{path} line {line}"
                by_id[id_of_file[image_id]].append((label_index(label, len(category_ids) or None, where), *rest))
    else:
        if not category_ids:
            raise EnsembleError(f"{path} is a COCO results file, but the images file lists no categories to map "
                                "its category_id values to classes: give --images a json with categories.")
        label_of = {cat: k for k, cat in enumerate(category_ids)}
        results = json.loads(path.read_text())
        if not isinstance(results, list):
            raise EnsembleError(f"{path} is not a COCO results file (a list of {{image_id, category_id, bbox, "
                                "score}}); a ground-truth json is not an input.")
        for r in results:
            if r["image_id"] not in by_id or r["category_id"] not in label_of:
                raise EnsembleError(f"{path}: result for image {r['image_id']} category {r['category_id']} is not in "
                                    "the images file.")
            x, y, w, h = r["bbox"]
            by_id[r["image_id"]].append((label_of[r["category_id"]], r["score"], x, y, x + w, y + h))
    out = {}
    for image_id, groups in by_id.items():
        arr = np.array(groups, dtype=float).reshape(-1, 6)
        out[image_id] = Detections(arr[:, 2:6], arr[:, 1], arr[:, 0].astype(np.int64))
    return out


def write_output(path: Path, per_image: dict[int, Detections], images: list[dict], category_ids: list[int]) -> None:
    if path.suffix.lower() == ".csv":
        rows = []
        for img in images:
            det = per_image[img["id"]]
            groups = [(label, score, *box) for box, score, label in zip(det.boxes, det.scores, det.labels)]
            rows.append([prediction_string(groups), img["file_name"]])
        write_submission(path, rows)
    else:
        if not category_ids:
            raise EnsembleError(f"--out {path}: a COCO results file needs categories in the images file; "
                                "write a .csv instead.")
        path.write_text(json.dumps(coco_results(per_image, category_ids)) + "\n")


def score_table(val: dict, named: list[tuple[str, dict[int, Detections]]], category_ids: list[int]) -> str:
    from detect.evaluation.coco_metrics import evaluate_boxes

    classes = [c["name"] for c in sorted(val["categories"], key=lambda c: c["id"])]
    width = max(len(name) for name, _ in named)
    lines = [f"{'input':<{width}}  bbox_mAP  bbox_mAP_50  bbox_mAP_75", "-" * (width + 37)]
    for name, per_image in named:
        m = evaluate_boxes(val, coco_results(per_image, category_ids), classes, category_ids)
        lines.append(f"{name:<{width}}  {m['bbox_mAP']:8.4f}  {m['bbox_mAP_50']:11.4f}  {m['bbox_mAP_75']:11.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect.ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="submission CSVs and/or COCO results json files")
    parser.add_argument("--images", help="the test.json / val.json the inputs predict (default: --val)")
    parser.add_argument("--val", help="ground truth: evaluate every input and the fused result on it")
    parser.add_argument("--out", help="fused output, .csv (submission) or .json (COCO results)")
    parser.add_argument("--method", choices=METHODS, default="wbf", help="fusion method (default: wbf)")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per input (default: all 1)")
    parser.add_argument("--iou-thr", type=float, default=0.55, help="boxes overlapping more are fused (0.55)")
    parser.add_argument("--skip-thr", type=float, default=0.0, help="input boxes scoring below are dropped (0)")
    parser.add_argument("--max-detections", type=int, default=100, help="kept per image after fusion (100)")
    parser.add_argument("--classes", help="class order of CSV labels: a run dir or comma-separated names "
                                          "(default: the images file's categories sorted by id)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    images_path = args.images or args.val
    if not images_path:
        parser.error("give --images <test.json> (or --val <val.json>)")
    if not args.out and not args.val:
        parser.error("give --out (the fused file) and/or --val (a comparison table)")
    try:
        if args.out:
            out = Path(args.out).resolve()
            if out in [Path(p).resolve() for p in [*args.inputs, images_path, args.val] if p]:
                raise EnsembleError(f"--out {args.out} is one of the inputs: write the fused result to a new file.")
            if out.exists() and not args.overwrite:
                raise EnsembleError(f"{args.out} exists; pass --overwrite to replace it, or choose another --out.")
        images_coco = json.loads(Path(images_path).read_text())
        val = json.loads(Path(args.val).read_text()) if args.val else None
        categories = images_coco.get("categories") or []
        category_ids = class_category_ids(categories, classes_option(args.classes)) if categories else []
        inputs = [(p, read_detections(Path(p), images_coco["images"], category_ids)) for p in args.inputs]
        weights = args.weights or [1.0] * len(inputs)
        if len(weights) != len(inputs):
            raise EnsembleError(f"--weights has {len(weights)} values for {len(inputs)} inputs: give one per input.")
        fused = {img["id"]: fuse([det[img["id"]] for _, det in inputs], args.method, weights, args.iou_thr,
                                 args.skip_thr, args.max_detections) for img in images_coco["images"]}
        if args.out:
            write_output(Path(args.out), fused, images_coco["images"], category_ids)
            print(f"Wrote {args.out}: {sum(len(d) for d in fused.values())} boxes on {len(fused)} images "
                  f"({args.method}, iou_thr {args.iou_thr}, skip_thr {args.skip_thr}, weights {weights})")
        if val is not None:
            label = f"fused ({args.method})"
            print(score_table(val, [*inputs, (label, fused)], category_ids))
    except (OSError, json.JSONDecodeError, KeyError, SubmissionError, EnsembleError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
