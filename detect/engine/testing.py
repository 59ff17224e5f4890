"""The work of `python -m detect.test`: a checkpoint's model, built from the config it carries, on
its val split (COCO metrics, the classwise table) or on test.json (COCO results and the submission
CSV). See detect/test.py for the command and what it writes."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from detect.errors import ConfigError

log = logging.getLogger("detect")


def check_test_options(cfg: DictConfig) -> None:
    """The keys of conf/test.yaml that Hydra cannot type-check, named when wrong."""
    if cfg.mode not in ("eval", "predict"):
        raise ConfigError(f"mode={cfg.mode} is not a mode: use mode=eval (metrics on val) or mode=predict "
                          "(submission).")
    if not isinstance(cfg.score_threshold, (int, float)) or not 0 <= cfg.score_threshold <= 1:
        raise ConfigError(f"score_threshold={cfg.score_threshold} must be a number in [0, 1] (default 0.05).")
    if not isinstance(cfg.max_detections, int) or cfg.max_detections < 1:
        raise ConfigError(f"max_detections={cfg.max_detections} must be a whole number >= 1 (default 100).")
    if cfg.tta_merge not in ("wbf", "nms"):
        raise ConfigError(f"tta_merge={cfg.tta_merge} is not a merge method: use wbf or nms.")
    scales = cfg.tta_scales
    if scales is not None and (not OmegaConf.is_list(scales) or not scales
                               or not all(isinstance(s, int) and s > 0 for s in scales)):
        raise ConfigError(f"tta_scales={scales} must be a list of sizes in pixels, e.g. tta_scales=[800,1024,1216], "
                          "or null (0.8x, 1x, 1.2x of data.min_size).")
    if not isinstance(cfg.tta_iou_thr, (int, float)) or not 0 < cfg.tta_iou_thr <= 1:
        raise ConfigError(f"tta_iou_thr={cfg.tta_iou_thr} must be a number in (0, 1].")


def apply_test_options(run_cfg: DictConfig, cfg: DictConfig) -> None:
    """This test's changes to the checkpoint's config, in place: data keys, batch size, score threshold
    and detections per image (two-stage models keep them under model.roi, one-stage under model.head,
    the transformers DETRs at model.score_thresh)."""
    for key, value in cfg.data.items():
        if value is not None:
            run_cfg.data[key] = value
    for key in ("min_size", "max_size"):  # the checkpoint's config is resolved: the model keeps its own copy
        if cfg.data[key] is not None and key in run_cfg.model:
            run_cfg.model[key] = cfg.data[key]
    if cfg.data.root is not None and "demo" in run_cfg.data:
        del run_cfg.data["demo"]  # a demo-trained model pointed at other data: read it, never generate there
    if cfg.batch_size is not None:
        run_cfg.data.batch_size = cfg.batch_size
    # Two-stage models keep the test-time keys under model.roi, one-stage under model.head, the
    # transformers DETRs at the top of model.
    test_head = run_cfg.model.get("roi") or run_cfg.model.get("head") or run_cfg.model
    if "score_thresh" not in test_head:
        raise ConfigError(f"model {run_cfg.model.name} has no roi/head score_thresh key: score_threshold cannot apply.")
    test_head.score_thresh = float(cfg.score_threshold)
    test_head.detections_per_img = int(cfg.max_detections)


def load_trained_model(run: str | None, checkpoint: str, adjust=None):
    """(model in eval mode, its run config, the checkpoint's state, the checkpoint path) for `run` +
    `checkpoint` (best | last | epoch_N | a path), as detect.predict, detect.export and detect.profile load
    it. `adjust(run_cfg)` may change the config (test-time thresholds) before the model is built."""
    from detect.engine.build import instantiate
    from detect.run.checkpoints import find_checkpoint, load_checkpoint

    path = Path(find_checkpoint(run, checkpoint))
    state = load_checkpoint(path)
    run_cfg = OmegaConf.create(state["config"])
    if adjust is not None:
        adjust(run_cfg)
    model = instantiate("model", run_cfg.model, num_classes=len(state["classes"]), _convert_="all")
    model.load_state_dict(state["model"])
    return model.eval(), run_cfg, state, path


def run_test(cfg: DictConfig, out_dir: Path) -> dict:
    """Load the checkpoint, build its model and data, then evaluate or predict. Returns the metrics
    (eval) or a summary of the predictions (predict)."""
    import torch

    from detect.data.build import annotation_files, build_dataset, build_loader
    from detect.engine.build import eval_batch_size, select_device
    from detect.engine.gpu_settings import amp_dtype, box_regression_in_fp32
    from detect.engine.inference import predict
    from detect.engine.tta import default_tta_scales, predict_tta
    from detect.evaluation.coco_metrics import SUMMARY_KEYS, evaluate_boxes, format_classwise_table
    from detect.evaluation.submission import submission_rows, write_submission
    from detect.run import TestDir

    check_test_options(cfg)
    model, run_cfg, state, path = load_trained_model(cfg.run, cfg.checkpoint,
                                                     adjust=lambda run_cfg: apply_test_options(run_cfg, cfg))
    classes = list(state["classes"])
    device = select_device(cfg.device, key="device")
    model.to(device)
    log.info("Checkpoint %s: model %s after epoch %s, %d classes", path, run_cfg.model.name, state.get("epoch"),
             len(classes))

    split = "val" if cfg.mode == "eval" else "test"
    ann = annotation_files(run_cfg.data)[split]
    if ann is None:
        raise ConfigError(f"mode={cfg.mode} needs the {split} file, but the run's data has none "
                          f"(data={run_cfg.data.name}): set data.{split}_ann=<file> or, for a k-fold run, data.fold=k.")
    # The run's categories stand in for a test.json that lists none (competition test files may not).
    categories = [{"id": cat, "name": name} for name, cat in zip(classes, state.get("category_ids") or [])] or None
    dataset = build_dataset(run_cfg.data, split, train=False, classes=classes, categories=categories,
                            float_output=device.type != "cuda",  # on a GPU: uint8, converted there
                            classes_source=f"the checkpoint {path.name} (its training data)")
    # No batch_size given: the run's evaluation batch (runtime.eval_batch_size; auto doubles it on CUDA).
    batch_size = (int(cfg.batch_size) if cfg.batch_size is not None else
                  eval_batch_size(run_cfg.get("runtime", {}).get("eval_batch_size", "auto"), run_cfg.data.batch_size,
                                  device))
    loader = build_loader(dataset, batch_size, False, cfg.workers, 0, device.type == "cuda")
    if cfg.get("amp") is not None:
        dtype = amp_dtype(cfg.amp, device, key="amp")
    else:  # the run's runtime.amp; a precision this GPU lacks (bf16 on a V100) falls back to fp32
        try:
            dtype = amp_dtype(run_cfg.get("runtime", {}).get("amp", False), device, key="the run's runtime.amp")
        except ConfigError as err:
            log.info("%s Testing in fp32 (amp=fp16 asks for fp16).", err)
            dtype = None
    if dtype is not None:
        box_regression_in_fp32(model)  # boxes decoded in fp32 (bf16 coordinates move in steps of several pixels)
    torch.set_grad_enabled(False)
    category_ids = [dataset.category_of_label[label] for label in range(1, len(classes) + 1)]

    if cfg.tta:
        scales = list(cfg.tta_scales) if cfg.tta_scales else default_tta_scales(run_cfg.model)
        log.info("TTA: scales %s%s, merged by %s at IoU %s", scales, " with flips" if cfg.tta_flip else "",
                 cfg.tta_merge, cfg.tta_iou_thr)
        results = predict_tta(model, loader, device, dataset.category_of_label, scales, cfg.tta_flip, cfg.tta_merge,
                              cfg.tta_iou_thr, int(cfg.max_detections), float(cfg.score_threshold))
    else:
        # A progress bar in a terminal (a test set of thousands of images takes a while), none in a log file.
        from detect.engine.progress import eval_bar, resolve_mode, terminal_logging_above_bars

        mode = resolve_mode("auto")
        with terminal_logging_above_bars() if mode == "bar" else contextlib.nullcontext():
            results = predict(model, loader, device, dataset.category_of_label,
                              show=lambda batches: eval_bar(mode, batches, len(loader), cfg.mode), amp_dtype=dtype)
    files = TestDir(out_dir)
    files.predictions_file.write_text(json.dumps(results) + "\n")  # also for error analysis

    if cfg.mode == "eval":
        metrics = evaluate_boxes(dataset.coco, results, classes, category_ids)
        log.info("Evaluation of %s on %s (%d images%s):\n%s", path.name, dataset.ann_file, len(dataset),
                 ", TTA" if cfg.tta else "", format_classwise_table(metrics))
        log.info("  ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_KEYS))
        record = {"checkpoint": str(path), "epoch": state.get("epoch"), "ann_file": str(dataset.ann_file),
                  "tta": bool(cfg.tta), **metrics}
        files.metrics_file.write_text(json.dumps(record, indent=2) + "\n")
        log.info("Wrote %s and %s", files.metrics_file, files.predictions_file)
        return metrics

    write_submission(files.submission_file, submission_rows(results, dataset.images, category_ids))
    empty = len(dataset.images) - len({r["image_id"] for r in results})
    log.info("Predicted %d images of %s: %d detections (score >= %s, at most %d per image; %d images without any)",
             len(dataset), dataset.ann_file, len(results), cfg.score_threshold, cfg.max_detections, empty)
    log.info("Wrote %s and %s", files.predictions_file, files.submission_file)
    return {"images": len(dataset), "detections": len(results), "submission": str(files.submission_file)}
