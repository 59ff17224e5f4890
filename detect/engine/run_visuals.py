"""What a run shows besides its numbers: plots after each evaluation, the best epoch's val
predictions, the report and a closing summary. A plot that fails never stops training: one
warning, then plotting is off for the run (the metrics and checkpoints are what matter).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from detect.engine.run_files import write_json_atomic
from detect.report import METRIC_COLUMNS, PLOTS_DIR, PREDICTIONS_FILE, build_report, refresh_training_plots

log = logging.getLogger("detect")


class RunVisuals:
    """Keeps `<run dir>/plots/`, `val_predictions.bbox.json` and `report.md` current (rank 0 only)."""

    def __init__(self, run_dir: Path, monitor: str, plots_cfg, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.enabled = enabled  # False: DDP ranks other than 0
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
            log.warning("Plotting %s failed (%s: %s); no more plots in this run. The metrics are in metrics.jsonl: "
                        "python -m detect.report run=%s draws them later.", what, type(err).__name__, err,
                        self.run_dir)

    def new_best(self, detections: list[dict]) -> None:
        """The best epoch's detections on the val split: what the end-of-run plots and
        `detect.report` draw PR curves and the confusion matrix from."""
        if self.enabled:
            write_json_atomic(self.run_dir / PREDICTIONS_FILE, detections, indent=None)

    def after_evaluation(self) -> None:
        self._plot("the training curves", lambda: refresh_training_plots(self.run_dir, self.monitor))

    def at_end(self) -> None:
        def report():
            result = build_report(self.run_dir, self.score_thr, self.iou_thr)
            for why in result.skipped:
                log.info("Not drawn: %s", why)

        self._plot("the run report", report)

    def closing_summary(self, summary: dict) -> str:
        """A few lines for the end of train.log: time, best epoch and its scores, where things are."""
        from detect.plots.training import read_metrics

        best_epoch = summary.get("best_epoch")
        val = read_metrics(self.run_dir / "metrics.jsonl").val if best_epoch is not None else []
        best_record = next((r for r in val if r["epoch"] == best_epoch), None)
        minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
        lines = [f"Run finished in {minutes} min {seconds:02d} s: {summary.get('epochs_done')} epoch(s), "
                 f"run dir {self.run_dir}"]
        if best_epoch is None:
            lines.append("  No evaluation (no val split): no best checkpoint; last checkpoint "
                         f"{self.run_dir / 'checkpoints' / 'last.pth'}")
        else:
            scores = "  ".join(f"{k}={best_record[k]:.4f}" for k in METRIC_COLUMNS
                               if best_record and isinstance(best_record.get(k), (int, float)))
            lines.append(f"  Best {self.monitor}={summary.get('best_score'):.4f} at epoch {summary.get('best_epoch')}: "
                         f"{scores}")
            lines.append(f"  Best checkpoint: {summary.get('best_checkpoint')}")
        if self.plots:
            lines.append(f"  Plots: {self.run_dir / PLOTS_DIR}/  Report: {self.run_dir / 'report.md'}")
        return "\n".join(lines)
