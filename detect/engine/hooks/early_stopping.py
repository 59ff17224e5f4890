"""EarlyStoppingHook: ends the run when runtime.monitor has not improved by more than
runtime.early_stopping.min_delta for `patience` evaluations in a row (MMDetection's
EarlyStoppingHook, Ultralytics' patience). The run ends `finished`; the log and summary.json
(`stopped_early`) say why and when. The count is part of the checkpoints, so a resumed run goes on
counting; resuming an early-stopped run trains on until the next evaluation that does not improve."""

from __future__ import annotations

import logging

from detect.engine.hooks.base import Hook
from detect.run.checkpoints import is_better

log = logging.getLogger("detect")


class EarlyStoppingHook(Hook):
    def __init__(self, patience: int | None, min_delta: float):
        self.patience = int(patience) if patience else None
        self.min_delta = float(min_delta)

    def before_train(self, trainer) -> None:
        trainer.state.early_stop = None  # a resume asks to go on: stop again only when the count says so

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        if self.patience is None:
            return
        state, monitor = trainer.state, trainer.checkpoints.monitor
        score = metrics.get(monitor)
        if is_better(score, state.early_stopping_best, self.min_delta):
            state.early_stopping_best, state.stale_evaluations = score, 0
            return
        state.stale_evaluations += 1
        if state.stale_evaluations >= self.patience and state.epoch < trainer.epochs:
            state.early_stop = (
                f"{monitor} did not improve by more than {self.min_delta:g} for {state.stale_evaluations} "
                f"evaluation(s) (best {state.early_stopping_best}, runtime.early_stopping.patience={self.patience}); "
                f"stopped after epoch {state.epoch} of {trainer.epochs}")
            log.info("Early stopping: %s.", state.early_stop)
