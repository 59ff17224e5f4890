"""Export a trained model to ONNX or TorchScript and check the file against PyTorch on val images.

    python -m detect.export run=<run dir>                                  # ONNX, any input size, best checkpoint
    python -m detect.export run=<run dir> checkpoint=last dynamic=false size=640
    python -m detect.export run=<run dir> format=torchscript size=512       # traced at a fixed size

The exported model takes one float image (3 x H x W, RGB in [0, 1]) and returns boxes (N x 4, xyxy in
that image's pixels), labels (1..C) and scores, with the model's own resize, normalisation and
post-processing inside. `dynamic=true` (ONNX's default) accepts any H and W; `dynamic=false` and
TorchScript (a trace: detect's models are Python-side modules torch.jit.script cannot compile) take
exactly size x size: resize your images to it first. After writing, the file is run on `check_images`
val images of the run's data (onnxruntime for ONNX) beside PyTorch: the largest box difference between
matched detections and mAP50 of both on those images are printed and stored beside the file (they must
agree within 0.001). Keys (key=value): run, checkpoint (best|last|epoch_N|<path>), format (onnx|torchscript),
dynamic (true), size (the model's min_size), opset (17), check_images (20), out (default
<run dir>/export/<time>/model.onnx|.pt).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

from detect.cli import parse_key_values, run_command
from detect.errors import ConfigError, DetectError, UsageError

log = logging.getLogger("detect")

DEFAULTS = {"run": None, "checkpoint": "best", "format": "onnx", "dynamic": True, "size": 0, "opset": 17,
            "check_images": 20, "out": None}
FORMATS = ("onnx", "torchscript")
TOLERANCE = 0.001  # mAP50 of the file and of PyTorch must agree within this


class ExportError(DetectError, RuntimeError):
    """The model cannot be written in the asked format (an operation the exporter does not support)."""


def parse_options(argv: list[str]) -> dict:
    options = parse_key_values(argv, DEFAULTS, "python -m detect.export")
    if options["format"] not in FORMATS:
        raise UsageError(f"format={options['format']} is not one of {', '.join(FORMATS)}")
    if options["format"] == "torchscript" and options["dynamic"] and "dynamic" in " ".join(argv):
        raise UsageError("format=torchscript is traced at one input size: leave out dynamic=true (or use format=onnx)")
    if options["format"] == "torchscript":
        options["dynamic"] = False
    if options["check_images"] < 0 or options["size"] < 0:
        raise UsageError("check_images and size must not be negative")
    return options


def load(options: dict):
    import torch

    from detect.engine.testing import load_trained_model

    model, run_cfg, state, path = load_trained_model(options["run"], options["checkpoint"])
    torch.set_grad_enabled(False)
    return model, run_cfg, list(state["classes"]), path


def as_tuple(model):
    """The detector with one image in and a (boxes, labels, scores) tuple out: what the exporters write."""
    import torch

    class AsTuple(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, image):
            out = self.detector([image])[0]
            return out["boxes"], out["labels"], out["scores"]

    return AsTuple(model).eval()


def export(model, options: dict, example, out: Path) -> None:
    import torch

    wrapped = as_tuple(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            if options["format"] == "onnx":
                axes = {"image": {1: "height", 2: "width"}} if options["dynamic"] else None
                torch.onnx.export(wrapped, (example,), str(out), opset_version=options["opset"], dynamo=False,
                                  input_names=["image"], output_names=["boxes", "labels", "scores"],
                                  dynamic_axes=axes)
            else:
                torch.jit.trace(wrapped, (example,), check_trace=False).save(str(out))
    except Exception as err:  # the exporters raise many kinds; the first line names the operation
        out.unlink(missing_ok=True)
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ExportError(f"{options['format']} export of model {model.__class__.__name__} failed: "
                          f"{type(err).__name__}: {first[:400]}") from err


def runner(options: dict, path: Path):
    """A function image -> (boxes, labels, scores) numpy arrays, running the written file."""
    import numpy as np
    import torch

    if options["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda image: session.run(None, {"image": image.numpy()})
    module = torch.jit.load(str(path)).eval()
    return lambda image: [np.asarray(t) for t in module(image)]


def box_iou(a, b):
    import numpy as np

    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def compare(model, run_exported, images: list, classes: list[str], gt: dict) -> dict:
    """Largest box difference over matched detections (same label, best IoU) and mAP50 of both."""
    import numpy as np

    from detect.evaluation.coco_metrics import evaluate_boxes

    largest, unmatched, identical, ours, theirs = 0.0, 0, 0, [], []
    for image_id, image in images:
        ref = {k: v.numpy() for k, v in model([image])[0].items()}
        boxes, labels, scores = run_exported(image)
        for out, (b, lab, sc) in ((ours, (ref["boxes"], ref["labels"], ref["scores"])),
                                  (theirs, (boxes, labels, scores))):
            for box, label, score in zip(b.tolist(), lab.tolist(), sc.tolist()):
                out.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
        same_count = len(ref["boxes"]) == len(boxes)
        if same_count and (not len(boxes) or (np.abs(ref["boxes"] - np.asarray(boxes)).max() <= 1e-3
                                              and (ref["labels"] == np.asarray(labels)).all())):
            identical += 1  # every detection equal, in the same order, within 0.001 px
        if len(ref["boxes"]) and len(boxes):
            iou = box_iou(ref["boxes"], np.asarray(boxes)) * (ref["labels"][:, None] == np.asarray(labels)[None, :])
            best = iou.argmax(1)
            matched = iou[np.arange(len(best)), best] > 0.5
            unmatched += int((~matched).sum())
            if matched.any():
                largest = max(largest, float(np.abs(ref["boxes"][matched] - np.asarray(boxes)[best[matched]]).max()))
        else:
            unmatched += abs(len(ref["boxes"]) - len(boxes))
    ids = list(range(1, len(classes) + 1))
    map_torch = evaluate_boxes(gt, ours, classes, ids)["bbox_mAP_50"]
    map_file = evaluate_boxes(gt, theirs, classes, ids)["bbox_mAP_50"]
    return {"images": len(images), "images_identical": identical, "largest_box_difference_px": round(largest, 5),
            "unmatched_detections": unmatched,
            "detections_pytorch": len(ours), "detections_exported": len(theirs),
            "map50_pytorch": round(map_torch, 5), "map50_exported": round(map_file, 5),
            "agree": abs(map_torch - map_file) <= TOLERANCE}


def check_images(run_cfg, classes: list[str], count: int, size: int | None):
    """The first `count` val images (resized to size x size for a fixed-size file, their boxes too) and a
    COCO ground truth of them with category id = label."""
    import torch.nn.functional as F

    from detect.data.build import build_dataset

    dataset = build_dataset(run_cfg.data, "val", train=False, classes=classes)
    images, gt = [], {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n}
                                                                      for i, n in enumerate(classes)]}
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        boxes = target["boxes"].clone()
        if size:
            height, width = image.shape[-2:]
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            boxes[:, 0::2] *= size / width
            boxes[:, 1::2] *= size / height
        gt["images"].append({"id": index, "width": int(image.shape[-1]), "height": int(image.shape[-2])})
        for box, label in zip(boxes.tolist(), target["labels"].tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": index, "category_id": int(label),
                                      "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                                      "area": (box[2] - box[0]) * (box[3] - box[1])})
        images.append((index, image))
    return images, gt


def export_command(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    options = parse_options(argv)
    model, run_cfg, classes, checkpoint = load(options)
    size = options["size"] or int(run_cfg.model.min_size)
    fixed = None if options["dynamic"] else size
    suffix = ".onnx" if options["format"] == "onnx" else ".pt"
    if options["out"]:
        out = Path(options["out"]).expanduser()
        if out.exists():
            raise ConfigError(f"out={out} already exists: an export never replaces a file; name another")
    else:
        out = checkpoint.parent.parent / "export" / time.strftime("%Y-%m-%d_%H-%M-%S") / f"model{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    images, gt = check_images(run_cfg, classes, max(1, options["check_images"]), fixed)
    example = images[0][1]  # a real val image: data-dependent steps (proposals, top-k) see real values
    log.info("Exporting %s (%s) to %s: %s input%s", checkpoint, run_cfg.model.name, out,
             "any size" if not fixed else f"{fixed}x{fixed}", "" if not fixed else " (resize images to it first)")
    export(model, options, example, out)
    if options["check_images"] == 0:
        log.info("Wrote %s (check_images=0: not checked against PyTorch)", out)
        return 0
    report = compare(model, runner(options, out), images, classes, gt)
    report.update(format=options["format"], dynamic=options["dynamic"], size=fixed, checkpoint=str(checkpoint),
                  file=str(out))
    out.with_suffix(".check.json").write_text(json.dumps(report, indent=1))
    log.info("Checked on %d val images: %d with every detection equal within 0.001 px; largest box difference "
             "%.5f px over matched detections (%d unmatched); mAP50 PyTorch %.4f, %s %.4f: %s", report["images"],
             report["images_identical"], report["largest_box_difference_px"], report["unmatched_detections"],
             report["map50_pytorch"], options["format"], report["map50_exported"],
             "they agree" if report["agree"] else f"they DIFFER by more than {TOLERANCE}")
    return 0 if report["agree"] else 1


def main(argv: list[str] | None = None) -> int:
    return run_command(export_command, argv)


if __name__ == "__main__":
    sys.exit(main())
