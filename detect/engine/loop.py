"""One training epoch and one evaluation pass: plain loops a reader takes in at once."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from detect.data.transforms import to_float
from detect.engine.distributed import SINGLE_PROCESS, Dist, gather_lists
from detect.errors import NonFiniteLossError
from detect.evaluation.coco_metrics import evaluate_boxes

log = logging.getLogger("detect")


def move_to(images: list[torch.Tensor], targets: list[dict], device: torch.device, non_blocking: bool = False):
    """Images and targets to `device`. uint8 images (the loader's output for GPU training) become
    float in [0, 1] after the copy: a quarter of the bytes to transfer, the conversion on the GPU."""
    images = [to_float(img.to(device, non_blocking=non_blocking)) for img in images]
    targets = [{k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


@dataclass
class EpochResult:
    iteration: int  # global iteration count after the last step taken
    steps_done: int  # steps of this epoch done so far (== the epoch's length unless stopped early)
    stopped: bool  # a stop was requested (Ctrl-C, SIGTERM): the epoch is unfinished
    nonfinite_skipped: int  # steps skipped for a non-finite loss (runtime.skip_nonfinite)


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, epoch: int,
                    iteration: int, log_interval: int, on_log: Callable[[dict], None],
                    grad_clip: float | None = None, max_iters: int | None = None,
                    scaler: torch.amp.GradScaler | None = None, start_step: int = 0,
                    should_stop: Callable[[], bool] = lambda: False, skip_nonfinite: bool = False,
                    amp_dtype: torch.dtype | None = None,
                    agree: Callable[[list[bool]], list[bool]] = lambda flags: flags,
                    on_step: Callable[[dict[str, float], float], None] | None = None) -> EpochResult:
    """Train for one epoch; the lr schedule steps every iteration. `on_log` receives a dict of
    averaged losses every `log_interval` steps.

    start_step: steps of this epoch already trained (a run resumed from a mid-epoch checkpoint):
    the loader's batch sampler was told to skip them (`set_epoch(epoch, start_batch)`), so its first
    batch is step `start_step` of the epoch, augmented as it would have been without the stop.
    should_stop: checked at every step; when it says yes the epoch ends after that step (interruption).
    skip_nonfinite: a step whose loss is NaN/inf is skipped and counted instead of stopping the run.
    amp_dtype: autocast dtype (torch.float16 with `scaler`, or torch.bfloat16); None trains in fp32.
    agree: turns this process's [loss not finite, stop asked] into the decision of all DDP processes
    (detect.engine.distributed.any_rank), so they skip, stop or go on together.
    on_step: called after every optimizer step with that step's losses and lr (the progress bar).
    """
    model.train()
    num_iters = len(loader) if max_iters is None else min(len(loader), max_iters)
    sums: dict[str, float] = {}
    count, skipped = 0, 0
    batches = iter(loader)
    tic = time.perf_counter()
    for step in range(start_step, num_iters):
        images, targets = next(batches)
        images, targets = move_to(images, targets, device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        # One host copy of the loss values per step: used for the finite check and for the log.
        values = {k: v.item() for k, v in loss_dict.items()}
        values["loss"] = sum(values.values())
        nonfinite, stop_asked = agree([not math.isfinite(values["loss"]), should_stop()])
        if nonfinite:
            bad = {k: v for k, v in values.items() if k != "loss" and not math.isfinite(v)} or "on another process"
            if not skip_nonfinite:
                raise NonFiniteLossError(
                    f"Non-finite loss at iteration {iteration} (epoch {epoch + 1}, step {step + 1}): {bad}. "
                    "Lower schedule.lr, set schedule.grad_clip, or check the data for broken boxes "
                    "(runtime.skip_nonfinite=true skips such steps and counts them)."
                )
            skipped += 1
            log.warning("Skipped iteration %d (epoch %d, step %d): non-finite loss %s (runtime.skip_nonfinite; "
                        "%d skipped this epoch)", iteration, epoch + 1, step + 1, bad, skipped)
            optimizer.zero_grad(set_to_none=True)
            if stop_asked:
                return EpochResult(iteration, step + 1, step + 1 < num_iters, skipped)
            continue
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        iteration += 1
        if on_step is not None:
            on_step(values, optimizer.param_groups[0]["lr"])

        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if (step + 1) % log_interval == 0 or step + 1 == num_iters:
            elapsed = time.perf_counter() - tic
            on_log({
                "mode": "train",
                "epoch": epoch + 1,
                "iter": iteration,
                "step": step + 1,
                "steps": num_iters,
                "lr": optimizer.param_groups[0]["lr"],
                **{k: v / count for k, v in sums.items()},
                "sec_per_iter": elapsed / count,
            })
            sums, count, tic = {}, 0, time.perf_counter()
        if stop_asked and step + 1 < num_iters:
            return EpochResult(iteration, step + 1, True, skipped)
    return EpochResult(iteration, num_iters, False, skipped)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            category_of_label: dict[int, int], image_ids: list[int] | None = None,
            show: Callable[[Iterable], Iterable] = lambda batches: batches) -> list[dict]:
    """Run the detector over `loader`; return COCO results (bbox xywh in original-image pixels).
    `image_ids`, if given, receives the id of every image predicted (also those without boxes).
    `show` wraps the batches (a progress bar)."""
    model.eval()
    results = []
    for images, targets in show(loader):
        images, _ = move_to(images, [], device, non_blocking=True)
        outputs = model(images)
        for target, output in zip(targets, outputs):
            if image_ids is not None:
                image_ids.append(target["image_id"])
            boxes = output["boxes"].cpu()
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            for box, score, label in zip(boxes.tolist(), output["scores"].tolist(), output["labels"].tolist()):
                results.append({
                    "image_id": target["image_id"],
                    "category_id": category_of_label[int(label)],
                    "bbox": [round(v, 2) for v in box],
                    "score": round(float(score), 5),
                })
    return results


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             place: Dist = SINGLE_PROCESS,
             show: Callable[[Iterable], Iterable] = lambda batches: batches) -> tuple[dict, list[dict]] | None:
    """COCO metrics of the model on the loader's data set (see detect.evaluation.coco_metrics), plus
    `images`: how many images were predicted; and the detections scored (COCO results). Under
    torchrun each process predicts its share of the images and rank 0 scores them all; the other
    ranks get None."""
    dataset = loader.dataset
    seen: list[int] = []
    detections = gather_lists(predict(model, loader, device, dataset.category_of_label, seen, show), place)
    seen = gather_lists(seen, place)
    if detections is None:
        return None
    if sorted(seen) != sorted(info["id"] for info in dataset.images):  # each image once, none left out
        raise RuntimeError(f"Evaluation predicted {len(seen)} images ({len(set(seen))} distinct) of the "
                           f"{len(dataset.images)} in {dataset.ann_file}: the loaders' sharding is broken.")
    # Label i (1-based) is class_names[i - 1]; the evaluation speaks the json's category ids.
    category_ids = [dataset.category_of_label[label] for label in range(1, len(dataset.classes) + 1)]
    metrics = {**evaluate_boxes(dataset.coco, detections, dataset.classes, category_ids), "images": len(seen)}
    return metrics, detections
