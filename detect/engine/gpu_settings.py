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


def amp_dtype(value, device: torch.device) -> torch.dtype | None:
    """runtime.amp -> the autocast dtype: false/null -> None (fp32), true or fp16 -> float16,
    bf16 -> bfloat16. None on CPU."""
    if value in (None, False, "false", "none"):
        return None
    name = "fp16" if value is True else str(value).lower()
    if name not in AMP_DTYPES:
        raise ConfigError(f"runtime.amp={value} is not a precision: use false, fp16 (or true) or bf16.")
    if device.type != "cuda":
        log.info("runtime.amp=%s is ignored on %s: training in fp32", value, device)
        return None
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"runtime.amp=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                          "use runtime.amp=fp16.")
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
    if runtime.get("cudnn_benchmark"):
        if runtime.get("deterministic"):
            log.info("runtime.cudnn_benchmark ignored: runtime.deterministic=true picks fixed kernels")
        else:
            torch.backends.cudnn.benchmark = True
    if runtime.get("channels_last"):
        # Convolutions follow their weights' layout, so the backbone and heads run in NHWC.
        model = model.to(memory_format=torch.channels_last)
    return model
