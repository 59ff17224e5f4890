"""Speed of detect's COCO box evaluation (faster-coco-eval) against plain pycocotools, same inputs, same run.

    .venv/bin/python benchmarks/eval_speed.py                        # 500 images x 100 detections, 3 repeats
    .venv/bin/python benchmarks/eval_speed.py --images 100 --repeats 5

Generates a seeded trash-like validation set: 10 classes (category ids 0-9), 1024x1024 images with 5-20
ground-truth boxes each (8-600 px on a side, so COCO's small, medium and large all occur), and exactly
`--detections` per image the way a detector emits them (its top-scoring boxes: hits with localisation
noise, duplicates, wrong classes, background false positives; boxes rounded to 0.01 px and scores to
5 decimals as the trainer writes them, so ties occur).

It measures wall-clock seconds of one evaluation, as the median (and the best) of `--repeats` runs of:
- pycocotools: COCO index of the ground truth + loadRes + COCOeval evaluate/accumulate/summarize, i.e.
  plain pycocotools without detect's copies (pycocotools writes into its inputs, so each run gets fresh
  copies, made outside the timed region);
- detect cold: `evaluate_boxes` on a ground-truth dict it has not seen (copy + index built in the call);
- detect warm: `evaluate_boxes` on the same dict again (the index reused), as every epoch after the
  first in training.
It then checks that the 12 stats, the whole precision array and every class's AP / AP50 are identical
(==) between detect and pycocotools, and exits with status 1 if not. The ratio is pycocotools / detect
(goal: >= 3 for warm).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detect.evaluation import coco_metrics  # noqa: E402
from detect.evaluation.coco_metrics import evaluate_boxes  # noqa: E402

CLASSES = ["General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic", "Styrofoam", "Plastic bag",
           "Battery", "Clothing"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=10, help="at most 10 (the trash classes)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--min-gt", type=int, default=5, help="fewest ground-truth boxes per image")
    parser.add_argument("--max-gt", type=int, default=20, help="most ground-truth boxes per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median and best reported)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def generate(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The COCO ground-truth dict and the detections (bbox xywh pixels), as described in the docstring."""
    rng = np.random.default_rng(args.seed)
    size, cats = args.size, list(range(args.classes))
    images = [{"id": i + 1, "file_name": f"{i:04d}.jpg", "width": size, "height": size} for i in range(args.images)]
    annotations, detections = [], []
    for img in images:
        candidates = []  # (score, category, box) before keeping the top args.detections
        for _ in range(rng.integers(args.min_gt, args.max_gt + 1)):
            side = float(np.exp(rng.uniform(np.log(8), np.log(600))))
            w, h = min(side * rng.uniform(0.6, 1.6), size), min(side * rng.uniform(0.6, 1.6), size)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            cat = int(rng.choice(cats))
            box = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
            if rng.random() < 0.15:  # missed
                continue
            for _ in range(1 + int(rng.poisson(0.8))):  # the hit and its duplicates
                noise = rng.normal(0, 0.07, 4)
                label = cat if rng.random() > 0.1 else int(rng.choice(cats))
                candidates.append((float(rng.beta(5, 2)), label,
                                   [x + noise[0] * w, y + noise[1] * h, w * (1 + noise[2]), h * (1 + noise[3])]))
        while len(candidates) < args.detections:  # background false positives, mostly low scores
            w, h = rng.uniform(6, 400, 2)
            candidates.append((float(rng.beta(1, 6)), int(rng.choice(cats)),
                               [rng.uniform(0, size - w), rng.uniform(0, size - h), w, h]))
        candidates.sort(key=lambda c: -c[0])
        for score, label, box in candidates[:args.detections]:
            detections.append({"image_id": img["id"], "category_id": label,
                               "bbox": [round(float(v), 2) for v in box], "score": round(score, 5)})
    categories = [{"id": c, "name": CLASSES[c]} for c in cats]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def pycocotools_eval(gt: dict, detections: list[dict], category_ids: list[int]) -> COCOeval:
    """Plain pycocotools on `gt` and `detections` as given (it writes into both)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(detections), "bbox")
        coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def timed(run: Callable[[], object], prepare: Callable[[], None], repeats: int) -> tuple[list[float], object]:
    """Seconds of each of `repeats` calls of run() (prepare() untimed before each), and the last result."""
    times, result = [], None
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}; {os.cpu_count()} logical cores ({usable} usable); {platform.platform()}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, pycocotools {version('pycocotools')}, "
            f"faster-coco-eval {version('faster-coco-eval')}")


def main() -> int:
    args = parse_args()
    if not 1 <= args.classes <= len(CLASSES):
        raise SystemExit(f"--classes must be 1..{len(CLASSES)}")
    gt, detections = generate(args)
    category_ids = [c["id"] for c in gt["categories"]]
    names = [c["name"] for c in gt["categories"]]
    print(f"machine: {machine()}")
    print(f"data: {args.images} images {args.size}x{args.size}, {len(gt['annotations'])} ground-truth boxes, "
          f"{len(detections)} detections, {args.classes} classes; {args.repeats} repeats, seed {args.seed}")

    inputs: dict = {}

    def fresh_copies() -> None:
        inputs["gt"], inputs["dets"] = copy.deepcopy(gt), copy.deepcopy(detections)

    ref_times, ref = timed(lambda: pycocotools_eval(inputs["gt"], inputs["dets"], category_ids), fresh_copies,
                           args.repeats)
    cold_times, _ = timed(lambda: evaluate_boxes(inputs["gt"], detections, names, category_ids), fresh_copies,
                          args.repeats)
    evaluate_boxes(gt, detections, names, category_ids)  # index `gt` once: the warm runs reuse it
    warm_times, ours = timed(lambda: evaluate_boxes(gt, detections, names, category_ids), lambda: None, args.repeats)

    stats, precision, _ = coco_metrics._evaluate(gt, detections, category_ids)
    ref_precision = ref.eval["precision"]
    same = stats.tolist() == np.asarray(ref.stats).tolist() and np.array_equal(precision, ref_precision)
    for k, name in enumerate(n for _, n in sorted(zip(category_ids, names))):  # COCOeval sorts the ids
        ap, ap50 = ref_precision[:, :, k, 0, -1], ref_precision[0, :, k, 0, -1]
        expected = {"AP": float(ap[ap > -1].mean()) if (ap > -1).any() else None,
                    "AP50": float(ap50[ap50 > -1].mean()) if (ap50 > -1).any() else None}
        same = same and ours["classwise"][name] == expected
    print("12 stats:", " ".join(f"{s:.4f}" for s in stats))
    print(f"identical to pycocotools (12 stats, precision array, per-class AP and AP50, ==): {'yes' if same else 'NO'}")

    ref_median = statistics.median(ref_times)
    print(f"{'method':<24} {'median s':>9} {'best s':>8} {'speed-up (median)':>18}")
    for label, times in (("pycocotools", ref_times), ("detect, cold index", cold_times),
                         ("detect, warm index", warm_times)):
        median = statistics.median(times)
        print(f"{label:<24} {median:9.3f} {min(times):8.3f} {ref_median / median:17.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
