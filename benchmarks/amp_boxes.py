"""Mixed precision and box accuracy: a trained run's checkpoint evaluated on its val split in fp32,
under bf16 / fp16 autocast as torch computes it, and under autocast with the box-regression layers
in fp32 (what detect does with runtime.amp: detect.engine.gpu_settings.box_regression_in_fp32).

bfloat16 keeps 8 bits of mantissa: a box coordinate near 1000 px decoded in bf16 moves in steps of
4-8 px, which shows in mAP75 first. Autocast runs on a CPU too (slowly), so this measures the
effect without a GPU; on CUDA pass --device cuda.

    .venv/bin/python benchmarks/amp_boxes.py --run outputs/benchmarks/demo_default_5ep
    .venv/bin/python benchmarks/amp_boxes.py --run <trash run> --device cuda --batch-size 8
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)

from detect.data.build import build_dataset, build_loader
from detect.engine.gpu_settings import box_regression_in_fp32
from detect.engine.inference import evaluate
from detect.engine.testing import load_trained_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run dir with checkpoints/ (or a .pth)")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16"], choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_line(torch.get_num_threads()))
    model, run_cfg, state, path = load_trained_model(args.run, args.checkpoint)
    model.to(device)
    dataset = build_dataset(run_cfg.data, "val", train=False, classes=list(state["classes"]),
                            float_output=device.type != "cuda")
    loader = build_loader(dataset, args.batch_size, False, workers=2, seed=0, pin_memory=device.type == "cuda")
    print(f"{path}: model {run_cfg.model.name}, {len(dataset)} val images of {dataset.ann_file}, device {device}")

    fp32_boxes = copy.deepcopy(model)
    changed = box_regression_in_fp32(fp32_boxes)
    rows = [("fp32", model, None)]
    for name in args.precisions:
        rows += [(f"{name} autocast", model, DTYPES[name]), (f"{name} autocast, box layers fp32", fp32_boxes,
                                                              DTYPES[name])]
    print(f"box layers kept in fp32: {', '.join(changed)}\n")
    print("| precision | mAP50 | mAP75 | mAP | seconds |\n| --- | ---: | ---: | ---: | ---: |")
    for label, net, dtype in rows:
        tic = time.perf_counter()
        metrics, _ = evaluate(net, loader, device, amp_dtype=dtype)
        print(f"| {label} | {metrics['bbox_mAP_50']:.4f} | {metrics['bbox_mAP_75']:.4f} | {metrics['bbox_mAP']:.4f} "
              f"| {time.perf_counter() - tic:.0f} |", flush=True)


if __name__ == "__main__":
    main()
