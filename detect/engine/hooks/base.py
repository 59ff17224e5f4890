"""The hook interface: one method per event of the training loop (detect/engine/loop.py), each a
no-op here. A hook overrides the events it needs; every method gets the Trainer first, whose
`state`, `parts`, `run_dir`, `checkpoints` and `cfg` it may read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detect.engine.loop import Trainer

# In the order a run meets them. Nested: after_log inside after_step, after_evaluation inside after_epoch.
EVENTS = ("before_train", "before_epoch", "after_step", "after_log", "after_epoch", "after_evaluation",
          "after_train", "on_interrupt", "on_failure", "on_close")


class Hook:
    def before_train(self, trainer: Trainer) -> None:
        """After building and resuming, before the first step."""

    def before_epoch(self, trainer: Trainer) -> None:
        """Before the epoch's first step (`trainer.state.step` > 0 when resumed inside the epoch)."""

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """After each batch: its loss terms and their sum `loss` (skipped batches: not called). The
        optimizer steps after every batch, or every schedule.accumulate batches (`state.iteration` counts
        optimizer steps)."""

    def after_log(self, trainer: Trainer, record: dict) -> None:
        """Every runtime.log_interval steps: the averaged training record (mode, epoch, iter, step, lr, loss*, s/it)."""

    def after_epoch(self, trainer: Trainer) -> None:
        """After the epoch's last step; `trainer.state.epoch` counts it already."""

    def after_evaluation(self, trainer: Trainer, metrics: dict, detections: list[dict]) -> None:
        """After an evaluation (rank 0 only): COCO metrics incl. classwise, and the val detections."""

    def after_train(self, trainer: Trainer) -> None:
        """The last epoch is done: the run finished."""

    def on_interrupt(self, trainer: Trainer, consistent: bool) -> None:
        """Ctrl-C / SIGTERM: the run stops at `trainer.state`; `consistent` is False when the state
        must not be saved (a second Ctrl-C, loader workers killed mid-step)."""

    def on_failure(self, trainer: Trainer, error: BaseException) -> None:
        """An exception ends the run; it is re-raised after the hooks have seen it."""

    def on_close(self, trainer: Trainer) -> None:
        """Always last (finished, interrupted or failed: `trainer.state.status`): close what was opened."""
