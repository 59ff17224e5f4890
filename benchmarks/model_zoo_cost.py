"""Every model option's cost at one input size, and whether it exports to ONNX: parameters, GFLOPs per image
(detect/engine/cost.py), CPU latency (batch 1, median), the ONNX export (fixed size, checked with onnxruntime on
one image: largest box difference to PyTorch) and onnxruntime's latency on the same image. Random weights (no
download), 10 classes; two-stage latencies follow the proposals, so read them as orders of magnitude.

    .venv/bin/python benchmarks/model_zoo_cost.py --size 512 --repeats 3
    .venv/bin/python benchmarks/model_zoo_cost.py --models faster_rcnn_r18_demo cascade_rcnn_r18_demo --no-onnx

Prints a markdown table (the README's "Cost of every model" and benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from detr_cost import build as build_on  # benchmarks/detr_cost.py: random init, no download, square sizes
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)

from detect.config import register_resolvers
from detect.engine.cost import count_parameters, flops_per_image, latency_ms

REPO = Path(__file__).resolve().parents[1]


def model_options() -> list[str]:
    folder = REPO / "conf" / "model"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def onnx_check(model: torch.nn.Module, image: torch.Tensor, repeats: int) -> tuple[str, str, str]:
    """(export result, largest box difference on the image, onnxruntime ms) or the failure's first line."""
    import onnxruntime

    from detect.export import as_tuple

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(as_tuple(model), (image,), str(path), opset_version=17, dynamo=False,
                                  input_names=["image"], output_names=["boxes", "labels", "scores"])
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
            return f"fails: {type(err).__name__}: {first[:120]}", "-", "-"
        feed = {"image": image.numpy()}
        boxes = session.run(None, feed)[0]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1000)
    with torch.no_grad():
        reference = model([image])[0]["boxes"].numpy()
    if reference.shape == boxes.shape:
        # Random weights score many boxes alike: ties may come out in another order, so each PyTorch box is
        # compared with its nearest onnxruntime box.
        nearest = np.abs(reference[:, None, :] - boxes[None, :, :]).max(-1).min(1) if len(boxes) else np.zeros(1)
        difference = f"{nearest.max():.4f}"
    else:
        difference = f"{len(boxes)} vs {len(reference)} boxes"
    return "ok", difference, f"{statistics.median(times):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=None, help="model options (default: all of conf/model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(args.threads)
    register_resolvers()
    print(machine_line(args.threads), f"load {os.getloadavg()[0]:.1f}")
    image = torch.rand(3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"| model | params M | GFLOPs at {args.size} px | CPU ms per image | ONNX export | max box diff px | "
          "onnxruntime ms |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for name in args.models or model_options():
        model = build_on(name, args.size, torch.device("cpu")).eval()
        with torch.no_grad():
            try:
                flops = flops_per_image(model, args.size, args.size, torch.device("cpu")) / 1e9
            except Exception as err:  # FlopCounterMode cannot follow every model's ops
                print(f"<!-- {name}: FLOPs not counted: {type(err).__name__}: {err} -->", flush=True)
                flops = float("nan")
            ms = latency_ms(model, args.size, args.size, torch.device("cpu"), warmup=1, repeats=args.repeats)
        onnx = ("-", "-", "-") if args.no_onnx else onnx_check(model, image, args.repeats)
        print(f"| `{name}` | {count_parameters(model) / 1e6:.1f} | {flops:.1f} | {ms:.0f} | {onnx[0]} | "
              f"{onnx[1]} | {onnx[2]} |", flush=True)


if __name__ == "__main__":
    main()
