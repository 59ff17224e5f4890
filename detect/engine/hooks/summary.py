"""SummaryHook: keeps summary.json (detect.run.summary) current: what the run trains on, epochs
done, the best score and checkpoint, the last checkpoint, and how the run ended."""

from __future__ import annotations

from detect.engine.build import data_root
from detect.engine.gpu_settings import peak_memory_mb
from detect.engine.hooks.base import Hook
from detect.run import Status, SummaryFile


class SummaryHook(Hook):
    def __init__(self, summary: SummaryFile):
        self.summary = summary

    def before_train(self, trainer) -> None:
        parts = trainer.parts
        self.summary.update(
            classes=parts.classes, category_ids=parts.category_ids, data_root=data_root(trainer.cfg),
            data_files=parts.data_files(), epochs_done=trainer.state.epoch, wandb_run_id=trainer.state.wandb_run_id,
            resumed_from=trainer.state.resumed_from, weights=trainer.weights_name,
            **self._best(trainer))

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        self.summary.update(**self._best(trainer))

    def after_epoch(self, trainer) -> None:
        self.summary.update(epochs_done=trainer.state.epoch)
        memory = peak_memory_mb(trainer.parts.device)  # this epoch's peak (training and evaluation)
        if memory is not None and memory > (self.summary.data.gpu_mem_peak_mb or 0):
            self.summary.update(gpu_mem_peak_mb=memory)
        if trainer.checkpoints.last_written:
            self.summary.update(last_checkpoint=str(trainer.checkpoints.last_path))
        if trainer.state.nonfinite_skipped:
            self.summary.update(nonfinite_skipped=trainer.state.nonfinite_skipped)

    def after_train(self, trainer) -> None:
        if trainer.state.early_stop:
            self.summary.update(stopped_early=trainer.state.early_stop)
        self.summary.end(Status.FINISHED)

    def on_interrupt(self, trainer, consistent: bool) -> None:
        if consistent and trainer.state.interrupt_saved:
            self.summary.update(epochs_done=trainer.state.epoch, last_checkpoint=str(trainer.checkpoints.last_path))
        self.summary.end(Status.INTERRUPTED)

    def on_failure(self, trainer, error: BaseException) -> None:
        self.summary.end(Status.FAILED, error=f"{type(error).__name__}: {error}")

    @staticmethod
    def _best(trainer) -> dict:
        ckpt = trainer.checkpoints
        return {"best_score": ckpt.best_score, "best_epoch": ckpt.best_epoch,
                "best_checkpoint": str(ckpt.best_path) if ckpt.best_path else None}
