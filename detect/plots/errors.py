"""Drawing error analysis: each chosen image with its ground truth, its predictions and the errors
marked (see detect/evaluation/error_analysis.py for what counts as which error), one PNG each and
errors.csv with the counts. PIL and numpy only: no torch."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detect.evaluation.error_analysis import GroundTruth
from detect.evaluation.fusion import Detections
from detect.evaluation.matching import FP_KINDS, ImageMatch

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



def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


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


def safe_name(file_name: str) -> str:
    """`test/0001.jpg` -> `test_0001`: a flat file name without the image suffix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(file_name).with_suffix(""))).strip("_") or "image"


def draw_error_images(chosen: list[dict], root: Path, out: Path, gts: dict[int, GroundTruth],
                      dets: dict[int, Detections], matches: dict[int, ImageMatch], rank_of: dict[int, int],
                      class_names: list[str], score_thr: float, iou_thr: float, max_side: int) -> Path:
    """<out>/<n>_<file name>.png for each chosen image (n: its place in `chosen`) and <out>/errors.csv
    (rank among all images, counts, png); returns the CSV's path."""
    out.mkdir(parents=True, exist_ok=True)
    digits = len(str(len(chosen)))
    rows = []
    for n, img in enumerate(chosen, 1):
        match = matches[img["id"]]
        with Image.open(root / img["file_name"]) as image:
            drawn = draw_errors(image, gts[img["id"]], dets[img["id"]], match, class_names,
                                header_lines(img, match, score_thr, iou_thr), max_side)
        png = out / f"{n:0{digits}d}_{safe_name(img['file_name'])}.png"
        drawn.save(png)
        kinds = match.fp_counts()
        rows.append([rank_of[img["id"]], img["file_name"], img["id"], len(match.tp), len(match.fp),
                     len(match.fn), *(kinds[kind] for kind in FP_KINDS), png.name])
    table = out / "errors.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        writer.writerows(rows)
    return table
