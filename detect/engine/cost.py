"""What a model costs, beside what it scores: parameters, FLOPs per image and inference latency.

- FLOPs: `torch.utils.flop_counter` over one evaluation forward of one image at the configured size
  (the detector's own resize, backbone, neck and heads). It counts the matrix ops (convolutions,
  matmuls, attention); torchvision's RoIAlign and NMS and other custom ops are not counted, so
  two-stage models read slightly low. One multiply-add is 2 FLOPs, as torch counts.
- Latency: batch 1, `warmup` forwards then the median of `repeats`, on the given device with the
  current torch thread count (both recorded with the figure).

The trainer measures the evaluated weights at the end of a run (`runtime.profile`, written to
summary.json's `cost`); `python -m detect.profile` measures any config or run.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("detect")


def input_size(model_cfg) -> tuple[int, int]:
    """The (height, width) a cost is measured at: a square of the model's `min_size` (the trash images are
    1024 x 1024; RT-DETR and co. stretch every image to their square anyway)."""
    side = int(model_cfg.get("min_size", 800))
    return side, side


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_image(model: torch.nn.Module, height: int, width: int, device: torch.device) -> int:
    was_training = model.training
    model.eval()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    with FlopCounterMode(display=False) as counter:
        model([image])
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency_ms(model: torch.nn.Module, height: int, width: int, device: torch.device, warmup: int = 2,
               repeats: int = 10) -> float:
    """Median wall time of one evaluation forward of one image, in milliseconds."""
    was_training = model.training
    model.eval()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)).to(device)

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model([image])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000

    for _ in range(warmup):
        once()
    times = [once() for _ in range(max(1, repeats))]
    model.train(was_training)
    return statistics.median(times)


def measure_cost(model: torch.nn.Module, height: int, width: int, device: torch.device, warmup: int = 2,
                 repeats: int = 10) -> dict:
    """The figures summary.json's `cost` holds; `detect.runs` shows params_m, gflops and latency_ms."""
    try:
        gflops = round(flops_per_image(model, height, width, device) / 1e9, 2)
    except Exception as err:  # FlopCounterMode cannot follow every model (transformers' Deformable DETR)
        log.warning("FLOPs not counted for %s: %s: %s", type(model).__name__, type(err).__name__, err)
        gflops = None
    return {
        "params_m": round(count_parameters(model) / 1e6, 3),
        "gflops": gflops,
        "latency_ms": round(latency_ms(model, height, width, device, warmup, repeats), 3),
        "size": [height, width],
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "batch": 1,
        "repeats": repeats,
    }
