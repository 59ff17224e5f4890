"""`fit(cfg, run_dir)`: build the run's components, restore a checkpoint, assemble the hooks and
run the training loop. Returns the best monitored score (what a sweeper maximizes).

The hooks, in the order they are called at every event (a later hook sees what an earlier one did):
progress bar, EMA of the weights, metrics + train.log, evaluation, checkpoints, early stopping, W&B,
summary, plots + report.
Ctrl-C and SIGTERM stop the run cleanly (detect/engine/interrupt.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from detect.engine import distributed
from detect.engine.build import Components, build_components
from detect.engine.hooks.base import Hook
from detect.engine.hooks.checkpoints import CheckpointHook
from detect.engine.hooks.cost import CostHook
from detect.engine.hooks.early_stopping import EarlyStoppingHook
from detect.engine.hooks.ema import EmaHook
from detect.engine.hooks.evaluation import EvaluationHook
from detect.engine.hooks.metrics import MetricsHook
from detect.engine.hooks.plots import PlotsHook
from detect.engine.hooks.progress import ProgressHook
from detect.engine.hooks.summary import SummaryHook
from detect.engine.hooks.wandb import WandbHook
from detect.engine.interrupt import StopRequest
from detect.engine.loop import Trainer, TrainState
from detect.engine.lr_schedule import load_lr_scheduler_state, replan_lr_schedule
from detect.engine.progress import resolve_mode, terminal_logging_above_bars
from detect.engine.reproducibility import restore_rng_states
from detect.errors import CheckpointError, ConfigError, RunInterrupted
from detect.evaluation.coco_metrics import SUMMARY_KEYS
from detect.models.pretrained import is_torchvision_weights, load_torchvision_weights
from detect.run import MetricsLog, RunDir, RunSummary, Status, SummaryFile
from detect.run.checkpoints import CheckpointManager, load_checkpoint, load_model_weights
from detect.run.lock import RunLock
from detect.run.resume import AUTO, checkpoint_to_resume

log = logging.getLogger("detect")


def fit(cfg: DictConfig, run_dir: str | Path, provenance: dict | None = None,
        extra_hooks: list[Hook] | None = None) -> float | None:
    """Train with the composed config in `run_dir`; `provenance`: overrides, git state, library
    versions (recorded in summary.json); `extra_hooks` run after the standard ones."""
    place = distributed.current()
    progress = resolve_mode(str(cfg.runtime.get("progress", "auto")), place.is_main)
    # With a progress bar, log lines are printed above it rather than through it.
    bars = terminal_logging_above_bars() if progress == "bar" else contextlib.nullcontext()
    run = RunDir(run_dir)
    lock = RunLock(run, enabled=place.is_main)
    lock.acquire()  # one writer per run folder: refused (nothing written) while another process trains here
    try:
        with StopRequest() as stop, bars:
            trainer = prepare(cfg, run, provenance or {}, stop, progress, extra_hooks or [])
            return trainer.train()
    finally:
        lock.release()


def prepare(cfg: DictConfig, run: RunDir, provenance: dict, stop: StopRequest, progress: str,
            extra_hooks: list[Hook]) -> Trainer:
    """The Trainer, ready to train: built, restored and with its hooks. A failure here is recorded
    in summary.json as the loop records its own."""
    place = distributed.current()
    run.root.mkdir(parents=True, exist_ok=True)
    summary = SummaryFile(run.summary_file, first_summary(cfg, run, place, provenance), enabled=place.is_main)
    rt = cfg.runtime
    checkpoints = CheckpointManager(run, str(rt.monitor), int(rt.max_keep_ckpts), enabled=place.is_main)
    try:
        check_runtime(cfg)
        parts = build_components(cfg, place)
        state = TrainState()
        restore(cfg, parts, checkpoints, state, run)
    except KeyboardInterrupt:  # a second Ctrl-C while building: nothing was trained
        summary.end(Status.INTERRUPTED)
        raise RunInterrupted("Stopped at once by a second Ctrl-C at iteration 0: no new checkpoint. Continue "
                             f"from the previous one with runtime.resume_from={run}.", 130) from None
    except BaseException as err:
        summary.end(Status.FAILED, error=f"{type(err).__name__}: {err}")
        raise
    stopping = rt.get("early_stopping") or {}
    hooks = [
        ProgressHook(progress),
        EmaHook(),  # before the hooks that evaluate or save the averaged weights
        MetricsHook(MetricsLog(run.metrics_file, enabled=place.is_main), rt.log_interval, progress),
        EvaluationHook(rt.eval_interval, progress),
        CheckpointHook(rt.checkpoint_interval),
        EarlyStoppingHook(stopping.get("patience"), stopping.get("min_delta", 0.0)),  # after the best is saved
        WandbHook(provenance.get("overrides", []), enabled=place.is_main),
        CostHook(summary, rt.get("profile") or {}, enabled=place.is_main),  # before the summary says finished
        SummaryHook(summary),
        PlotsHook(run, rt.get("plots") or {}, enabled=place.is_main),
        *extra_hooks,
    ]
    log.info("Training %s for %d epochs (%d iterations each) on %s; run dir %s", cfg.model.name,
             cfg.schedule.epochs, parts.iters_per_epoch, parts.device, run)
    return Trainer(cfg, parts, run, checkpoints, hooks, state, stop=stop)


def first_summary(cfg: DictConfig, run: RunDir, place: distributed.Dist, provenance: dict) -> RunSummary:
    """What summary.json says before anything is built."""
    return RunSummary(
        member=cfg.get("member"), experiment=cfg.get("run_name"), model=cfg.model.name, data=cfg.data.name,
        fold=cfg.data.get("fold"), run_dir=str(run), monitor=str(cfg.runtime.monitor), epochs=cfg.schedule.epochs,
        seed=cfg.runtime.seed, world_size=place.world_size, started=time.strftime("%Y-%m-%d %H:%M:%S"),
        overrides=list(provenance.get("overrides", [])), git=provenance.get("git"),
        versions=provenance.get("versions"))


def restore_weights(parts: Components, loaded: dict, model_name: str) -> None:
    """A resume's weights: the trained ones into the model (`raw_model` when the checkpoint's `model`
    holds the EMA), and the average into the EMA when schedule.ema is on."""
    trained = {**loaded, "model": loaded["raw_model"]} if loaded.get("raw_model") is not None else loaded
    load_model_weights(parts.model, trained, model_name, parts.classes)
    if parts.ema is None:
        return
    if loaded.get("weights") == "ema":
        parts.ema.restore(loaded["model"], int(loaded.get("ema_updates") or 0))
    else:  # a checkpoint of a run without EMA: the average starts from its weights
        parts.ema.restore(loaded["model"], 0)
        log.info("The checkpoint has no EMA weights: the average starts from its weights.")


def load_optimizer_state(optimizer, state: dict) -> None:
    """The checkpoint's optimizer state, stepped with this run's implementation (runtime.fused_optimizer:
    a run saved on a CPU resumes with the fused step on a GPU, and the other way round). The fused step
    keeps each parameter's step count on the parameter's device, the others on the CPU: torch places them
    by the saved groups' flags, so this run's flags go into the saved groups before loading."""
    implementation = [{k: group[k] for k in ("fused", "foreach") if k in group} for group in optimizer.param_groups]
    saved_groups = [{**saved, **kept} for saved, kept in zip(state["param_groups"], implementation)]
    optimizer.load_state_dict({**state, "param_groups": saved_groups})
    for group in optimizer.param_groups:
        if group.get("fused") or group.get("capturable"):
            continue
        for param in group["params"]:  # a fused run's counters, saved on its GPU
            step = optimizer.state.get(param, {}).get("step")
            if torch.is_tensor(step) and step.device.type != "cpu":
                optimizer.state[param]["step"] = step.cpu()


def check_runtime(cfg: DictConfig) -> None:
    """Ranges a schema cannot say, checked again here for values a sweeper picks at run time."""
    rt = cfg.runtime
    if str(rt.monitor) not in SUMMARY_KEYS:
        raise ConfigError(f"runtime.monitor={rt.monitor} is not a metric; choose one of {SUMMARY_KEYS}")
    for key in ("eval_interval", "checkpoint_interval", "log_interval"):
        if int(rt[key]) < 1:
            raise ConfigError(f"runtime.{key}={rt[key]} must be a whole number >= 1 (epochs or iterations).")


def restore(cfg: DictConfig, parts: Components, checkpoints: CheckpointManager, state: TrainState,
            run: RunDir) -> None:
    """runtime.load_from (weights only), then the checkpoint the resume plan names (everything)."""
    rt = cfg.runtime
    if rt.load_from and is_torchvision_weights(str(rt.load_from)):  # COCO weights: detect/models/pretrained.py
        load_torchvision_weights(parts.model, str(rt.load_from), str(cfg.model.name))
    elif rt.load_from:
        loaded = load_checkpoint(rt.load_from)
        load_model_weights(parts.model, loaded, cfg.model.name, parts.classes, new_classes_ok=True)
        log.info("Loaded model weights from %s (load_from: optimizer and epoch start fresh)", loaded["path"])
    source = checkpoint_to_resume(rt.resume_from, run)
    if source is None:
        if str(rt.resume_from) == AUTO:
            log.info("runtime.resume_from=auto: no unfinished run of %s with the same overrides and a checkpoint "
                     "under %s; starting fresh (in a -m sweep every job starts fresh: resume a job by its run dir)",
                     cfg.get("run_name"), run.root.parent)
        return
    loaded = load_checkpoint(source)
    restore_weights(parts, loaded, cfg.model.name)
    load_optimizer_state(parts.optimizer, loaded["optimizer"])
    saved_epochs = (loaded.get("config") or {}).get("schedule", {}).get("epochs")
    if saved_epochs is not None and int(saved_epochs) != int(cfg.schedule.epochs):
        before, after = replan_lr_schedule(parts.scheduler, loaded["scheduler"])
        log.info("schedule.epochs %s -> %s: the lr schedule is re-planned for %s epochs from iteration %d (lr %.4g -> "
                 "%.4g); milestones stay as configured, cosine/poly decays stretch to the new end", saved_epochs,
                 cfg.schedule.epochs, cfg.schedule.epochs, loaded["iter"], before[0], after[0])
    else:
        load_lr_scheduler_state(parts.scheduler, loaded["scheduler"])  # also a LambdaLR state of older checkpoints
    if parts.scaler is not None and loaded.get("scaler"):
        parts.scaler.load_state_dict(loaded["scaler"])
    state.epoch, state.iteration = loaded["epoch"], loaded["iter"]
    state.step = loaded.get("epoch_step", 0)  # > 0: the checkpoint was written mid-epoch (interrupted)
    if state.step and loaded.get("world_size", 1) != parts.place.world_size:
        raise CheckpointError(
            f"{loaded['path']} was written inside epoch {state.epoch + 1} (step {state.step}) by a run "
            f"with {loaded.get('world_size', 1)} process(es); this one has {parts.place.world_size}, so the steps "
            "done would be other batches. Resume with the same number of processes (torchrun --nproc_per_node), "
            "or from an epoch-end checkpoint (checkpoints/epoch_N.pth).")
    checkpoints.restore(loaded)
    restore_rng_states(loaded["rng"])
    state.wandb_run_id = loaded.get("wandb_run_id")
    state.resumed_from = loaded["path"]
    stopping = loaded.get("early_stopping") or {}
    state.early_stopping_best, state.stale_evaluations = stopping.get("best"), int(stopping.get("stale") or 0)
    log.info("Resumed from %s at epoch %d%s, iteration %d (best %s=%s at epoch %s)", loaded["path"],
             state.epoch + 1 if state.step else state.epoch, f" step {state.step}" if state.step else "",
             state.iteration, checkpoints.monitor, checkpoints.best_score, checkpoints.best_epoch)
