"""Predict with a trained model on any folder, glob, image or video (no annotation json needed).

    python -m detect.predict run=outputs/member_a/cascade_r50_fold0/2026-11-27_10-00-00 source=photos/
    python -m detect.predict run=<run dir> checkpoint=last source='site/**/*.jpg' score_threshold=0.5 tta=true
    python -m detect.predict checkpoint=path/to/best.pth source=clip.mp4 every=5        # every 5th frame
    python -m detect.predict run=<run dir> source=data/trash/test coco_json=data/trash/test.json   # + COCO results

Writes into a new folder (`out=`, default <run dir>/predict/<time>/; an existing non-empty folder is never
written into): predictions.json (per image: file, width, height, detections with box [x0, y0, x1, y1] in
original pixels, class name, label 1..C and score; per video: fps and the detections of each predicted
frame; the unreadable files with the reason), drawn/ (each image, and each video as .mp4, with class
colours and scores; draw=false skips them) and, with coco_json=, coco_results.bbox.json for the images the
json lists. Keys (key=value): run, checkpoint (best|last|epoch_N|<path>), source, out, score_threshold
(0.3), max_detections (100), batch_size (4), device (auto), tta (false), tta_scales, tta_flip (true),
tta_merge (wbf), tta_iou_thr (0.55), draw (true), every (1: every video frame), coco_json.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from detect.cli import parse_key_values, run_command
from detect.errors import ConfigError, UsageError

log = logging.getLogger("detect")

DEFAULTS = {"run": None, "checkpoint": "best", "source": None, "out": None, "score_threshold": 0.3,
            "max_detections": 100, "batch_size": 4, "device": "auto", "tta": False, "tta_scales": None,
            "tta_flip": True, "tta_merge": "wbf", "tta_iou_thr": 0.55, "draw": True, "every": 1, "coco_json": None}


def parse_options(argv: list[str]) -> dict:
    """key=value pairs over DEFAULTS, typed like the defaults; tta_scales is a list ([512,640])."""
    options = parse_key_values(argv, DEFAULTS, "python -m detect.predict", lists=("tta_scales",))
    if options["source"] is None:
        raise UsageError("source=<folder|glob|image|video> is required")
    if not 0 <= options["score_threshold"] <= 1:
        raise UsageError(f"score_threshold={options['score_threshold']} must be in [0, 1]")
    if options["batch_size"] < 1 or options["every"] < 1 or options["max_detections"] < 1:
        raise UsageError("batch_size, every and max_detections must be at least 1")
    return options


def output_folder(options: dict, checkpoint: Path) -> Path:
    if options["out"]:
        out = Path(options["out"]).expanduser()
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"out={out} already holds files: predictions never overwrite an earlier output; "
                              "name a new folder or leave out= out (a new <run dir>/predict/<time>/).")
        return out
    base = checkpoint.parent.parent / "predict" if options["run"] else Path("outputs") / "predict"
    out = base / time.strftime("%Y-%m-%d_%H-%M-%S")
    suffix = 2
    while out.exists():  # two predictions in one second: the second gets its own folder
        out = base / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{suffix}"
        suffix += 1
    return out


def load_model(options: dict):
    import torch

    from detect.engine.build import select_device
    from detect.engine.testing import load_trained_model

    def thresholds(run_cfg) -> None:
        # Every model keeps its test-time filter in its config: low enough for our threshold, our count at most.
        head = run_cfg.model.get("roi") or run_cfg.model.get("head") or run_cfg.model
        if "score_thresh" in head:
            head.score_thresh = min(float(head.score_thresh), options["score_threshold"])
            head.detections_per_img = int(options["max_detections"])

    model, run_cfg, state, path = load_trained_model(options["run"], options["checkpoint"], adjust=thresholds)
    classes = list(state["classes"])
    model.category_ids = list(state.get("category_ids") or range(1, len(classes) + 1))  # json id of each label
    device = select_device(options["device"], key="device")
    model.to(device)
    torch.set_grad_enabled(False)
    return model, run_cfg, classes, path, device


def coco_image_ids(coco_json: str) -> dict[str, int]:
    """file name (as the json writes it, and its base name) -> image id."""
    images = json.loads(Path(coco_json).read_text())["images"]
    ids = {}
    for image in images:
        ids[str(image["file_name"])] = int(image["id"])
        ids.setdefault(Path(str(image["file_name"])).name, int(image["id"]))
    return ids


def predict_command(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    options = parse_options(argv)
    from detect.engine import prediction as p
    from detect.engine.progress import resolve_mode
    from detect.plots.browse import class_colors

    sources = p.find_sources(options["source"])
    model, run_cfg, classes, checkpoint, device = load_model(options)
    out = output_folder(options, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    colors = class_colors(len(classes))
    tta = None
    if options["tta"]:
        from detect.engine.tta import default_tta_scales

        tta = {"scales": options["tta_scales"] or default_tta_scales(run_cfg.model),
               "flip": options["tta_flip"], "merge": options["tta_merge"], "iou_thr": options["tta_iou_thr"],
               "max_detections": options["max_detections"], "score_thr": options["score_threshold"],
               "num_classes": len(classes)}
    log.info("Predicting with %s (%s, %d classes) on %d images and %d videos from %s%s; writing to %s", checkpoint,
             run_cfg.model.name, len(classes), len(sources.images), len(sources.videos), options["source"],
             f", TTA at {tta['scales']}" if tta else "", out)
    bar = resolve_mode("auto", True) == "bar"
    unreadable: list[dict] = []
    images_out, videos_out = [], []
    progress = None
    if bar:
        from tqdm import tqdm

        progress = tqdm(total=len(sources.images), unit="img", desc="predict", leave=False)
    for batch in p.image_batches(sources.images, options["batch_size"], unreadable):
        detections = p.detect_batch(model, [image for _, image in batch], device, tta)
        for (path, image), det in zip(batch, detections):
            det = p.keep(det, options["score_threshold"], options["max_detections"])
            images_out.append({"file": str(path), "width": int(image.shape[-1]), "height": int(image.shape[-2]),
                               "detections": p.as_records(det, classes)})
            if options["draw"]:
                p.save_image(p.draw(image, det, classes, colors), out / "drawn" / f"{path.stem}.jpg")
        if progress is not None:
            progress.update(len(batch))
    if progress is not None:
        progress.close()
    for video in sources.videos:
        videos_out.append(predict_video(p, model, video, options, classes, colors, device, tta, out, unreadable))

    results = {"checkpoint": str(checkpoint), "model": run_cfg.model.name, "classes": classes,
               "score_threshold": options["score_threshold"], "max_detections": options["max_detections"],
               "tta": tta, "images": images_out, "videos": videos_out, "unreadable": unreadable}
    (out / "predictions.json").write_text(json.dumps(results, indent=1))
    if options["coco_json"]:
        write_coco_results(images_out, options["coco_json"], out, model.category_ids)
    boxes = sum(len(i["detections"]) for i in images_out)
    log.info("Predicted %d images (%d detections) and %d videos; %d unreadable file(s)%s. Wrote %s", len(images_out),
             boxes, len(videos_out), len(unreadable),
             ": " + ", ".join(Path(u["file"]).name for u in unreadable[:10]) if unreadable else "",
             out / "predictions.json")
    return 0


def predict_video(p, model, video: Path, options: dict, classes, colors, device, tta, out: Path,
                  unreadable: list[dict]) -> dict:
    try:
        frames, fps = p.video_frames(video, options["every"])
        record = {"file": str(video), "fps": fps, "every": options["every"], "frames": []}
        writer = None
        batch = []

        def flush():
            nonlocal writer
            detections = p.detect_batch(model, [image for _, _, image in batch], device, tta)
            for (index, seconds, image), det in zip(batch, detections):
                det = p.keep(det, options["score_threshold"], options["max_detections"])
                record["frames"].append({"frame": index, "time": round(seconds, 3),
                                         "detections": p.as_records(det, classes)})
                if options["draw"]:
                    if writer is None:
                        (out / "drawn").mkdir(parents=True, exist_ok=True)
                        writer = p.VideoWriter(out / "drawn" / f"{video.stem}.mp4", fps / options["every"],
                                               image.shape[-1], image.shape[-2])
                    writer.write(p.draw(image, det, classes, colors))
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == options["batch_size"]:
                flush()
        if batch:
            flush()
        if writer is not None:
            writer.close()
        log.info("%s: %d frames predicted (every %d of %.1f fps)", video, len(record["frames"]), options["every"], fps)
        return record
    except Exception as err:  # PyAV raises its own error kinds for files it cannot open or decode
        if type(err).__module__.split(".")[0] != "av" and not isinstance(err, OSError):
            raise
        unreadable.append({"file": str(video), "error": f"{type(err).__name__}: {err}"})
        log.warning("Skipped %s: not a readable video (%s)", video, type(err).__name__)
        return {"file": str(video), "frames": [], "error": f"{type(err).__name__}: {err}"}


def write_coco_results(images_out: list[dict], coco_json: str, out: Path, category_ids: list[int]) -> None:
    """COCO results (bbox xywh; the category id the run's training json gave each class) for the images
    `coco_json` lists, matched by file name (as written there, or its base name)."""
    ids = coco_image_ids(coco_json)
    results, matched = [], 0
    for image in images_out:
        image_id = ids.get(image["file"]) or ids.get(Path(image["file"]).name)
        if image_id is None:
            continue
        matched += 1
        for det in image["detections"]:
            x0, y0, x1, y1 = det["box"]
            results.append({"image_id": image_id, "category_id": int(category_ids[det["label"] - 1]),
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": det["score"]})
    (out / "coco_results.bbox.json").write_text(json.dumps(results))
    log.info("COCO results for %d of %d images listed in %s: %s", matched, len(images_out), coco_json,
             out / "coco_results.bbox.json")


def main(argv: list[str] | None = None) -> int:
    return run_command(predict_command, argv)


if __name__ == "__main__":
    sys.exit(main())
