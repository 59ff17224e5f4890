"""Fuse several submissions (CSV) or COCO results files into one, and score them side by side on val.

    python -m detect.ensemble a/submission.csv b/submission.csv --images test.json --out fused.csv
    python -m detect.ensemble a.csv b.csv c.csv --weights 2 1 1 --method wbf --iou-thr 0.6 --skip-thr 0.01 \\
        --val val.json --out fused_val.csv

Inputs may mix submission CSVs (label = 0-based class index) and COCO results json files
(`category_id`); label k is the k-th class of `--classes` (a run dir, whose `data.classes` order
detect.test wrote, or comma-separated names; one per input when they differ), by default the k-th
category of the images file sorted by id (the order of `data.classes: null`; for the trash data, ids
0..9 in the competition's order). `--images` (the
test.json or val.json the inputs were predicted on) gives the image list, order and sizes; with
`--val <val.json>` (ground truth) it defaults to that file, and every input and the fused result
are evaluated and printed in one table: tune weights and thresholds on val, not on the leaderboard.
The output is a CSV or a COCO results json, by the suffix of `--out`. See detect/evaluation/fusion.py
for the methods (wbf, nms, soft_nms). numpy and pycocotools only: no torch. The
work is in detect/evaluation/detections.py and fusion.py; this module parses, calls and reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from detect.cli import ArgumentParser, run_command
from detect.errors import UsageError
from detect.evaluation.detections import read_detections, score_table, write_detections
from detect.evaluation.fusion import METHODS, Detections, fuse
from detect.evaluation.submission import SubmissionError, class_category_ids, classes_option
from detect.inputs import InputFileError, read_coco


def build_parser() -> ArgumentParser:
    parser = ArgumentParser("python -m detect.ensemble", __doc__)
    parser.add_argument("inputs", nargs="+", help="submission CSVs and/or COCO results json files")
    parser.add_argument("--images", help="the test.json / val.json the inputs predict (default: --val)")
    parser.add_argument("--val", help="ground truth: evaluate every input and the fused result on it")
    parser.add_argument("--out", help="fused output, .csv (submission) or .json (COCO results)")
    parser.add_argument("--method", choices=METHODS, default="wbf", help="fusion method (default: wbf)")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per input (default: all 1)")
    parser.add_argument("--iou-thr", type=float, default=0.55, help="boxes overlapping more are fused (0.55)")
    parser.add_argument("--skip-thr", type=float, default=0.0, help="input boxes scoring below are dropped (0)")
    parser.add_argument("--max-detections", type=int, default=100, help="kept per image after fusion (100)")
    parser.add_argument("--classes", nargs="+", metavar="CLASSES",
                        help="class order of CSV labels: a run dir or comma-separated names; one for every input "
                             "(and the output), or one per input when the inputs were trained with different "
                             "orders (the output then takes the images file's order). Default: the images "
                             "file's categories sorted by id")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def check_args(args) -> None:
    """What is wrong with the command line itself, before any file is read (exit 2)."""
    if not (args.images or args.val):
        raise UsageError("give --images <test.json> (or --val <val.json>)")
    if not args.out and not args.val:
        raise UsageError("give --out (the fused file) and/or --val (a comparison table)")
    if args.weights and len(args.weights) != len(args.inputs):
        raise UsageError(f"--weights has {len(args.weights)} values for {len(args.inputs)} inputs: give one per input.")
    if args.weights and not all(w > 0 for w in args.weights):
        raise UsageError(f"--weights {args.weights} must all be > 0 (leave an input out rather than weigh it 0).")
    if not 0 < args.iou_thr <= 1:
        raise UsageError(f"--iou-thr {args.iou_thr} must be in (0, 1].")
    if args.classes and len(args.classes) not in (1, len(args.inputs)):
        raise UsageError(f"--classes has {len(args.classes)} values for {len(args.inputs)} inputs: give one for all, "
                         "or one per input.")
    if args.max_detections < 1:
        raise UsageError(f"--max-detections {args.max_detections} must be at least 1.")
    if args.out:
        out = Path(args.out).resolve()
        if out in [Path(p).resolve() for p in [*args.inputs, args.images, args.val] if p]:
            raise UsageError(f"--out {args.out} is one of the inputs: write the fused result to a new file.")
        if out.exists() and not args.overwrite:
            raise UsageError(f"{args.out} exists; pass --overwrite to replace it, or choose another --out.")


def in_output_order(per_image: dict[int, Detections], input_ids: list[int], output_ids: list[int]
                    ) -> dict[int, Detections]:
    """Labels of an input (indices into its own class order) as indices into the output's order."""
    if input_ids == output_ids:
        return per_image
    remap = np.array([output_ids.index(cat) for cat in input_ids], dtype=np.int64)
    return {image_id: Detections(d.boxes, d.scores, remap[d.labels]) for image_id, d in per_image.items()}


def ensemble(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    images_option = ("--images", args.images) if args.images else ("--val", args.val)
    images_coco = read_coco(images_option[1], images_option[0])
    val = read_coco(args.val, "--val") if args.val else None
    categories = images_coco.get("categories") or []
    per_input = args.classes if args.classes and len(args.classes) > 1 else None
    try:
        shared = args.classes[0] if args.classes and not per_input else None
        category_ids = class_category_ids(categories, classes_option(shared)) if categories else []
        input_category_ids = ([class_category_ids(categories, classes_option(c)) for c in per_input] if per_input
                              else [category_ids] * len(args.inputs))
    except SubmissionError as err:
        raise InputFileError(f"--classes: {err}") from None
    images = images_coco["images"]
    images_name = f"{images_option[0]} {Path(images_option[1]).name}"
    inputs = [(p, in_output_order(read_detections(Path(p), images, ids, images_name), ids, category_ids))
              for p, ids in zip(args.inputs, input_category_ids)]
    weights = args.weights or [1.0] * len(inputs)
    fused = {img["id"]: fuse([det[img["id"]] for _, det in inputs], args.method, weights, args.iou_thr,
                             args.skip_thr, args.max_detections) for img in images}
    if args.out:
        write_detections(Path(args.out), fused, images, category_ids)
        print(f"Wrote {args.out}: {sum(len(d) for d in fused.values())} boxes on {len(fused)} images "
              f"({args.method}, iou_thr {args.iou_thr}, skip_thr {args.skip_thr}, weights {weights})")
    if val is not None:
        print(score_table(val, [*inputs, (f"fused ({args.method})", fused)], category_ids))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every command's (detect/cli.py): 2 for a bad command line, 1 for a bad input file."""
    return run_command(ensemble, argv)


if __name__ == "__main__":
    sys.exit(main())
