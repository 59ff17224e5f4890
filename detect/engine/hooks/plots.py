"""PlotsHook: what a run shows besides its numbers. After each evaluation: the curves in plots/ and,
when the epoch is the new best, its val detections (val_predictions.bbox.json, what the PR curves
and the confusion matrix are drawn from); at the end: every plot, report.md and the closing summary
in train.log. A plot that fails never stops training: one warning, then plotting is off for the run
(the metrics and checkpoints are what matter)."""

from __future__ import annotations

import logging
import time

from detect.engine.hooks.base import Hook
from detect.plots.report import METRIC_COLUMNS, build_report, refresh_training_plots
from detect.run import RunDir, read_metrics, write_json_atomic

log = logging.getLogger("detect")


class PlotsHook(Hook):
    """Rank 0 only (`enabled`); `plots_cfg` is runtime.plots."""

    def __init__(self, run_dir: RunDir, plots_cfg, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.plots = enabled and bool(plots_cfg.get("enabled", True))
        self.score_thr = float(plots_cfg.get("confusion_score_thr", 0.25))
        self.iou_thr = float(plots_cfg.get("confusion_iou_thr", 0.5))
        self.started = time.perf_counter()

    def _plot(self, what: str, make) -> None:
        if not self.plots:
            return
        try:
            make()
        except Exception as err:  # noqa: BLE001 - a plot must never take the run down
            self.plots = False
            log.warning("Plotting %s failed (%s: %s); no more plots in this run. The metrics are in %s: "
                        "python -m detect.report run=%s draws them later.", what, type(err).__name__, err,
                        self.run_dir.metrics_file.name, self.run_dir)

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        if not self.enabled:
            return
        if trainer.checkpoints.best_epoch == trainer.state.epoch:  # this evaluation is the new best
            write_json_atomic(self.run_dir.predictions_file, detections, indent=None)
        monitor = trainer.checkpoints.monitor
        self._plot("the training curves", lambda: refresh_training_plots(self.run_dir.root, monitor))

    def after_train(self, trainer) -> None:
        if not self.enabled:
            return

        def report():
            result = build_report(self.run_dir.root, self.score_thr, self.iou_thr)
            for why in result.skipped:
                log.info("Not drawn: %s", why)

        self._plot("the run report", report)
        log.info(self.closing_summary(trainer))

    def closing_summary(self, trainer) -> str:
        """A few lines for the end of train.log: time, best epoch and its scores, where things are."""
        ckpt = trainer.checkpoints
        best_record = read_metrics(self.run_dir.metrics_file).val_of_epoch(ckpt.best_epoch) if ckpt.best_epoch else None
        minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
        lines = [f"Run finished in {minutes} min {seconds:02d} s: {trainer.state.epoch} epoch(s), "
                 f"run dir {self.run_dir}"]
        if ckpt.best_epoch is None:
            lines.append(f"  No evaluation (no val split): no best checkpoint; last checkpoint {ckpt.last_path}")
        else:
            scores = "  ".join(f"{k}={best_record[k]:.4f}" for k in METRIC_COLUMNS
                               if best_record and isinstance(best_record.get(k), (int, float)))
            lines.append(f"  Best {ckpt.monitor}={ckpt.best_score:.4f} at epoch {ckpt.best_epoch}: {scores}")
            lines.append(f"  Best checkpoint: {ckpt.best_path}")
        if self.plots:
            lines.append(f"  Plots: {self.run_dir.plots}/  Report: {self.run_dir.report_file}")
        return "\n".join(lines)
