"""Draw ground truth and predictions on chosen or worst-scoring images, with the errors marked.

    python -m detect.error_analysis outputs/me/run/test/eval_<time>/predictions.bbox.json \\
        --gt /data/trash/val.json --worst 20
    python -m detect.error_analysis submission_val.csv --gt val.json --root /data/trash --images train/0001.jpg 12

PREDICTIONS is a COCO results json (the `predictions.bbox.json` of `python -m detect.test mode=eval`;
category_id = the json ids of --gt) or a submission CSV (label k = the k-th category of --gt sorted by
id, image_id = file_name). They must predict the images of --gt: predictions of test.json cannot be
checked against val.json.

Matching (detect/evaluation/matching.py), per image and class: predictions with score >= --score-thr,
by descending score, each take the unmatched gt box of their class they overlap most, if IoU >= --iou
(COCO's greedy rule): true positives (TP). Every other prediction is a false positive (FP) of the first
kind that fits: `duplicate` (its gt box was already taken by a higher score), `wrong class` (IoU >= --iou
with a gt box of another class), `localisation` (0.1 <= IoU < --iou with a gt box of its class),
`background`. Unmatched gt boxes are misses (FN). Crowd gt boxes (iscrowd=1) are never misses, and
predictions inside one of their class are ignored, as in COCOeval.

Worst images (--worst N, the default with N=20): images with at least one error, ranked by FP + FN
(most first), ties broken by lower per-image recall TP / (TP + FN), then by file name. --images draws
the named images instead (file_names, image ids, or a file's base name if unique), in the order given.

Drawing: the image scaled so its longer side is at most --max-side (never enlarged), below a header
strip (48 px: file name, TP/FP/FN counts, thresholds). Ground truth: thin solid box in its class
colour. Predictions: thick box in their class colour with `class score`; TP with a green tick, FP
dashed with a red tag `FP <kind>`. Misses: thick red outline and a red `MISS class` tag.
Output: <out>/<rank>_<file name>.png for each drawn image, <out>/errors.csv (one row per drawn image:
rank among all images, file_name, image_id, tp, fp, fn, fp by kind, png), and a per-class
TP/FP/FN table over all images on stdout. numpy, PIL and json only: no torch.

The work is in detect/evaluation/error_analysis.py (matching, ranking) and detect/plots/errors.py
(drawing); this module parses, calls and reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detect.cli import ArgumentParser, run_command
from detect.errors import UsageError
from detect.evaluation.error_analysis import (
    ErrorAnalysisError,
    class_table,
    find_images,
    load_ground_truth,
    match_all,
    rank_images,
    read_predictions,
)
from detect.evaluation.submission import SubmissionError, classes_option
from detect.inputs import read_json


def parse_args(argv: list[str]):
    parser = ArgumentParser("python -m detect.error_analysis", __doc__)
    parser.add_argument("predictions", help="COCO results json (predictions.bbox.json) or submission CSV")
    parser.add_argument("--gt", required=True, help="COCO ground truth the predictions were made on (val.json)")
    parser.add_argument("--root", help="folder the gt file_names are relative to (default: the --gt file's folder)")
    parser.add_argument("--out", help="output folder (default: error_analysis/ beside the predictions file)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--worst", type=int, metavar="N", help="draw the N worst images (default: 20)")
    which.add_argument("--images", nargs="+", metavar="IMAGE", help="draw these images: file_names or image ids")
    parser.add_argument("--score-thr", type=float, default=0.3, help="predictions scoring lower are left out (0.3)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a prediction to match a gt box (0.5)")
    parser.add_argument("--classes", help="class order of CSV labels: the run dir that wrote the CSV, or comma-"
                                          "separated names (default: the --gt categories sorted by id)")
    parser.add_argument("--max-side", type=int, default=1024, help="longer side of the drawn image, px (1024)")
    args = parser.parse_args(argv)
    if args.worst is not None and args.worst < 1:
        raise UsageError(f"--worst {args.worst} must be at least 1")
    if args.max_side < 1:
        raise UsageError(f"--max-side {args.max_side} must be at least 1")
    if not 0 < args.iou <= 1:
        raise UsageError(f"--iou {args.iou} must be in (0, 1]")
    return args


def analyse(argv: list[str]) -> int:
    from detect.plots.errors import draw_error_images  # PIL: only once the command line is fine

    args = parse_args(argv)
    gt_path, pred_path = Path(args.gt), Path(args.predictions)
    if not pred_path.is_file():
        raise ErrorAnalysisError(f"PREDICTIONS {pred_path} does not exist.")
    root = Path(args.root) if args.root else gt_path.parent
    out = Path(args.out) if args.out else pred_path.parent / "error_analysis"
    coco = read_json(gt_path, "--gt")
    try:
        classes = classes_option(args.classes)
    except SubmissionError as err:
        raise ErrorAnalysisError(str(err)) from None
    images, class_names, category_ids, gts = load_ground_truth(coco, gt_path, classes)
    dets = read_predictions(pred_path, images, category_ids, gt_path)
    matches = match_all(gts, dets, args.iou, args.score_thr)
    ranked = rank_images(images, matches)
    rank_of = {img["id"]: n for n, img in enumerate(ranked, 1)}
    if args.images:
        chosen = find_images(args.images, images, gt_path)
    else:
        chosen = [img for img in ranked if matches[img["id"]].num_errors][:args.worst or 20]
    missing = [img["file_name"] for img in chosen if not (root / img["file_name"]).is_file()]
    if missing:
        raise ErrorAnalysisError(f"{len(missing)} image file(s) not found under {root}, e.g. {root / missing[0]}: "
                                 "give --root, the folder the gt file_names are relative to.")
    table = draw_error_images(chosen, root, out, gts, dets, matches, rank_of, class_names, args.score_thr,
                              args.iou, args.max_side)
    print(f"{pred_path} against {gt_path} ({len(images)} images; score >= {args.score_thr:g}, IoU >= {args.iou:g})")
    print(class_table(class_names, gts, dets, matches))
    what = "the named images" if args.images else "the worst images (by FP + FN)"
    if not chosen:
        what = "nothing: no image has an error at these thresholds"
    print(f"Drew {len(chosen)} image(s), {what}, to {out}/ (counts per image in {table})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every command's (detect/cli.py): 2 for a bad command line, 1 for a bad input file."""
    return run_command(analyse, argv)


if __name__ == "__main__":
    sys.exit(main())
