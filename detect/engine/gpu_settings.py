"""The runtime switches that make a GPU run faster: mixed precision, channels_last, cudnn.benchmark.

All of them are off by default and ignored on CPU (said once in the log), so a config that sets
them for the cluster still runs on a laptop.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from detect.errors import ConfigError

log = logging.getLogger("detect")

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def amp_dtype(value, device: torch.device, key: str = "runtime.amp") -> torch.dtype | None:
    """runtime.amp (or detect.test's `amp`, named by `key`) -> the autocast dtype: false/null -> None
    (fp32), true or fp16 -> float16, bf16 -> bfloat16. None on CPU."""
    if value in (None, False, "false", "none"):
        return None
    name = "fp16" if value is True else str(value).lower()
    if name not in AMP_DTYPES:
        raise ConfigError(f"{key}={value} is not a precision: use false, fp16 (or true) or bf16.")
    if device.type != "cuda":
        log.info("%s=%s is ignored on %s: fp32", key, value, device)
        return None
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{key}=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                          f"use {key}=fp16.")
    return AMP_DTYPES[name]


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler("cuda") if dtype == torch.float16 else None


def apply_speed_settings(model: torch.nn.Module, runtime: DictConfig, device: torch.device) -> torch.nn.Module:
    """channels_last weights and cudnn.benchmark on CUDA, as runtime.channels_last /
    runtime.cudnn_benchmark say. Returns the model (moved to the memory format)."""
    wanted = [key for key in ("channels_last", "cudnn_benchmark") if runtime.get(key)]
    if device.type != "cuda":
        if wanted:
            log.info("runtime.%s ignored on %s", " and runtime.".join(wanted), device)
        return model
    # Set either way: the flag is process-wide, and a run in the same process (a sweep's next job) that
    # leaves cudnn_benchmark off must not inherit it from the previous one.
    torch.backends.cudnn.benchmark = False
    if runtime.get("cudnn_benchmark"):
        if runtime.get("deterministic"):
            log.info("runtime.cudnn_benchmark ignored: runtime.deterministic=true picks fixed kernels")
        else:
            torch.backends.cudnn.benchmark = True
    if runtime.get("channels_last"):
        # Convolutions follow their weights' layout, so the backbone and heads run in NHWC.
        model = model.to(memory_format=torch.channels_last)
    return model


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring the GPU memory peak anew (each epoch); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """The most GPU memory tensors held since the last reset, in MiB; None on CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


class Fp32Linear(torch.nn.Linear):
    """A Linear layer that computes in fp32 under autocast (the box regression outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class Fp32Conv2d(torch.nn.Conv2d):
    """A Conv2d that computes in fp32 under autocast (the dense heads' box regression outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


BOX_OUTPUTS = ("bbox_pred", "bbox_reg")  # RPN, Fast R-CNN, cascade stages; RetinaNet and FCOS regression heads


def box_regression_in_fp32(model: torch.nn.Module) -> list[str]:
    """Under mixed precision, let the layers that output box deltas compute in fp32, so the boxes
    decoded from them are fp32: in bfloat16 (8 bits of mantissa) a coordinate near 1000 px moves in
    steps of 4-8 px, which costs AP at strict IoU. These layers are a tiny share of the work.
    The layers keep their parameters and names (their class changes), so checkpoints are unchanged.
    Returns the names of the layers changed."""
    changed = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in BOX_OUTPUTS:
            continue
        if type(module) is torch.nn.Linear:
            module.__class__ = Fp32Linear
        elif type(module) is torch.nn.Conv2d:
            module.__class__ = Fp32Conv2d
        else:
            continue
        changed.append(name)
    return changed
