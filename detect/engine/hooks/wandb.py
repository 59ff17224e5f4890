"""WandbHook: mirrors the run's logs to Weights & Biases through WandbLogger, which never stops
training (detect/engine/wandb_logger.py has the rules). Rank 0 only."""

from __future__ import annotations

from detect.engine.hooks.base import Hook
from detect.engine.wandb_logger import WandbLogger


class WandbHook(Hook):
    def __init__(self, overrides: list[str], enabled: bool = True):
        self.overrides = list(overrides)
        self.enabled = enabled
        self.wandb = WandbLogger()

    def before_train(self, trainer) -> None:
        if not self.enabled:
            return
        self.wandb.start(trainer.cfg, trainer.run_dir.root, self.overrides, resume_id=trainer.state.wandb_run_id)
        if self.wandb.run_id:
            trainer.state.wandb_run_id = self.wandb.run_id

    def after_log(self, trainer, record: dict) -> None:
        self.wandb.log_train(record)

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        self.wandb.log_eval(trainer.state.epoch, trainer.state.iteration, metrics)

    def after_train(self, trainer) -> None:
        ckpt = trainer.checkpoints
        self.wandb.log_best_checkpoint(ckpt.best_path, {ckpt.monitor: ckpt.best_score, "epoch": ckpt.best_epoch})

    def on_close(self, trainer) -> None:
        self.wandb.finish(trainer.state.status)  # exit code 0 when finished, else 1
