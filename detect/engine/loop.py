"""The training loop: epochs of steps, with hooks called at named events.

    before_train
    for each epoch:   before_epoch, then per step: train_step -> after_step (-> after_log)
                      after_epoch (-> after_evaluation when the evaluation hook evaluates)
    after_train | on_interrupt | on_failure, and always on_close

Everything else (evaluation, checkpoints, metrics and logs, progress bars, plots, W&B, the run
summary) is a hook in detect/engine/hooks/; their order is the one list in detect/engine/fit.py.
A hook may fire a nested event (the evaluation hook fires after_evaluation, the metrics hook
after_log). Adding a hook never touches this file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from detect.engine import distributed
from detect.engine.build import Components
from detect.engine.compile import compile_errors
from detect.engine.hooks.base import EVENTS, Hook
from detect.engine.inference import move_to
from detect.engine.interrupt import StopRequest
from detect.engine.reproducibility import rng_states
from detect.errors import DetectError, HookError, NonFiniteLossError, RunInterrupted
from detect.run import RunDir, Status
from detect.run.checkpoints import CheckpointManager

log = logging.getLogger("detect")


@dataclass
class TrainState:
    """Where the run stands; hooks read it, checkpoints record it."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done inside the next epoch (> 0 only while inside it, or resumed mid-epoch)
    iteration: int = 0  # optimizer steps over the whole run
    status: str = Status.RUNNING.value
    nonfinite_skipped: int = 0  # steps skipped for a NaN/inf loss (runtime.skip_nonfinite)
    stop_agreed: bool = False  # every process agreed to stop after this step (Ctrl-C, SIGTERM)
    interrupt_saved: bool | None = None  # after a stop: whether last.pth holds the stop position
    wandb_run_id: str | None = None  # the W&B run this run logs to (a resume continues it)
    resumed_from: str | None = None  # the checkpoint this session continued from
    early_stopping_best: float | None = None  # the best monitored score by more than min_delta (early stopping)
    stale_evaluations: int = 0  # evaluations since it improved
    early_stop: str | None = None  # set by the early-stopping hook: why the run ends before its last epoch


class Trainer:
    """Runs `cfg.schedule.epochs` epochs of `parts.train_loader` and calls `hooks` in list order."""

    def __init__(self, cfg: DictConfig, parts: Components, run_dir: RunDir, checkpoints: CheckpointManager,
                 hooks: list[Hook], state: TrainState | None = None, stop: StopRequest | None = None):
        self.cfg, self.parts, self.run_dir, self.checkpoints = cfg, parts, run_dir, checkpoints
        self.hooks = hooks
        self.state = state or TrainState()
        self.stop = stop or StopRequest()  # not entered: never asks to stop
        self.epochs = int(cfg.schedule.epochs)
        # schedule.accumulate: one optimizer step every `accumulate` batches (gradients summed in between).
        self.accumulate = int(cfg.schedule.get("accumulate", 1))
        self.group_counted = 0  # batches of the current accumulation group that contributed a gradient
        self.data_wait = 0.0  # seconds the last step waited for its batch (the loader); logged as data_time
        self.model_name = str(OmegaConf.select(cfg, "model.name", default="the model"))  # in compiler messages

    # ------------------------------------------------------------------ the loop
    def train(self) -> float | None:
        """Train from where the state stands to the last epoch; returns the best monitored score."""
        try:
            self.fire("before_train")
            while self.state.epoch < self.epochs:
                self.train_epoch()
                self.fire("after_epoch")
                # A stop asked during the epoch's last step, its evaluation or its checkpoints; early
                # stopping decided on rank 0 (which evaluates): every process learns both here.
                stop, early = distributed.any_rank([self.stop(), bool(self.state.early_stop)], self.parts.place)
                if early:
                    break
                if stop and self.state.epoch < self.epochs:
                    self.interrupt()
            self.state.status = Status.FINISHED.value
            self.fire("after_train")
            return self.checkpoints.best_score
        except RunInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: out at once, the previous last.pth stays
            self.state.status = Status.INTERRUPTED.value
            self.fire("on_interrupt", False)
            raise RunInterrupted(f"Stopped at once by a second Ctrl-C at iteration {self.state.iteration}: no new "
                                 f"checkpoint. Continue from the previous one with runtime.resume_from={self.run_dir}.",
                                 130) from None
        except BaseException as err:
            self.state.status = Status.FAILED.value
            self.fire("on_failure", err)
            raise
        finally:
            self.fire("on_close")

    def train_epoch(self) -> None:
        epoch, first_step, loader = self.state.epoch, self.state.step, self.parts.train_loader
        # Re-seeded per epoch, told which batches were done: a resumed run shuffles and augments
        # epoch e (from step first_step) as the uninterrupted run would have.
        loader.generator.manual_seed(int(self.cfg.runtime.seed) + epoch)
        loader.batch_sampler.set_epoch(epoch, start_batch=first_step)
        self.fire("before_epoch")
        self.parts.train_model.train()  # the evaluation after the previous epoch left it in eval mode
        batches = iter(loader)
        for step in range(first_step, self.parts.iters_per_epoch):
            try:
                tic = time.perf_counter()
                images, targets = next(batches)
                self.data_wait = time.perf_counter() - tic
                losses = self.train_step(images, targets, step)
            except RuntimeError as err:
                if not (self.stop() and "DataLoader worker" in str(err)):
                    raise
                # A SIGTERM sent to every process (e.g. by a cluster) also killed the loader workers in the
                # middle of a step: that step's state is not consistent, so the last checkpoint stays.
                self.interrupt(consistent=False)
            self.state.step = step + 1
            if losses is not None:
                self.fire("after_step", losses)
            # A stop waits for the end of an accumulation group: a checkpoint never holds half-summed gradients.
            if self.state.stop_agreed and self.state.step < self.parts.iters_per_epoch and \
                    self.state.step % self.accumulate == 0:
                self.interrupt()
        self.state.epoch, self.state.step = epoch + 1, 0

    def train_step(self, images: list[torch.Tensor], targets: list[dict], step: int) -> dict[str, float] | None:
        """Forward and backward of batch `step` of the epoch; the optimizer steps after the last batch
        of each accumulation group (every batch with schedule.accumulate=1). Returns the loss terms and
        their sum `loss`, or None when the batch was skipped for a non-finite loss (runtime.skip_nonfinite)."""
        parts = self.parts
        group_start = step - step % self.accumulate
        group_size = min(self.accumulate, parts.iters_per_epoch - group_start)  # the epoch's last group may be short
        last_of_group = step == group_start + group_size - 1
        if step == group_start:
            parts.optimizer.zero_grad(set_to_none=True)
            self.group_counted = 0
        images, targets = move_to(images, targets, parts.device, non_blocking=True)
        with torch.autocast(parts.device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None), \
                compile_errors(self.model_name):
            loss_dict = parts.train_model(images, targets)
        loss = sum(loss_dict.values())
        # One host copy of all loss values per step (one synchronisation with the GPU, not one per
        # term): used for the exact finite check before the backward pass and for the log.
        names = list(loss_dict)
        copied = torch.stack([torch.as_tensor(loss_dict[k]).detach().float().reshape(()).to(loss.device)
                              for k in names]).tolist()
        values = dict(zip(names, copied))
        values["loss"] = sum(copied)
        # One collective per step: all processes skip, stop or go on together.
        nonfinite, self.state.stop_agreed = distributed.any_rank([not math.isfinite(values["loss"]), self.stop()],
                                                                 parts.place)
        if nonfinite:
            self.skip_nonfinite(values)
        else:
            # The mean over the group's batches, as one batch `group_size` times larger would give;
            # DDP averages gradients across processes only at the group's last batch.
            scaled = loss / group_size
            sync = contextlib.nullcontext() if last_of_group or not parts.place.enabled else parts.train_model.no_sync()
            with sync, compile_errors(self.model_name):
                # (runtime.compile: the backward graph compiles at the first backward pass)
                (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
            self.group_counted += 1
        if last_of_group and self.group_counted:
            self.optimizer_step()
        return None if nonfinite else values

    def optimizer_step(self) -> None:
        """Clip, step the optimizer (through the fp16 scaler when there is one) and the lr schedule."""
        parts = self.parts
        if parts.scaler is not None:
            parts.scaler.unscale_(parts.optimizer)
        if self.cfg.schedule.grad_clip:
            torch.nn.utils.clip_grad_norm_(parts.train_model.parameters(), self.cfg.schedule.grad_clip)
        if parts.scaler is not None:
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            parts.optimizer.step()
        parts.scheduler.step()
        self.state.iteration += 1

    def skip_nonfinite(self, values: dict[str, float]) -> None:
        bad = {k: v for k, v in values.items() if k != "loss" and not math.isfinite(v)} or "on another process"
        where = f"iteration {self.state.iteration} (epoch {self.state.epoch + 1}, step {self.state.step + 1})"
        if not self.cfg.runtime.skip_nonfinite:
            raise NonFiniteLossError(
                f"Non-finite loss at {where}: {bad}. Lower schedule.lr, set schedule.grad_clip, or check the data "
                "for broken boxes (runtime.skip_nonfinite=true skips such steps and counts them).")
        self.state.nonfinite_skipped += 1
        log.warning("Skipped %s: non-finite loss %s (runtime.skip_nonfinite; %d skipped so far)", where, bad,
                    self.state.nonfinite_skipped)

    def interrupt(self, consistent: bool = True) -> None:
        """After a Ctrl-C / SIGTERM: hooks save last.pth at this exact position (when the state is
        consistent) and mark the run interrupted; then out with the way to continue."""
        self.state.status = Status.INTERRUPTED.value
        self.fire("on_interrupt", consistent)
        last = self.checkpoints.last_path
        if not consistent:
            raise RunInterrupted(
                f"{self.stop.name} also stopped the data loader workers during epoch {self.state.epoch + 1}, so no "
                f"new checkpoint was written; {last} (if any) is the last complete state. Continue with "
                f"runtime.resume_from={self.run_dir} (or =auto).", self.stop.exit_code) from None
        epoch, step = self.state.epoch, self.state.step
        where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
        held = (f"{last} holds that state" if self.state.interrupt_saved
                else f"not saved (disk space); the previous {last.name} is the resume point")
        raise RunInterrupted(f"{self.stop.name}: stopped at {where} (iteration {self.state.iteration}); {held}. "
                             f"Continue with runtime.resume_from={self.run_dir} (or runtime.resume_from=auto with "
                             "the same command).", self.stop.exit_code)

    # ------------------------------------------------------------------ hooks
    def fire(self, event: str, *args) -> None:
        """Call `event` on every hook, in list order. A hook that fails with an error of ours stops
        the run with that message; any other error becomes one HookError naming the hook and event
        (while the run is already failing or closing, later hooks still run)."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; events: {EVENTS}")
        closing = event in ("on_failure", "on_interrupt", "on_close")
        first_error: BaseException | None = None
        for hook in self.hooks:
            try:
                getattr(hook, event)(self, *args)
            except (DetectError, KeyboardInterrupt) as err:
                if not closing:
                    raise
                first_error = first_error or err
            except Exception as err:
                wrapped = HookError(f"The {type(hook).__name__} failed at {event}: {type(err).__name__}: {err}")
                wrapped.__cause__ = err
                if not closing:
                    raise wrapped from err
                log.error("%s", wrapped)
        if first_error is not None and event != "on_failure":
            raise first_error

    # ------------------------------------------------------------------ checkpoints
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and saved as a checkpoint's `model`: the EMA when schedule.ema is on."""
        return self.parts.ema.module if self.parts.ema is not None else self.parts.model

    @property
    def weights_name(self) -> str:
        return "ema" if self.parts.ema is not None else "raw"

    def checkpoint_state(self) -> dict:
        """Everything a resume needs, at the state's position (`epoch` epochs done, `epoch_step` steps
        into the next one), and everything detect.test needs (classes, config). `model` holds the
        evaluated weights (the EMA when on; then `raw_model` holds the trained ones)."""
        parts, ckpt = self.parts, self.checkpoints
        ema = parts.ema
        return {
            "model": self.eval_model.state_dict(),
            "weights": self.weights_name,
            "raw_model": parts.model.state_dict() if ema is not None else None,
            "ema_updates": ema.done if ema is not None else None,
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "epoch": self.state.epoch,  # epochs completed
            "epoch_step": self.state.step,
            "world_size": parts.place.world_size,  # epoch_step counts steps of this many processes
            "iter": self.state.iteration,
            "best_score": ckpt.best_score,
            "best_epoch": ckpt.best_epoch,
            "best_checkpoint": str(ckpt.best_path) if ckpt.best_path else None,
            "monitor": ckpt.monitor,
            "rng": rng_states(),
            "classes": parts.classes,
            # json category id of each class, in class order: predictions on a test.json that lists no
            # categories still get the training json's ids
            "category_ids": parts.category_ids,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "wandb_run_id": self.state.wandb_run_id,  # a resume continues this W&B run
            "early_stopping": {"best": self.state.early_stopping_best, "stale": self.state.stale_evaluations,
                               "stopped": self.state.early_stop},
        }
