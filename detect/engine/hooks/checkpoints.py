"""CheckpointHook: the best checkpoint after each evaluation, epoch_N.pth every
runtime.checkpoint_interval epochs (pruned to runtime.max_keep_ckpts), last.pth after every epoch
and at a stop (Ctrl-C / SIGTERM) at its exact step. The files are the CheckpointManager's."""

from __future__ import annotations

from detect.engine.hooks.base import Hook


class CheckpointHook(Hook):
    def __init__(self, interval: int):
        self.interval = int(interval)

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        manager = trainer.checkpoints
        manager.save_best_if_better(trainer.checkpoint_state, trainer.state.epoch, metrics[manager.monitor])

    def after_epoch(self, trainer) -> None:
        manager, epoch = trainer.checkpoints, trainer.state.epoch
        if not manager.enabled:
            return
        state = trainer.checkpoint_state()
        if epoch % self.interval == 0 or epoch == trainer.epochs:
            manager.save_epoch(state, epoch)
        manager.save_last(state)

    def on_interrupt(self, trainer, consistent: bool) -> None:
        if consistent:
            manager = trainer.checkpoints
            trainer.state.interrupt_saved = manager.save_last(trainer.checkpoint_state()) if manager.enabled else True
