"""Cost of the backbones beside ResNet-50: parameters and CPU images per second of the backbone
forward (batch 1, eval, no grad) at a given size, every backbone measured in the same run, in
alternating rounds, with random weights (speed does not depend on them).

    python benchmarks/backbones.py --size 512 --repeat 3

Prints one row per backbone: parameters (millions), img/s (median of the rounds) and the ratio to
ResNet-50's img/s. Figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detect.models.backbones import ResNet  # noqa: E402
from detect.models.feature_backbones import TimmBackbone, TorchvisionBackbone  # noqa: E402

BACKBONES = {
    "resnet50 (detect)": lambda: ResNet(50, weights=None, frozen_stages=-1, norm_eval=False),
    "convnext_tiny (torchvision)": lambda: TorchvisionBackbone("convnext_tiny"),
    "swin_t (torchvision)": lambda: TorchvisionBackbone("swin_t"),
    "regnet_y_800mf (torchvision)": lambda: TorchvisionBackbone("regnet_y_800mf"),
    "efficientnet_v2_s (torchvision)": lambda: TorchvisionBackbone("efficientnet_v2_s"),
    "convnext_tiny (timm)": lambda: TimmBackbone("convnext_tiny", pretrained=False),
    "efficientnetv2_rw_s (timm)": lambda: TimmBackbone("efficientnetv2_rw_s", pretrained=False),
    "resnet50d (timm)": lambda: TimmBackbone("resnet50d", pretrained=False),
}


def images_per_second(model: torch.nn.Module, image: torch.Tensor, steps: int) -> float:
    with torch.no_grad():
        model(image)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            model(image)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square input size in pixels (512)")
    parser.add_argument("--steps", type=int, default=5, help="timed forwards per round (5)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, every backbone once per round (3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: make().eval() for name, make in BACKBONES.items()}
    image = torch.rand(1, 3, args.size, args.size)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeat):  # alternating rounds: a load change hits every backbone alike
        for name, model in models.items():
            rates[name].append(images_per_second(model, image, args.steps))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.size}x{args.size}, batch 1, "
          f"median of {args.repeat} rounds x {args.steps} forwards, load average {load:.2f}")
    base = statistics.median(rates["resnet50 (detect)"])
    print("| backbone | parameters (M) | img/s | vs ResNet-50 |\n| --- | ---: | ---: | ---: |")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rate = statistics.median(rates[name])
        print(f"| {name} | {params:.1f} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
