"""EmaHook: updates the moving average of the weights (schedule.ema, detect/engine/ema.py) after
every optimizer step; with schedule.accumulate that is every N batches."""

from __future__ import annotations

from detect.engine.hooks.base import Hook


class EmaHook(Hook):
    def __init__(self):
        self.iteration = None  # the optimizer step the average last saw

    def before_train(self, trainer) -> None:
        self.iteration = trainer.state.iteration

    def after_step(self, trainer, losses: dict[str, float]) -> None:
        ema = trainer.parts.ema
        if ema is not None and trainer.state.iteration != self.iteration:
            ema.update(trainer.parts.model)
            self.iteration = trainer.state.iteration
