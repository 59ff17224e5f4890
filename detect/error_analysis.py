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
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detect.ensemble import EnsembleError, read_detections
from detect.errors import DetectError
from detect.evaluation.fusion import Detections
from detect.evaluation.matching import FP_KINDS, ImageMatch, match_image
from detect.evaluation.submission import SubmissionError, class_category_ids, classes_option

HEADER_HEIGHT = 48  # px above the image in every PNG: three lines of text
HEADER_BACKGROUND = (32, 32, 32)
ERROR_RED = (230, 20, 20)
TICK_GREEN = (0, 210, 0)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
# Class colours by class index (modulo): distinct, and neither the red of errors nor the green of ticks.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (148, 103, 189), (23, 190, 207), (255, 221, 0),
    (227, 119, 194), (140, 86, 75), (188, 189, 34), (0, 0, 160), (127, 127, 127),
    (0, 128, 128), (255, 160, 160),
]
GT_WIDTH, PRED_WIDTH, MISS_WIDTH = 1, 3, 3
CSV_FIELDS = ["rank", "file_name", "image_id", "tp", "fp", "fn",
              *(f"fp_{kind.replace(' ', '_')}" for kind in FP_KINDS), "png"]


class ErrorAnalysisError(DetectError, ValueError):
    """A missing or inconsistent input; the message names it and says what to do."""


@dataclass
class GroundTruth:
    """One image's gt: boxes (G, 4) xyxy pixels, labels (G,) 0-based class indices, crowd (G,) bools."""

    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray


def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


def load_ground_truth(coco: dict, gt_path: Path, classes: list[str] | None = None
                      ) -> tuple[list[dict], list[str], list[int], dict[int, GroundTruth]]:
    """(images, class names, category ids, {image id: GroundTruth}); class k = the k-th of `classes`
    (names) when given, else the k-th category by id."""
    if not isinstance(coco, dict) or not coco.get("images") or not coco.get("categories"):
        raise ErrorAnalysisError(f"--gt {gt_path} is not a COCO ground-truth file with images and categories.")
    try:
        category_ids = class_category_ids(coco["categories"], classes)
    except SubmissionError as err:
        raise ErrorAnalysisError(f"--classes: {err}") from None
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    categories = [{"id": cat, "name": name_of[cat]} for cat in category_ids]
    label_of = {cat: k for k, cat in enumerate(category_ids)}
    rows: dict[int, list[tuple]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco.get("annotations") or []:
        if not {"image_id", "category_id", "bbox"} <= set(ann):
            raise ErrorAnalysisError(f"--gt {gt_path}: annotation {ann} lacks image_id, category_id or bbox.")
        if ann["image_id"] not in rows or ann["category_id"] not in label_of:
            raise ErrorAnalysisError(f"--gt {gt_path}: annotation {ann.get('id')} names image {ann['image_id']} or "
                                     f"category {ann['category_id']}, which the file does not list.")
        x, y, w, h = ann["bbox"]
        rows[ann["image_id"]].append((x, y, x + w, y + h, label_of[ann["category_id"]], ann.get("iscrowd", 0)))
    gts = {}
    for image_id, anns in rows.items():
        arr = np.array(anns, dtype=float).reshape(-1, 6)
        gts[image_id] = GroundTruth(arr[:, :4], arr[:, 4].astype(np.int64), arr[:, 5] > 0)
    return coco["images"], [c["name"] for c in categories], category_ids, gts


def read_predictions(path: Path, images: list[dict], category_ids: list[int], gt_path: Path) -> dict[int, Detections]:
    """{image id: Detections} of a COCO results json or a submission CSV, checked against --gt."""
    try:
        dets = read_detections(path, images, category_ids)
    except (EnsembleError, SubmissionError) as err:
        text = str(err).replace("the images file", f"--gt {gt_path.name}")
        raise ErrorAnalysisError(f"{text} Predictions of another split (e.g. test.json) cannot be checked "
                                 f"against {gt_path.name}.") from None
    except json.JSONDecodeError as err:
        raise ErrorAnalysisError(f"{path} is not valid json ({err}); give a COCO results json or a "
                                 "submission CSV.") from None
    except (KeyError, TypeError) as err:
        why = f"an entry lacks {err}" if isinstance(err, KeyError) else "not a list of objects"
        raise ErrorAnalysisError(f"{path} is not a COCO results file (a list of {{image_id, category_id, bbox, "
                                 f"score}}): {why}.") from None
    except ValueError as err:  # a PredictionString that does not parse
        raise ErrorAnalysisError(f"{path}: {err} (check it with python -m detect.check_submission).") from None
    return dets  # labels are class indices 0..K-1: read_detections checks CSV labels, json ids map to them


def match_all(gts: dict[int, GroundTruth], dets: dict[int, Detections], iou_thr: float,
              score_thr: float) -> dict[int, ImageMatch]:
    return {image_id: match_image(gt.boxes, gt.labels, dets[image_id].boxes, dets[image_id].scores,
                                  dets[image_id].labels, iou_thr, score_thr, gt.crowd)
            for image_id, gt in gts.items()}


def rank_images(images: list[dict], matches: dict[int, ImageMatch]) -> list[dict]:
    """All images, worst first: most FP + FN, then lower recall, then file name."""
    return sorted(images, key=lambda img: (-matches[img["id"]].num_errors, matches[img["id"]].recall,
                                           img["file_name"]))


def find_images(tokens: list[str], images: list[dict], gt_path: Path) -> list[dict]:
    """The images that --images names (file_name, id, or a unique base name), in the order given."""
    by_name = {img["file_name"]: img for img in images}
    by_id = {str(img["id"]): img for img in images}
    by_base: dict[str, list[dict]] = {}
    for img in images:
        by_base.setdefault(Path(img["file_name"]).name, []).append(img)
    chosen, unknown = [], []
    for token in tokens:
        img = by_name.get(token) or by_id.get(token)
        if img is None and len(by_base.get(token, [])) == 1:
            img = by_base[token][0]
        if img is None:
            unknown.append(token)
        elif img not in chosen:
            chosen.append(img)
    if unknown:
        example = images[0]
        raise ErrorAnalysisError(f"--images: {', '.join(unknown)} is not a file_name or an image id of --gt "
                                 f"{gt_path.name} (e.g. {example['file_name']} or {example['id']}).")
    return chosen


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _edges(box) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    x1, y1, x2, y2 = box
    return [((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))]


def _box(draw: ImageDraw.ImageDraw, box, colour, width: int, dashed: bool = False, dash: float = 8) -> None:
    """A rectangle of lines (never fails on degenerate boxes); dashed: `dash` px on, dash / 2 px off."""
    for (ax, ay), (bx, by) in _edges(box):
        if not dashed:
            draw.line([(ax, ay), (bx, by)], fill=colour, width=width)
            continue
        length = max(abs(bx - ax), abs(by - ay))
        for start in np.arange(0, length, dash * 1.5):
            t0, t1 = start / max(length, 1e-9), min(start + dash, length) / max(length, 1e-9)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                      fill=colour, width=width)


def _tag(draw: ImageDraw.ImageDraw, font, x: float, y: float, text: str, fill, canvas_size: tuple[int, int],
         tick: bool = False, below: bool = False) -> None:
    """A filled label whose bottom-left is (x, y) (top-left when `below`), kept inside the image area."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad, tick_w = 2, (12 if tick else 0)
    w, h = right - left + 2 * pad + tick_w, bottom - top + 2 * pad
    x = min(max(x, 0), max(canvas_size[0] - w, 0))
    y = y if below else y - h
    y = max(min(y, canvas_size[1] - h), HEADER_HEIGHT)
    draw.rectangle([x, y, x + w, y + h], fill=fill)
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    draw.text((x + pad + tick_w - left, y + pad - top), text, fill=BLACK if luminance > 140 else WHITE, font=font)
    if tick:  # a green check mark at the left of the tag
        draw.line([(x + 2, y + h / 2), (x + 5, y + h - 3), (x + 11, y + 2)], fill=TICK_GREEN, width=2)


def draw_errors(image: Image.Image, gt: GroundTruth, det: Detections, match: ImageMatch, class_names: list[str],
                header: list[str], max_side: int) -> Image.Image:
    """The marked-up image: size (round(w * s), round(h * s) + HEADER_HEIGHT), s = min(1, max_side / max(w, h))."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = image.convert("RGB")
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    canvas = Image.new("RGB", (size[0], size[1] + HEADER_HEIGHT), HEADER_BACKGROUND)
    canvas.paste(image, (0, HEADER_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    font = _font()

    def place(box) -> list[float]:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        return [min(x1, x2), min(y1, y2) + HEADER_HEIGHT, max(x1, x2), max(y1, y2) + HEADER_HEIGHT]

    tags = []  # drawn last, on top of every box
    for box, label in zip(gt.boxes, gt.labels):
        _box(draw, place(box), class_colour(label), GT_WIDTH)
    for p, kind in zip(match.fp, match.fp_kinds):
        b, label = place(det.boxes[p]), det.labels[p]
        _box(draw, b, class_colour(label), PRED_WIDTH, dashed=True)
        tags.append((b[0], b[1], f"FP {kind}: {class_names[label]} {det.scores[p]:.2f}", ERROR_RED, False, False))
    for p in match.tp:
        b, label = place(det.boxes[p]), det.labels[p]
        _box(draw, b, class_colour(label), PRED_WIDTH)
        tags.append((b[0], b[1], f"{class_names[label]} {det.scores[p]:.2f}", class_colour(label), True, False))
    for g in match.fn:
        x1, y1, x2, y2 = place(gt.boxes[g])
        _box(draw, [x1 - 2, y1 - 2, x2 + 2, y2 + 2], ERROR_RED, MISS_WIDTH)  # outside the gt's own thin box
        tags.append((x1 - 2, y2 + 3, f"MISS {class_names[gt.labels[g]]}", ERROR_RED, False, True))  # below the box
    for x, y, text, fill, tick, below in tags:
        _tag(draw, font, x, y, text, fill, canvas.size, tick, below)
    for n, line in enumerate(header):
        draw.text((4, 2 + 15 * n), line, fill=WHITE, font=font)
    return canvas


def header_lines(img: dict, match: ImageMatch, score_thr: float, iou_thr: float) -> list[str]:
    kinds = ", ".join(f"{kind} {count}" for kind, count in match.fp_counts().items())
    return [f"{img['file_name']} (id {img['id']})",
            f"TP {len(match.tp)}   FP {len(match.fp)} ({kinds})   FN {len(match.fn)}",
            f"score >= {score_thr:g}, IoU >= {iou_thr:g} | thin: gt, thick: prediction, dashed + red: FP, "
            "red outline: miss"]


def class_table(class_names: list[str], gts: dict[int, GroundTruth], dets: dict[int, Detections],
                matches: dict[int, ImageMatch]) -> str:
    """Per-class TP / FP (by kind) / FN over all images, with precision and recall, and a total row."""
    k = len(class_names)
    counts = {name: np.zeros(k, np.int64) for name in ("gt", "tp", "fn", *FP_KINDS)}
    for image_id, match in matches.items():
        gt, det = gts[image_id], dets[image_id]
        np.add.at(counts["gt"], gt.labels[~gt.crowd], 1)
        np.add.at(counts["tp"], det.labels[match.tp], 1)
        np.add.at(counts["fn"], gt.labels[match.fn], 1)
        for p, kind in zip(match.fp, match.fp_kinds):
            counts[kind][det.labels[p]] += 1
    fp = sum(counts[kind] for kind in FP_KINDS)
    width = max(len("class"), *(len(n) for n in class_names))
    head = f"{'class':<{width}}  {'gt':>6} {'TP':>6} {'FP':>6} {'FN':>6} {'prec':>6} {'recall':>6}  " + "  ".join(
        FP_KINDS)
    lines = [head, "-" * len(head)]
    rows = [(name, slice(i, i + 1)) for i, name in enumerate(class_names)] + [("all", slice(None))]
    for name, sel in rows:
        tp_, fp_, fn_, gt_ = (int(a[sel].sum()) for a in (counts["tp"], fp, counts["fn"], counts["gt"]))
        prec = f"{tp_ / (tp_ + fp_):.3f}" if tp_ + fp_ else "-"
        rec = f"{tp_ / (tp_ + fn_):.3f}" if tp_ + fn_ else "-"
        kinds = "  ".join(f"{int(counts[kind][sel].sum()):>{len(kind)}}" for kind in FP_KINDS)
        if name == "all":
            lines.append("-" * len(head))
        lines.append(f"{name:<{width}}  {gt_:>6} {tp_:>6} {fp_:>6} {fn_:>6} {prec:>6} {rec:>6}  {kinds}")
    return "\n".join(lines)


def safe_name(file_name: str) -> str:
    """`test/0001.jpg` -> `test_0001`: a flat file name without the image suffix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(file_name).with_suffix(""))).strip("_") or "image"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m detect.error_analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
        parser.error("--worst must be at least 1")
    if args.max_side < 1:
        parser.error("--max-side must be at least 1")
    if not 0 < args.iou <= 1:
        parser.error("--iou must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gt_path, pred_path = Path(args.gt), Path(args.predictions)
        for flag, path in (("--gt", gt_path), ("PREDICTIONS", pred_path)):
            if not path.is_file():
                raise ErrorAnalysisError(f"{flag} {path} does not exist.")
        root = Path(args.root) if args.root else gt_path.parent
        out = Path(args.out) if args.out else pred_path.parent / "error_analysis"
        try:
            coco = json.loads(gt_path.read_text())
        except json.JSONDecodeError as err:
            raise ErrorAnalysisError(f"--gt {gt_path} is not valid json ({err}).") from None
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
        out.mkdir(parents=True, exist_ok=True)
        digits = len(str(len(chosen)))
        rows = []
        for n, img in enumerate(chosen, 1):
            match = matches[img["id"]]
            with Image.open(root / img["file_name"]) as image:
                drawn = draw_errors(image, gts[img["id"]], dets[img["id"]], match, class_names,
                                    header_lines(img, match, args.score_thr, args.iou), args.max_side)
            png = out / f"{n:0{digits}d}_{safe_name(img['file_name'])}.png"
            drawn.save(png)
            kinds = match.fp_counts()
            rows.append([rank_of[img["id"]], img["file_name"], img["id"], len(match.tp), len(match.fp),
                         len(match.fn), *(kinds[kind] for kind in FP_KINDS), png.name])
        with (out / "errors.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            writer.writerows(rows)
    except (OSError, ErrorAnalysisError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{pred_path} against {gt_path} ({len(images)} images; score >= {args.score_thr:g}, IoU >= {args.iou:g})")
    print(class_table(class_names, gts, dets, matches))
    what = "the named images" if args.images else "the worst images (by FP + FN)"
    if not chosen:
        what = "nothing: no image has an error at these thresholds"
    print(f"Drew {len(chosen)} image(s), {what}, to {out}/ (counts per image in {out / 'errors.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
