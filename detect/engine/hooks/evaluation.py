"""EvaluationHook: COCO evaluation on the val split every runtime.eval_interval epochs and after the
last one; the classwise table goes to train.log, then `after_evaluation` is fired."""

from __future__ import annotations

import logging
import time

from detect.engine import distributed
from detect.engine.hooks.base import Hook
from detect.engine.inference import evaluate
from detect.engine.progress import eval_bar
from detect.evaluation.coco_metrics import SUMMARY_KEYS, format_classwise_table

log = logging.getLogger("detect")


class EvaluationHook(Hook):
    def __init__(self, interval: int, progress_mode: str):
        self.interval = int(interval)
        self.progress_mode = progress_mode

    def due(self, trainer) -> bool:
        done = trainer.state.epoch
        return trainer.parts.val_loader is not None and (done % self.interval == 0 or done == trainer.epochs)

    def after_epoch(self, trainer) -> None:
        if not self.due(trainer):
            return
        parts, epoch = trainer.parts, trainer.state.epoch
        tic = time.perf_counter()
        distributed.sync_buffers(parts.model, parts.place)
        result = evaluate(trainer.eval_model, parts.val_loader, parts.device, parts.place,
                          show=lambda batches: eval_bar(self.progress_mode, batches, len(parts.val_loader)),
                          amp_dtype=parts.amp_dtype)  # runtime.amp: evaluation in mixed precision too
        if result is None:  # not rank 0: its predictions went to rank 0, which scores them and keeps the best
            return
        metrics, detections = result
        log.info("Evaluation after epoch %d (%s%d images%s, %.1fs):\n%s", epoch,
                 "EMA weights, " if trainer.weights_name == "ema" else "", metrics.pop("images"),
                 f" on {parts.place.world_size} processes" if parts.place.enabled else "",
                 time.perf_counter() - tic, format_classwise_table(metrics))
        log.info("  ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_KEYS))
        trainer.fire("after_evaluation", metrics, detections)
