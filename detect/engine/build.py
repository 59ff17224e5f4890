"""Everything a training run is made of, built from the config: `build_components(cfg, place)`.

Also the two helpers every command uses to turn config values into objects: the device, and
Hydra's instantiate with errors that name the config key.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import hydra
import hydra.errors
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from detect.data.build import annotation_files, build_dataset, build_loader
from detect.data.coco import CocoDetection
from detect.engine import distributed
from detect.engine.compile import compile_model
from detect.engine.ema import WeightsEMA
from detect.engine.gpu_settings import amp_dtype, apply_speed_settings, box_regression_in_fp32, grad_scaler
from detect.engine.reproducibility import seed_everything
from detect.errors import ConfigError, DetectError
from detect.models.parts import set_pad_to

log = logging.getLogger("detect")


def select_device(name: str, key: str = "runtime.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{key}={name} is not a device: use auto, cpu, cuda or cuda:N ({err}).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but CUDA is not available here; use {key}=cpu or auto.")
    return device


def instantiate(key: str, node: DictConfig, **kwargs):
    """hydra.utils.instantiate, with a builder's wrong or missing arguments reported as a config
    problem that names the config key (errors of our own pass through unchanged)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__  # nested parts (model.backbone inside model) wrap one error per level
        while isinstance(cause, hydra.errors.InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, DetectError):
            raise cause from None
        raise ConfigError(
            f"{key} could not be built from _target_={node.get('_target_')}: {err}. A key the target does not "
            f"take can be removed on the command line with '~{key}.<key>'."
        ) from err


@dataclass
class Components:
    """What one training run is made of. `model` is the plain module (evaluation, checkpoints);
    `train_model` is the one that trains: under torchrun `model` wrapped in DDP, else `model`."""

    place: distributed.Dist
    device: torch.device
    train_set: CocoDetection
    val_set: CocoDetection | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    iters_per_epoch: int
    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped every iteration
    scaler: torch.amp.GradScaler | None  # fp16 loss scaling; None otherwise
    amp_dtype: torch.dtype | None  # autocast dtype; None trains in fp32
    ema: WeightsEMA | None = None  # schedule.ema: the averaged weights, evaluated and saved as `model`

    @property
    def classes(self) -> list[str]:
        return list(self.train_set.classes)

    @property
    def category_ids(self) -> list[int]:
        """The json category id of each class, in class order (label k is classes[k - 1])."""
        return [self.train_set.category_of_label[label] for label in range(1, len(self.classes) + 1)]

    def data_files(self) -> dict[str, str]:
        return {split: str(ds.ann_file.resolve()) for split, ds in (("train", self.train_set), ("val", self.val_set))
                if ds is not None}


def build_components(cfg: DictConfig, place: distributed.Dist) -> Components:
    """Seed, then data sets and loaders, model (DDP under torchrun), optimizer, lr schedule and AMP."""
    rt = cfg.runtime
    seed_everything(rt.seed, rt.deterministic)
    if rt.threads:
        torch.set_num_threads(int(rt.threads))
    device = distributed.device_for(place, select_device(rt.device))
    train_set, val_set, train_loader, val_loader = build_data(cfg, place, device)
    iters_per_epoch = len(train_loader)
    if rt.max_iters_per_epoch:
        iters_per_epoch = min(iters_per_epoch, int(rt.max_iters_per_epoch))
    model = build_model(cfg, len(train_set.classes), device)
    dtype = amp_dtype(rt.amp, device)
    if dtype is not None:  # before the EMA copy, so the averaged model decodes its boxes in fp32 too
        kept = box_regression_in_fp32(model)
        log.info("runtime.amp=%s: mixed precision, with the box regression layers in fp32 (%s)", rt.amp,
                 ", ".join(kept) or "none found")
    ema_cfg = cfg.schedule.get("ema") or {}
    # The average is a copy of the eager model (made before compiling): evaluation of EMA weights runs eagerly.
    ema = WeightsEMA(model, ema_cfg.decay, ema_cfg.warmup_iters) if ema_cfg.get("enable") else None
    if ema is not None:
        log.info("EMA of the weights (schedule.ema): decay %g, warm-up %d steps; evaluation and checkpoints use the "
                 "averaged weights", ema.decay, ema.warmup_iters)
    compile_model(model, rt.get("compile", False), device)
    train_model = model
    if place.enabled:  # gradients averaged over the processes
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(model, "has_unused_parameters", False))  # RF-DETR's idle ViT layers
    optimizer = build_optimizer(cfg, model, device)
    scale_lr(cfg, optimizer, place)
    # The lr schedule counts optimizer steps: one per schedule.accumulate batches (the epoch's last may be short).
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch(iters_per_epoch, cfg.schedule.get("accumulate", 1)))
    return Components(place=place, device=device, train_set=train_set, val_set=val_set, train_loader=train_loader,
                      val_loader=val_loader, iters_per_epoch=iters_per_epoch, model=model, train_model=train_model,
                      optimizer=optimizer, scheduler=scheduler, scaler=grad_scaler(dtype), amp_dtype=dtype, ema=ema)


def updates_per_epoch(iters_per_epoch: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of `iters_per_epoch` batches, one every `accumulate` (a short last group counts)."""
    return math.ceil(iters_per_epoch / max(1, int(accumulate)))


def build_data(cfg: DictConfig, place: distributed.Dist, device: torch.device):
    """(train set, val set or None, train loader, val loader or None)."""
    rt = cfg.runtime
    pin = device.type == "cuda" if rt.pin_memory == "auto" else bool(rt.pin_memory)
    files = annotation_files(cfg.data)
    # On a GPU the loader hands over uint8 images (4x fewer bytes to copy); the GPU converts them.
    float_output = device.type != "cuda"
    train_set = build_dataset(cfg.data, "train", train=True, float_output=float_output)
    # The val set takes the training set's classes, so label k means the same class in both.
    val_set = (build_dataset(cfg.data, "val", train=False, classes=train_set.classes, float_output=float_output,
                             classes_source=f"the training file {files['train']}") if files["val"] else None)
    log.info("Data %s: %d training images from %s, %s", cfg.data.name, len(train_set), files["train"],
             f"{len(val_set)} val images from {files['val']}" if val_set else "no val split "
             "(no evaluation, no best checkpoint: set data.val_ann or data.fold)")
    loader_options = dict(workers=loader_workers(rt.get("workers", 2), device, place), seed=rt.seed, pin_memory=pin,
                          persistent_workers=bool(rt.get("persistent_workers", False)),
                          prefetch_factor=int(rt.get("prefetch_factor", 2)),
                          rank=place.rank, world_size=place.world_size)
    sampler = cfg.data.get("sampler")
    train_loader = build_loader(train_set, cfg.data.batch_size, True,
                                group_by_aspect_ratio=bool(rt.get("group_by_aspect_ratio", True)),
                                sampler=OmegaConf.to_container(sampler) if sampler is not None else None,
                                **loader_options)
    val_loader = (build_loader(val_set, eval_batch_size(rt.get("eval_batch_size", "auto"), cfg.data.batch_size, device),
                               False, **loader_options) if val_set else None)
    return train_set, val_set, train_loader, val_loader


def loader_workers(value, device: torch.device, place: distributed.Dist) -> int:
    """runtime.workers: a number, or auto: 2 on a CPU (the cores train), on CUDA the CPU cores this
    process may use, shared by the processes on this machine, less one for the training process
    itself, at most 8 (more rarely helps and each worker holds a copy of the data set)."""
    if value == "auto":
        if device.type != "cuda":
            return 2
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        workers = max(1, min(8, per_process - 1))
        log.info("runtime.workers=auto: %d loader workers per process (%d CPUs here, %s process(es) on this machine)",
                 workers, cpus, os.environ.get("LOCAL_WORLD_SIZE", 1))
        return workers
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"runtime.workers={value} must be auto or a whole number >= 0 (0 loads in the training "
                          "process).")
    return value


def eval_batch_size(value, batch_size: int, device: torch.device) -> int:
    """runtime.eval_batch_size: a number, or auto: data.batch_size on a CPU, twice it on CUDA
    (evaluation keeps no activations for a backward pass, so the larger batch fits)."""
    if value == "auto":
        return int(batch_size) * (2 if device.type == "cuda" else 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"runtime.eval_batch_size={value} must be auto or a whole number >= 1.")
    return value


def build_model(cfg: DictConfig, num_classes: int, device: torch.device) -> torch.nn.Module:
    # The number of classes comes from the data, once: the model config never repeats it.
    model = instantiate("model", cfg.model, num_classes=num_classes, _convert_="all")
    model.to(device)
    model = apply_speed_settings(model, cfg.runtime, device)
    pad_to = set_pad_to(model, cfg.data.get("pad_to"))
    if pad_to is not None:
        log.info("data.pad_to: every batch padded to %dx%d (height x width)", *pad_to)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = [f"{key} {cfg.model[key]._target_.rsplit('.', 1)[-1]}" for key in ("backbone", "neck")
             if "_target_" in cfg.model.get(key, {})]
    if hasattr(model, "detector"):  # a transformers detector behind detect's contract (detect/models/hf_detr.py)
        parts = [f"transformers {type(model.detector).__name__}"]
    log.info("Model %s: %s (%s), %.1fM parameters, %.1fM trainable", cfg.model.name, type(model).__name__,
             ", ".join(parts) or "no backbone/neck keys", total / 1e6, trainable / 1e6)
    return model


NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float, paramwise) -> list[dict]:
    """The trainable parameters in groups by (lr multiplier, weight decay multiplier), MMDetection's
    paramwise_cfg: the backbone (`backbone.body.*`, or the model's own `backbone_prefix`) gets lr x
    backbone_lr_mult; norm layers' weights and biases weight_decay x norm_decay_mult, other biases x
    bias_decay_mult. With every multiplier
    at 1 there is one group, as before these keys existed (checkpoints stay compatible). The group
    with the plain lr comes first: the log's lr is the first group's."""
    norm_params = {id(p) for module in model.modules() if isinstance(module, NORM_LAYERS)
                   for p in module.parameters(recurse=False)}
    backbone_mult = float(paramwise.get("backbone_lr_mult", 1.0))
    backbone = getattr(model, "backbone_prefix", "backbone.body.")  # transformers detectors name theirs
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult = backbone_mult if name.startswith(backbone) else 1.0
        if id(param) in norm_params:
            decay_mult = float(paramwise.get("norm_decay_mult", 1.0))
        elif name.endswith(".bias"):
            decay_mult = float(paramwise.get("bias_decay_mult", 1.0))
        else:
            decay_mult = 1.0
        groups.setdefault((lr_mult, decay_mult), []).append(param)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] != 1.0, item[0][1] != 1.0))
    if len(ordered) > 1:
        log.info("Parameter groups (schedule.paramwise): %s", "; ".join(
            f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters at lr x{lr_mult:g}, weight decay x{decay_mult:g}"
            for (lr_mult, decay_mult), params in ordered))
    return [{"params": params, "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult}
            for (lr_mult, decay_mult), params in ordered]


def build_optimizer(cfg: DictConfig, model: torch.nn.Module,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    sch = cfg.schedule
    params = parameter_groups(model, float(sch.lr), float(sch.weight_decay), sch.get("paramwise") or {})
    make_optimizer = instantiate("schedule.optimizer", sch.optimizer)  # a partial: params come next
    options = fused_step(make_optimizer, cfg.runtime.get("fused_optimizer", "auto"), device or torch.device("cpu"))
    try:
        return make_optimizer(params, **options)
    except TypeError as err:
        raise ConfigError(
            f"schedule.optimizer (_target_={sch.optimizer._target_}) does not take its arguments: {err}. "
            "Remove a key it does not take on the command line, e.g. '~schedule.optimizer.momentum'."
        ) from err


def fused_step(make_optimizer, setting, device: torch.device) -> dict:
    """runtime.fused_optimizer -> the optimizer's keyword: {"fused": True} on CUDA when the optimizer
    has a fused step (SGD, Adam, AdamW: one kernel updates every parameter instead of several per
    tensor); {} otherwise (torch's default, foreach where it can)."""
    if setting not in ("auto", True, False):
        raise ConfigError(f"runtime.fused_optimizer={setting} must be auto, true or false.")
    if setting is False:
        return {}
    cls = getattr(make_optimizer, "func", make_optimizer)
    name = getattr(cls, "__name__", str(cls))
    takes_fused = "fused" in inspect.signature(cls).parameters
    keywords = getattr(make_optimizer, "keywords", {})
    if "fused" in keywords:  # schedule.optimizer.fused set in the config: that choice stands
        return {}
    asked_foreach = bool(keywords.get("foreach"))
    explicit = setting is True
    if device.type != "cuda":
        if explicit:
            log.info("runtime.fused_optimizer=true ignored on %s: %s steps with torch's default implementation "
                     "(the fused step is for CUDA)", device, name)
        return {}
    if not takes_fused or asked_foreach:
        if explicit:
            log.info("runtime.fused_optimizer=true ignored: %s", f"{name} has no fused step" if not takes_fused
                     else "schedule.optimizer.foreach=true asks for the foreach step")
        return {}
    log.info("Fused optimizer step (%s, runtime.fused_optimizer=%s)", name, setting)
    return {"fused": True}


def scale_lr(cfg: DictConfig, optimizer: torch.optim.Optimizer, place: distributed.Dist) -> None:
    """schedule.auto_scale_lr (MMDetection's rule): lr x (total batch / base_batch_size), where the
    total batch is data.batch_size x the number of processes x schedule.accumulate. Off by default:
    the configured lr is used as it is, whatever the batch."""
    accumulate = int(cfg.schedule.get("accumulate", 1))
    total_batch = int(cfg.data.batch_size) * place.world_size * accumulate
    rule = cfg.schedule.get("auto_scale_lr") or {}
    lr = optimizer.param_groups[0]["lr"]
    if not rule.get("enable"):
        log.info("lr %.4g for a total batch of %d images (%d process(es) x %d%s); schedule.auto_scale_lr.enable=true "
                 "would scale it linearly from base_batch_size=%s", lr, total_batch, place.world_size,
                 cfg.data.batch_size, f" x {accumulate} accumulated batches" if accumulate > 1 else "",
                 rule.get("base_batch_size"))
        return
    factor = total_batch / int(rule.base_batch_size)
    for group in optimizer.param_groups:
        group["lr"] *= factor
    log.info("schedule.auto_scale_lr: lr %.4g -> %.4g (total batch %d / base_batch_size %d)", lr, lr * factor,
             total_batch, rule.base_batch_size)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer,
                    iters_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """schedule.lr_scheduler: torch schedulers chained (warmup x main), stepped every iteration."""
    from detect.engine.lr_schedule import build_lr_scheduler

    return build_lr_scheduler(optimizer, cfg.schedule, iters_per_epoch)


def data_root(cfg: DictConfig) -> str:
    return str(Path(cfg.data.root).expanduser().resolve())
