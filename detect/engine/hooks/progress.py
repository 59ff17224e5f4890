"""ProgressHook: a bar per training epoch in a terminal (runtime.progress; see detect/engine/progress.py)."""

from __future__ import annotations

from detect.engine.hooks.base import Hook
from detect.engine.progress import EpochBar


class ProgressHook(Hook):
    def __init__(self, mode: str):
        self.mode = mode  # bar | lines (resolved)
        self.bar: EpochBar | None = None

    def before_epoch(self, trainer) -> None:
        self.bar = EpochBar(self.mode, trainer.state.epoch, trainer.epochs, trainer.parts.iters_per_epoch,
                            initial=trainer.state.step)

    def after_step(self, trainer, losses: dict[str, float]) -> None:
        self.bar.step(losses, trainer.parts.optimizer.param_groups[0]["lr"])

    def after_epoch(self, trainer) -> None:
        self.close()

    def on_close(self, trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
