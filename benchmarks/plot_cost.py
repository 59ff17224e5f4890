"""What the plots cost a run, side by side with what an evaluation costs on the same data.

    python benchmarks/plot_cost.py [--images 980] [--detections 100] [--epochs 24] [--iters 1220]

A synthetic run the size of the trash competition's fold (980 val images, 10 classes, 100
detections per image; 24 epochs of 1220 iterations logged every 20): per evaluation the trainer
scores the detections and then refreshes three curve plots; at the end it draws PR curves, the
confusion matrices and the label statistics. Printed: seconds for each, and the plots' share of an
evaluation. (Loading matplotlib once, ~0.3 s, is counted in the first refresh.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_line  # noqa: E402
from detect.evaluation.coco_metrics import evaluate_boxes  # noqa: E402

CLASSES = ["General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic", "Styrofoam", "Plastic bag", "Battery",
           "Clothing"]


def synthetic(images: int, detections: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """A val set of 1024x1024 images with 1-12 boxes each, and noisy detections of them."""
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}
    dets = []
    for image_id in range(1, images + 1):
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 1024, "height": 1024})
        boxes = []
        for _ in range(rng.integers(1, 13)):
            x, y = rng.uniform(0, 800, 2)
            w, h = rng.uniform(20, 220, 2)
            cat = int(rng.integers(0, len(CLASSES)))
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cat,
                                        "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            boxes.append((x, y, w, h, cat))
        for k in range(detections):
            if k < len(boxes) and rng.random() < 0.7:
                x, y, w, h, cat = boxes[k]
                x, y = x + rng.normal(0, 10), y + rng.normal(0, 10)
            else:
                x, y, w, h = *rng.uniform(0, 800, 2), *rng.uniform(20, 220, 2)
                cat = int(rng.integers(0, len(CLASSES)))
            dets.append({"image_id": image_id, "category_id": cat, "bbox": [float(x), float(y), float(w), float(h)],
                         "score": float(rng.random())})
    return coco, dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=980)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--iters", type=int, default=1220, help="iterations per epoch")
    parser.add_argument("--log-interval", type=int, default=20)
    args = parser.parse_args()
    from detect.plots.report import build_report, refresh_training_plots

    rng = np.random.default_rng(0)
    coco, dets = synthetic(args.images, args.detections, rng)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "val.json").write_text(json.dumps(coco))
        (run / "val_predictions.bbox.json").write_text(json.dumps(dets))
        tic = time.perf_counter()
        metrics = evaluate_boxes(coco, dets, CLASSES, list(range(len(CLASSES))))
        evaluation = time.perf_counter() - tic
        with (run / "metrics.jsonl").open("w") as f:
            for i in range(args.log_interval, args.epochs * args.iters + 1, args.log_interval):
                f.write(json.dumps({"mode": "train", "epoch": i // args.iters + 1, "iter": i, "lr": 0.02,
                                    "loss": 1 / i ** 0.3, "loss_cls": 0.5 / i ** 0.3, "loss_bbox": 0.5 / i ** 0.3,
                                    "sec_per_iter": 0.3}) + "\n")
            for epoch in range(1, args.epochs + 1):
                f.write(json.dumps({"mode": "val", "epoch": epoch, "iter": epoch * args.iters, **metrics}) + "\n")
        (run / "summary.json").write_text(json.dumps({
            "monitor": "bbox_mAP_50", "best_epoch": args.epochs, "status": "finished", "classes": CLASSES,
            "category_ids": list(range(len(CLASSES))),
            "data_files": {"train": str(run / "val.json"), "val": str(run / "val.json")}}))
        refreshes = []
        for _ in range(3):
            tic = time.perf_counter()
            refresh_training_plots(run)
            refreshes.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        build_report(run)
        report = time.perf_counter() - tic

    print(machine_line(threads=1))  # plotting and scoring run in one thread
    print(f"data: {args.images} images, {len(coco['annotations'])} boxes, {len(dets)} detections; metrics.jsonl "
          f"{args.epochs} epochs x {args.iters // args.log_interval} train lines")
    print(f"one evaluation (scoring only, no inference): {evaluation:.2f} s")
    print(f"curve plots after an evaluation: first {refreshes[0]:.2f} s (loads matplotlib), then "
          f"{min(refreshes[1:]):.2f} s = {min(refreshes[1:]) / evaluation:.2f}x the scoring")
    print(f"end of run (curves + PR + confusion + labels + report.md): {report:.2f} s")


if __name__ == "__main__":
    main()
