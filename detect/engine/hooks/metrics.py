"""MetricsHook: the training losses averaged over each runtime.log_interval, and every evaluation,
into metrics.jsonl (one JSON object per line) and train.log (the human log)."""

from __future__ import annotations

import logging
import time

from detect.engine import distributed
from detect.engine.gpu_settings import peak_memory_mb, reset_peak_memory
from detect.engine.hooks.base import Hook
from detect.engine.progress import FILE_ONLY, format_eta
from detect.run import MetricsLog

log = logging.getLogger("detect")


def format_losses(record: dict, eta_seconds: float | None = None) -> str:
    losses = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("loss"))
    eta = f"  eta {format_eta(eta_seconds)}" if eta_seconds is not None else ""
    # The loader wait per step: a data-bound run shows itself (data close to s/it).
    data = f" (data {record['data_time']:.3f}s)" if "data_time" in record else ""
    memory = f"  gpu mem {record['gpu_mem_peak_mb'] / 1024:.1f}G" if record.get("gpu_mem_peak_mb") else ""
    return (f"epoch {record['epoch']} [{record['step']}/{record['steps']}] iter {record['iter']}  "
            f"lr={record['lr']:.2e}  {losses}  {record['sec_per_iter']:.2f}s/it{data}{memory}{eta}")


class MetricsHook(Hook):
    """Every process averages (a DDP collective); rank 0 writes (`metrics.enabled`)."""

    def __init__(self, metrics: MetricsLog, log_interval: int, progress_mode: str):
        self.metrics = metrics
        self.log_interval = int(log_interval)
        self.file_only = progress_mode == "bar"  # the bar shows the losses: the lines go to train.log only
        self.sums: dict[str, float] = {}
        self.count = 0
        self.data_wait = 0.0
        self.tic = time.perf_counter()

    def before_epoch(self, trainer) -> None:
        self.sums, self.count, self.data_wait, self.tic = {}, 0, 0.0, time.perf_counter()
        reset_peak_memory(trainer.parts.device)  # the peak is per epoch

    def after_step(self, trainer, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.data_wait += trainer.data_wait
        step, steps = trainer.state.step, trainer.parts.iters_per_epoch
        if step % self.log_interval and step != steps:
            return
        record = {
            "mode": "train",
            "epoch": trainer.state.epoch + 1,
            "iter": trainer.state.iteration,
            "step": step,
            "steps": steps,
            "lr": trainer.parts.optimizer.param_groups[0]["lr"],
            **{k: v / self.count for k, v in self.sums.items()},
            "sec_per_iter": (time.perf_counter() - self.tic) / self.count,
            "data_time": self.data_wait / self.count,  # of sec_per_iter, the wait for the loader
        }
        memory = peak_memory_mb(trainer.parts.device)
        if memory is not None:
            record["gpu_mem_peak_mb"] = memory  # the most GPU memory held so far this epoch (MiB)
        # Every process reaches this at the same steps: log the losses averaged over all of them.
        record.update(distributed.mean_over_ranks({k: v for k, v in record.items() if k.startswith("loss")},
                                                  trainer.parts.place))
        self.sums, self.count, self.data_wait, self.tic = {}, 0, 0.0, time.perf_counter()
        trainer.fire("after_log", record)

    def after_log(self, trainer, record: dict) -> None:
        if not self.metrics.enabled:
            return
        # The run's remaining batches at this pace (evaluations not counted; with schedule.accumulate
        # `iter` counts optimizer steps, so batches are counted from the position instead).
        steps = trainer.parts.iters_per_epoch
        remaining = trainer.epochs * steps - (trainer.state.epoch * steps + trainer.state.step)
        log.info(format_losses(record, remaining * record["sec_per_iter"]), extra=FILE_ONLY if self.file_only else None)
        self.metrics.write(record)

    def after_evaluation(self, trainer, metrics: dict, detections: list[dict]) -> None:
        self.metrics.write({"mode": "val", "epoch": trainer.state.epoch, "iter": trainer.state.iteration,
                            "weights": trainer.weights_name, **metrics})
