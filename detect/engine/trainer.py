"""`fit()`: build everything from the config, run the epochs, keep the run directory current.

Run directory (see the project guide): train.log (Hydra's log file), metrics.jsonl,
checkpoints/{best_<monitor>_epoch_N.pth, epoch_N.pth, last.pth}, summary.json.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from detect.data.build import annotation_files, build_dataset, build_loader
from detect.engine import distributed
from detect.engine.build import instantiate, select_device
from detect.engine.checkpoint import (
    best_checkpoint_name,
    is_better,
    load_checkpoint,
    prune_epoch_checkpoints,
    save_checkpoint,
)
from detect.engine.gpu_settings import amp_dtype, apply_speed_settings, grad_scaler
from detect.engine.interrupt import StopRequest
from detect.engine.loop import evaluate, train_one_epoch
from detect.engine.lr_schedule import lr_factor
from detect.engine.progress import FILE_ONLY, EpochBar, eval_bar, format_eta, resolve_mode, terminal_logging_above_bars
from detect.engine.reproducibility import restore_rng_states, rng_states, seed_everything
from detect.engine.run_files import MetricsLog, RunSummary
from detect.engine.run_visuals import RunVisuals
from detect.engine.wandb_logger import WandbLogger
from detect.errors import CheckpointError, ConfigError, RunInterrupted
from detect.evaluation.coco_metrics import SUMMARY_KEYS, format_classwise_table

log = logging.getLogger("detect")


def format_losses(record: dict, eta_seconds: float | None = None) -> str:
    losses = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("loss"))
    eta = f"  eta {format_eta(eta_seconds)}" if eta_seconds is not None else ""
    return (f"epoch {record['epoch']} [{record['step']}/{record['steps']}] iter {record['iter']}  "
            f"lr={record['lr']:.2e}  {losses}  {record['sec_per_iter']:.2f}s/it{eta}")


class Trainer:
    """Holds what one run needs; `fit()` is the whole story, top to bottom."""

    def __init__(self, cfg: DictConfig, run_dir: Path, provenance: dict | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        rt = cfg.runtime
        self.monitor = rt.monitor
        # Under torchrun every process trains; only rank 0 writes the run directory.
        self.place = distributed.current()
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.place.is_main)
        self.summary = RunSummary(
            self.run_dir / "summary.json",
            enabled=self.place.is_main,
            member=cfg.get("member"),
            experiment=cfg.get("run_name"),
            model=cfg.model.name,
            data=cfg.data.name,
            fold=cfg.data.get("fold"),
            run_dir=str(self.run_dir),
            monitor=self.monitor,
            best_score=None,
            best_epoch=None,
            best_checkpoint=None,
            epochs_done=0,
            epochs=cfg.schedule.epochs,
            seed=rt.seed,
            world_size=self.place.world_size,
            started=time.strftime("%Y-%m-%d %H:%M:%S"),
            **(provenance or {}),  # overrides, git commit and dirty flag, library versions
        )
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_path: Path | None = None
        self.nonfinite_skipped = 0  # steps skipped for a NaN/inf loss (runtime.skip_nonfinite)
        self.overrides = list((provenance or {}).get("overrides", []))
        self.wandb = WandbLogger()  # optional W&B mirror of the logs; never stops training
        self.wandb_resume_id: str | None = None  # the W&B run a resumed checkpoint belongs to
        # bar or lines (runtime.progress), and the plots / report of the run dir (runtime.plots)
        self.progress = resolve_mode(str(rt.get("progress", "auto")), self.place.is_main)
        self.visuals = RunVisuals(self.run_dir, self.monitor, rt.get("plots") or {}, enabled=self.place.is_main)

    # ---------------------------------------------------------------- setup
    def check_runtime(self) -> None:
        rt = self.cfg.runtime
        if rt.monitor not in SUMMARY_KEYS:
            raise ConfigError(f"runtime.monitor={rt.monitor} is not a metric; choose one of {SUMMARY_KEYS}")
        for key in ("eval_interval", "checkpoint_interval", "log_interval"):
            if int(rt[key]) < 1:
                raise ConfigError(f"runtime.{key}={rt[key]} must be a whole number >= 1 (epochs or iterations).")

    def build(self) -> None:
        cfg, rt = self.cfg, self.cfg.runtime
        self.check_runtime()
        seed_everything(rt.seed, rt.deterministic)
        if rt.threads:
            torch.set_num_threads(int(rt.threads))
        self.device = distributed.device_for(self.place, select_device(rt.device))
        pin = self.device.type == "cuda" if rt.pin_memory == "auto" else bool(rt.pin_memory)

        files = annotation_files(cfg.data)
        # On a GPU the loader hands over uint8 images (4x fewer bytes to copy); the GPU converts them.
        float_output = self.device.type != "cuda"
        self.train_set = build_dataset(cfg.data, "train", train=True, float_output=float_output)
        self.classes = self.train_set.classes
        # The val set takes the training set's classes, so label k means the same class in both.
        self.val_set = (build_dataset(cfg.data, "val", train=False, classes=self.classes, float_output=float_output)
                        if files["val"] else None)
        # What detect.report needs to draw PR curves, confusion matrix and label statistics without the model.
        self.summary.update(
            classes=list(self.classes),
            category_ids=[self.train_set.category_of_label[label] for label in range(1, len(self.classes) + 1)],
            data_root=str(Path(cfg.data.root).expanduser().resolve()),
            data_files={split: str(ds.ann_file.resolve()) for split, ds in
                        (("train", self.train_set), ("val", self.val_set)) if ds is not None})
        log.info("Data %s: %d training images from %s, %s", cfg.data.name, len(self.train_set), files["train"],
                 f"{len(self.val_set)} val images from {files['val']}" if self.val_set else "no val split "
                 "(no evaluation, no best checkpoint: set data.val_ann or data.fold)")
        loader_options = dict(workers=rt.workers, seed=rt.seed, pin_memory=pin,
                              persistent_workers=bool(rt.get("persistent_workers", False)),
                              rank=self.place.rank, world_size=self.place.world_size)
        self.train_loader = build_loader(self.train_set, cfg.data.batch_size, True,
                                         group_by_aspect_ratio=bool(rt.get("group_by_aspect_ratio", True)),
                                         **loader_options)
        self.val_loader = (build_loader(self.val_set, cfg.data.batch_size, False, **loader_options)
                           if self.val_set else None)
        self.iters_per_epoch = len(self.train_loader)
        if rt.max_iters_per_epoch:
            self.iters_per_epoch = min(self.iters_per_epoch, int(rt.max_iters_per_epoch))

        # The number of classes comes from the data, once: the model config never repeats it.
        self.model = instantiate("model", cfg.model, num_classes=len(self.classes), _convert_="all")
        self.model.to(self.device)
        self.model = apply_speed_settings(self.model, rt, self.device)
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        parts = [f"{key} {cfg.model[key]._target_.rsplit('.', 1)[-1]}" for key in ("backbone", "neck")
                 if "_target_" in cfg.model.get(key, {})]
        log.info("Model %s: %s (%s), %.1fM parameters, %.1fM trainable", cfg.model.name, type(self.model).__name__,
                 ", ".join(parts) or "no backbone/neck keys", total / 1e6, trainable / 1e6)
        # The model that trains: under torchrun wrapped in DDP (gradients averaged over processes);
        # self.model stays the plain module, for evaluation and checkpoints.
        self.train_model = self.model
        if self.place.enabled:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        make_optimizer = instantiate("schedule.optimizer", cfg.schedule.optimizer)  # a partial: params come next
        try:
            self.optimizer = make_optimizer(params)
        except TypeError as err:
            raise ConfigError(
                f"schedule.optimizer (_target_={cfg.schedule.optimizer._target_}) does not take its arguments: {err}. "
                "Remove a key it does not take on the command line, e.g. '~schedule.optimizer.momentum'."
            ) from err
        sch = cfg.schedule
        self.scale_lr()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, partial(
            lr_factor, iters_per_epoch=self.iters_per_epoch, warmup_iters=sch.warmup_iters,
            warmup_ratio=sch.warmup_ratio, milestones=list(sch.milestones), gamma=sch.gamma))
        self.amp_dtype = amp_dtype(rt.amp, self.device)
        self.scaler = grad_scaler(self.amp_dtype)
        self.start_epoch, self.start_step, self.iteration = 0, 0, 0
        if rt.load_from:
            state = load_checkpoint(rt.load_from)
            self.load_model_weights(state)
            log.info("Loaded model weights from %s (load_from: optimizer and epoch start fresh)", state["path"])
        if rt.resume_from == "auto":
            # conf/train.yaml's run dir resolver picked the newest run of this run_name with a last.pth
            # (this very folder), or a new folder when there was none.
            if (self.ckpt_dir / "last.pth").is_file():
                self.resume(self.ckpt_dir / "last.pth")
            else:
                log.info("runtime.resume_from=auto: no unfinished run of %s with the same overrides and a checkpoint "
                         "under %s; starting fresh (in a -m sweep every job starts fresh: resume a job by its run dir)",
                         cfg.get("run_name"), self.run_dir.parent)
        elif rt.resume_from:
            self.resume(rt.resume_from)

    def scale_lr(self) -> None:
        """schedule.auto_scale_lr (MMDetection's rule): lr x (total batch / base_batch_size), where the
        total batch is data.batch_size x the number of processes. Off by default: the configured lr
        is used as it is, whatever the batch."""
        total_batch = int(self.cfg.data.batch_size) * self.place.world_size
        rule = self.cfg.schedule.get("auto_scale_lr") or {}
        lr = self.optimizer.param_groups[0]["lr"]
        if not rule.get("enable"):
            log.info("lr %.4g for a total batch of %d images (%d process(es) x %d); schedule.auto_scale_lr.enable=true "
                     "would scale it linearly from base_batch_size=%s", lr, total_batch, self.place.world_size,
                     self.cfg.data.batch_size, rule.get("base_batch_size"))
            return
        factor = total_batch / int(rule.base_batch_size)
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        log.info("schedule.auto_scale_lr: lr %.4g -> %.4g (total batch %d / base_batch_size %d)", lr, lr * factor,
                 total_batch, rule.base_batch_size)

    def load_model_weights(self, state: dict) -> None:
        """Load a checkpoint's weights, saying which classes and model it was made for if they do not fit."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            made_for = state.get("config", {}).get("model", {}).get("name", "?")
            raise CheckpointError(
                f"The weights in {state['path']} do not fit this model: it was saved by model {made_for} "
                f"with classes {state.get('classes')}; this run builds {self.cfg.model.name} with classes "
                f"{list(self.classes)}. ({str(err).splitlines()[0]})"
            ) from err

    def resume(self, source: str) -> None:
        state = load_checkpoint(source)
        self.load_model_weights(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.iteration = state["epoch"], state["iter"]
        self.start_step = state.get("epoch_step", 0)  # > 0: the checkpoint was written mid-epoch (interrupted)
        if self.start_step and state.get("world_size", 1) != self.place.world_size:
            raise CheckpointError(
                f"{state['path']} was written inside epoch {self.start_epoch + 1} (step {self.start_step}) by a run "
                f"with {state.get('world_size', 1)} process(es); this one has {self.place.world_size}, so the steps "
                "done would be other batches. Resume with the same number of processes (torchrun --nproc_per_node), "
                "or from an epoch-end checkpoint (checkpoints/epoch_N.pth).")
        self.best_score, self.best_epoch = state.get("best_score"), state.get("best_epoch")
        old_best = state.get("best_checkpoint")
        if old_best and not Path(old_best).is_file():  # the old run dir was moved: look beside the checkpoint
            old_best = str(Path(state["path"]).parent / Path(old_best).name)
        if old_best and Path(old_best).is_file():
            self.best_path = self.ckpt_dir / Path(old_best).name
            if Path(old_best).resolve() != self.best_path.resolve() and self.place.is_main:
                shutil.copy2(old_best, self.best_path)  # the continued run keeps its best file
        restore_rng_states(state["rng"])
        self.wandb_resume_id = state.get("wandb_run_id")
        self.summary.update(best_score=self.best_score, best_epoch=self.best_epoch, epochs_done=self.start_epoch,
                            best_checkpoint=str(self.best_path) if self.best_path else None,
                            resumed_from=state["path"])
        log.info("Resumed from %s at epoch %d%s, iteration %d (best %s=%s at epoch %s)", state["path"],
                 self.start_epoch + 1 if self.start_step else self.start_epoch,
                 f" step {self.start_step}" if self.start_step else "", self.iteration, self.monitor,
                 self.best_score, self.best_epoch)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self, epoch: int, epoch_step: int = 0) -> dict:
        """Everything a resume needs. `epoch`: epochs completed; `epoch_step`: steps done in the next
        epoch when the run was stopped inside it (0 at an epoch boundary)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,  # epochs completed
            "epoch_step": epoch_step,
            "world_size": self.place.world_size,  # epoch_step counts steps of this many processes
            "iter": self.iteration,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_checkpoint": str(self.best_path) if self.best_path else None,
            "monitor": self.monitor,
            "rng": rng_states(),
            "classes": list(self.classes),
            # json category id of each class, in class order: predictions on a test.json that lists no
            # categories still get the training json's ids
            "category_ids": [self.train_set.category_of_label[label] for label in range(1, len(self.classes) + 1)],
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "wandb_run_id": self.wandb.run_id or self.wandb_resume_id,  # a resume continues this W&B run
        }

    def save_epoch_checkpoints(self, epoch: int) -> bool:
        """epoch_N.pth (every checkpoint_interval epochs, pruned) and last.pth; False when last.pth was
        not written (too little disk space)."""
        if not self.place.is_main:
            return True
        state = self.state_dict(epoch)
        rt = self.cfg.runtime
        if epoch % rt.checkpoint_interval == 0 or epoch == self.cfg.schedule.epochs:
            save_checkpoint(state, self.ckpt_dir / f"epoch_{epoch}.pth")
            for path in prune_epoch_checkpoints(self.ckpt_dir, rt.max_keep_ckpts):
                log.info("Removed %s (runtime.max_keep_ckpts=%d)", path.name, rt.max_keep_ckpts)
        return save_checkpoint(state, self.ckpt_dir / "last.pth")

    def update_best(self, epoch: int, score: float | None) -> bool:
        """Keep exactly one best file: a strictly better score replaces it, anything else keeps it.
        True when this epoch became the best."""
        if not is_better(score, self.best_score):
            log.info("%s=%s at epoch %d; best stays %s (epoch %s)", self.monitor, score, epoch, self.best_score,
                     self.best_epoch)
            return False
        old_path, old_score, old_epoch = self.best_path, self.best_score, self.best_epoch
        self.best_score, self.best_epoch = score, epoch
        new_path = self.ckpt_dir / best_checkpoint_name(self.monitor, epoch)
        if not save_checkpoint(self.state_dict(epoch), new_path):  # too little disk space: keep the old best
            self.best_score, self.best_epoch = old_score, old_epoch
            return False
        self.best_path = new_path
        if old_path is not None and old_path != self.best_path and old_path.exists():
            old_path.unlink()
        log.info("New best %s=%.4f at epoch %d (was %s) -> %s", self.monitor, score, epoch, old_score,
                 self.best_path.name)
        self.summary.update(best_score=score, best_epoch=epoch, best_checkpoint=str(self.best_path))
        return True

    # ---------------------------------------------------------------- the run
    def log_train(self, record: dict) -> None:
        # Every process reaches this at the same steps: log the losses averaged over all of them.
        losses = distributed.mean_over_ranks({k: v for k, v in record.items() if k.startswith("loss")}, self.place)
        record = {**record, **losses}
        if not self.place.is_main:
            return
        # The run's remaining iterations at this pace (evaluations not counted).
        remaining = self.cfg.schedule.epochs * self.iters_per_epoch - record["iter"]
        # With a progress bar the terminal shows the losses already: this line goes to train.log only.
        log.info(format_losses(record, remaining * record["sec_per_iter"]),
                 extra=FILE_ONLY if self.progress == "bar" else None)
        self.metrics.write(record)
        self.wandb.log_train(record)

    def evaluate(self, epoch: int) -> None:
        tic = time.perf_counter()
        distributed.sync_buffers(self.model, self.place)
        result = evaluate(self.model, self.val_loader, self.device, self.place,
                          show=lambda batches: eval_bar(self.progress, batches, len(self.val_loader)))
        if result is None:  # not rank 0: its predictions went to rank 0, which scores and keeps the best
            return
        metrics, detections = result
        log.info("Evaluation after epoch %d (%d images%s, %.1fs):\n%s", epoch, metrics.pop("images"),
                 f" on {self.place.world_size} processes" if self.place.enabled else "",
                 time.perf_counter() - tic, format_classwise_table(metrics))
        log.info("  ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_KEYS))
        self.metrics.write({"mode": "val", "epoch": epoch, "iter": self.iteration, **metrics})
        self.wandb.log_eval(epoch, self.iteration, metrics)
        if self.update_best(epoch, metrics[self.monitor]):
            self.visuals.new_best(detections)
        self.visuals.after_evaluation()

    def stop_here(self, stop: StopRequest, epochs_done: int, epoch_step: int) -> None:
        """After a Ctrl-C / SIGTERM: last.pth at this exact position, status interrupted, then out."""
        last = self.ckpt_dir / "last.pth"
        where = f"epoch {epochs_done + 1}, step {epoch_step}" if epoch_step else f"the end of epoch {epochs_done}"
        if not self.place.is_main or save_checkpoint(self.state_dict(epochs_done, epoch_step), last):
            self.summary.update(epochs_done=epochs_done, last_checkpoint=str(last))
            held = f"{last} holds that state"
        else:  # too little disk space: the previous last.pth (if any) is the resume point
            held = f"not saved (disk space); the previous {last.name} is the resume point"
        self.summary.update(status="interrupted", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        raise RunInterrupted(f"{stop.name}: stopped at {where} (iteration {self.iteration}); {held}. Continue with "
                             f"runtime.resume_from={self.run_dir} (or runtime.resume_from=auto with the same command).",
                             stop.exit_code)

    def fit(self) -> float | None:
        """Train all epochs; returns the best monitored score (what a sweeper maximizes). Ctrl-C and
        SIGTERM stop it cleanly (see detect/engine/interrupt.py)."""
        # With a progress bar, log lines are printed above it rather than through it.
        bars = terminal_logging_above_bars() if self.progress == "bar" else contextlib.nullcontext()
        with StopRequest() as stop, bars:
            return self.run_epochs(stop)

    def run_epochs(self, stop: StopRequest) -> float | None:
        try:
            self.build()
            cfg, rt = self.cfg, self.cfg.runtime
            if self.place.is_main:
                self.wandb.start(cfg, self.run_dir, self.overrides, resume_id=self.wandb_resume_id)
            if self.wandb.run_id:
                self.summary.update(wandb_run_id=self.wandb.run_id)
            epochs = cfg.schedule.epochs
            log.info("Training %s for %d epochs (%d iterations each) on %s; run dir %s", cfg.model.name, epochs,
                     self.iters_per_epoch, self.device, self.run_dir)
            for epoch in range(self.start_epoch, epochs):
                # Re-seed the loader per epoch: a resumed run shuffles and augments epoch e as the
                # uninterrupted run would have.
                self.train_loader.generator.manual_seed(rt.seed + epoch)
                start_step = self.start_step if epoch == self.start_epoch else 0
                self.train_loader.batch_sampler.set_epoch(epoch, start_batch=start_step)
                bar = EpochBar(self.progress, epoch, epochs, self.iters_per_epoch, initial=start_step)
                try:
                    result = train_one_epoch(
                        self.train_model, self.train_loader, self.optimizer, self.scheduler, self.device, epoch,
                        self.iteration, rt.log_interval, self.log_train, cfg.schedule.grad_clip,
                        rt.max_iters_per_epoch, self.scaler,
                        start_step=start_step, should_stop=stop, skip_nonfinite=bool(rt.skip_nonfinite),
                        amp_dtype=self.amp_dtype, agree=partial(distributed.any_rank, place=self.place),
                        on_step=bar.step)
                except RuntimeError as err:
                    if not (stop() and "DataLoader worker" in str(err)):
                        raise
                    # A SIGTERM sent to every process (e.g. by a cluster) also killed the loader workers in
                    # the middle of a step: that step's state is not consistent, so the last checkpoint stays.
                    self.summary.update(status="interrupted", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
                    raise RunInterrupted(
                        f"{stop.name} also stopped the data loader workers during epoch {epoch + 1}, so no new "
                        f"checkpoint was written; {self.ckpt_dir / 'last.pth'} (if any) is the last complete state. "
                        f"Continue with runtime.resume_from={self.run_dir} (or =auto).", stop.exit_code) from None
                finally:
                    bar.close()
                self.iteration = result.iteration
                if result.nonfinite_skipped:
                    self.nonfinite_skipped += result.nonfinite_skipped
                    self.summary.update(nonfinite_skipped=self.nonfinite_skipped)
                if result.stopped:
                    self.stop_here(stop, epoch, result.steps_done)
                done = epoch + 1
                if self.val_loader is not None and (done % rt.eval_interval == 0 or done == epochs):
                    self.evaluate(done)
                last_saved = self.save_epoch_checkpoints(done)
                self.summary.update(epochs_done=done)
                if last_saved:
                    self.summary.update(last_checkpoint=str(self.ckpt_dir / "last.pth"))
                stop_asked = distributed.any_rank([stop()], self.place)[0]
                if stop_asked and done < epochs:  # the signal came during the last step, evaluation or saving
                    self.stop_here(stop, done, 0)
            self.wandb.log_best_checkpoint(self.best_path, {self.monitor: self.best_score, "epoch": self.best_epoch})
            self.summary.update(status="finished", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            self.visuals.at_end()  # PR curves, confusion matrix, label statistics, report.md
            if self.place.is_main:
                log.info(self.visuals.closing_summary(self.summary.data))
            return self.best_score
        except RunInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: out at once, the previous last.pth stays
            self.summary.update(status="interrupted", finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            raise RunInterrupted(f"Stopped at once by a second Ctrl-C at iteration {self.iteration}: no new "
                                 f"checkpoint. Continue from the previous one with runtime.resume_from={self.run_dir}.",
                                 130) from None
        except BaseException as err:
            self.summary.update(status="failed", error=f"{type(err).__name__}: {err}",
                                finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            raise
        finally:
            self.wandb.finish(self.summary.data["status"])  # exit code 0 when finished, else 1
