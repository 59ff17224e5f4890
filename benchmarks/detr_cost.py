"""CPU cost of the transformers detectors (issue 19) beside the torchvision ones, side by side in one run:
parameters, training img/s (forward + backward of a batch) and inference img/s (batch 1), every model at the
same input size, random init (no download), 10 classes. The models alternate over --repeats rounds and the
medians are printed, so a busy machine slows every side alike.

    .venv/bin/python benchmarks/detr_cost.py                       # 512 px, all models
    .venv/bin/python benchmarks/detr_cost.py --size 640 --models rtdetr_v2_r18 faster_rcnn_r18_demo

Square models (RT-DETR, D-FINE, RF-DETR) are stretched to --size x --size (RF-DETR to the nearest multiple of
56); the others resize the shorter side to --size, on square images here. On a GPU (--device cuda) the step
runs under bf16 autocast when --amp is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)

from detect.config import register_resolvers

REPO = Path(__file__).resolve().parents[1]
MODELS = ["faster_rcnn_r18_demo", "cascade_rcnn_r18_demo", "faster_rcnn", "rtdetr_v2_r18", "rtdetr_v2_r50", "dfine_s",
          "dfine_m", "rf_detr_base", "deformable_detr"]


def build(name: str, size: int, device: torch.device) -> torch.nn.Module:
    overrides = [f"model={name}", "data=demo", f"data.min_size={size}", f"data.max_size={size}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if "pretrained" in cfg.model:  # a transformers detector: random init, its own square at this size
        cfg.model.pretrained = None
        if cfg.model.resize == "square":
            divisor = int(cfg.model.size_divisible)
            cfg.model.min_size = cfg.model.max_size = max(divisor, round(size / divisor) * divisor)
    elif "backbone" in cfg.model and "weights" in cfg.model.backbone:
        cfg.model.backbone.weights = None
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model, num_classes=10, _convert_="all").to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input side in pixels")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", type=int, default=2, help="images per training step")
    parser.add_argument("--iters", type=int, default=2, help="timed steps per model and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the models alternate within each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    args = parser.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(args.threads)
    register_resolvers()
    device = torch.device(args.device)
    print(machine_line(args.threads), f"device {device}", "bf16 autocast" if args.amp else "fp32")
    models = {name: build(name, args.size, device) for name in args.models}
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=generator, device="cpu").to(device)
              for _ in range(args.batch)]
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.9, 0.8], [0.2, 0.6, 0.45, 0.95]]) * args.size
    targets = [{"boxes": boxes.to(device), "labels": torch.tensor([1, 4, 9], device=device)} for _ in images]

    def timed(function, model) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            function(model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def train_step(model):
        model.train()
        sum(model(images, targets).values()).backward()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def predict(model):
        model.eval()
        model(images[:1])

    train_times = {name: [] for name in models}
    predict_times = {name: [] for name in models}
    for model in models.values():  # warm-up: first calls allocate and pick kernels
        train_step(model)
        predict(model)
    for round_ in range(args.repeats):
        order = list(models)[round_ % len(models):] + list(models)[:round_ % len(models)]
        for name in order:
            for _ in range(args.iters):
                train_times[name].append(timed(train_step, models[name]))
                predict_times[name].append(timed(predict, models[name]))
    print(f"{args.size} px, training batch {args.batch}, medians of {args.repeats} rounds x {args.iters} steps")
    print(f"{'model':<22} {'params M':>9} {'train img/s':>12} {'predict img/s':>14}")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<22} {params:>9.1f} {args.batch / statistics.median(train_times[name]):>12.2f} "
              f"{1 / statistics.median(predict_times[name]):>14.2f}")


if __name__ == "__main__":
    main()
