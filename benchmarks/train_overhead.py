"""Training overhead: detect's trainer vs a minimal plain loop, same model, data, batch, size, threads.

detect's side is the real path of `python -m detect.train`: the config composed with Hydra from
conf/train.yaml, `prepare(cfg, run_dir, ...)` (detect.engine.fit: build and hooks, timed: the start-up),
then the loop `trainer.train()` with its hooks, i.e. all of `fit()`, with the trainer's loaders
(seeded batch sampler, aspect-ratio groups, (index, seed) keys, persistent workers), its optimizer,
per-iteration warm-up schedule (torch schedulers), loss-finite check, metrics hook (train.log,
metrics.jsonl every runtime.log_interval steps) and the
StopRequest signal handling, whose per-step call is where the clock is read. Validation is off
(data.val_ann=null); the epoch-end checkpoint is written after the clock stops.

The plain side builds the identical model from the same composed config (hydra.utils.instantiate,
same seed, so the same initial weights: checked), the configured optimizer, a
`DataLoader(shuffle=True)` over the same data set object (same images and transforms), and runs
`loss = sum(model(images, targets).values()); zero_grad; backward; step`, nothing else.

Both run --warmup steps, then --iters timed steps; the sides alternate over --repeats and the median
images/s is reported, over the whole timed window and from the median step time (other processes on
a shared machine slow single steps several-fold; the 1-minute load average is printed per run).
Images/s include the data loading wait, as a user sees it. torch threads: --threads on both sides
(runtime.threads for detect); the loader workers run with 1 thread each (DataLoader's default).
The plain side has no lr warm-up, so its weights, proposals and hence step cost drift apart from
detect's by a few percent after the first steps: a difference of that size is not overhead.
detect's start-up excludes the Python imports (torch, torchvision, detect), as they are the same for both.

    .venv/bin/python benchmarks/train_overhead.py                    # r18 demo model, medical_waste at 320 px
    .venv/bin/python benchmarks/train_overhead.py --data demo --iters 50 --repeats 3
    .venv/bin/python benchmarks/train_overhead.py --model faster_rcnn --size 640 --device cuda --iters 100

Writes the detect side's run dirs under outputs/benchmarks/train_overhead/ (checkpoints deleted).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import shutil
import statistics
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)
from torch.utils.data import DataLoader

from detect.config import register_resolvers
from detect.data.build import build_dataset
from detect.data.coco import collate
from detect.engine.fit import prepare
from detect.engine.inference import move_to
from detect.engine.interrupt import StopRequest
from detect.run import RunDir

REPO = Path(__file__).resolve().parents[1]
MEDICAL_WASTE = REPO.parent / "shared" / "data" / "medical_waste"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("medical_waste", "demo"), default="medical_waste",
                        help="medical_waste (../shared/data; falls back to demo when absent) or the generated demo set")
    parser.add_argument("--model", default="faster_rcnn_r18_demo", help="a conf/model option")
    parser.add_argument("--size", type=int, default=320, help="data.min_size = data.max_size")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers, allocator)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workers", type=int, default=2, help="loader workers (runtime.workers default: 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for both sides")
    parser.add_argument("--out", default=str(REPO / "outputs" / "benchmarks" / "train_overhead"))
    return parser.parse_args()


def compose_config(args: argparse.Namespace, data: str):
    from hydra import compose, initialize_config_dir

    data_overrides = (["data=coco", f"data.root={MEDICAL_WASTE}"] if data == "medical_waste" else ["data=demo"])
    overrides = [
        f"model={args.model}", *data_overrides, f"data.min_size={args.size}", f"data.max_size={args.size}",
        f"data.batch_size={args.batch_size}", "data.val_ann=null", "schedule.epochs=1",
        # +1: detect's clock is read mid-step (StopRequest is asked after the forward pass), so the timed
        # window runs from step warmup to step warmup + iters, i.e. `iters` whole steps as on the plain side.
        f"runtime.max_iters_per_epoch={args.warmup + args.iters + 1}", f"runtime.threads={args.threads}",
        f"runtime.workers={args.workers}", f"runtime.device={args.device}", *args.extra,
    ]
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def fingerprint(model: torch.nn.Module) -> float:
    return sum(float(p.detach().double().abs().sum()) for p in model.parameters())


def rates(steps: np.ndarray, batch_size: int) -> dict:
    """img/s over the whole timed window, and from the median step: other processes on a shared
    machine slow some steps several-fold, and the median step is what stays comparable then."""
    return {"img_s": len(steps) * batch_size / float(steps.sum()), "img_s_median_step": batch_size / float(
        np.median(steps)), "load": os.getloadavg()[0]}


class ClockedStop(StopRequest):
    """The trainer's own Ctrl-C/SIGTERM handler, also noting the time each time the loop asks it."""

    def __init__(self):
        super().__init__()
        self.stamps: list[float] = []

    def __call__(self) -> bool:
        self.stamps.append(time.perf_counter())
        return super().__call__()


def run_detect(args: argparse.Namespace, data: str, run_dir: Path) -> dict:
    tic = time.perf_counter()
    cfg = compose_config(args, data)
    with ClockedStop() as stop:
        trainer = prepare(cfg, RunDir(run_dir), {}, stop, "lines", [])  # what fit() runs before the loop
        startup = time.perf_counter() - tic
        weights = fingerprint(trainer.parts.model)
        trainer.train()
    steps = np.diff(stop.stamps[args.warmup:args.warmup + args.iters + 1])
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 2 x model size per run, not needed
    del trainer
    gc.collect()
    return {**rates(steps, args.batch_size), "startup_s": startup, "weights": weights}


def run_plain(args: argparse.Namespace, data: str) -> dict:
    cfg = compose_config(args, data)
    seed = int(cfg.runtime.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset = build_dataset(cfg.data, "train", train=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                        num_workers=args.workers)
    model = hydra.utils.instantiate(cfg.model, num_classes=len(dataset.classes), _convert_="all").to(device)
    weights = fingerprint(model)
    optimizer = hydra.utils.instantiate(cfg.schedule.optimizer)([p for p in model.parameters() if p.requires_grad])
    model.train()
    stamps = []
    for images, targets in loader:
        images, targets = move_to(images, targets, device)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda" and len(stamps) in (args.warmup - 1, args.warmup + args.iters - 1):
            torch.cuda.synchronize()  # only at the window's ends: the steps in between stay asynchronous
        stamps.append(time.perf_counter())
        if len(stamps) == args.warmup + args.iters:
            break
    steps = np.diff(stamps[args.warmup - 1:])
    del loader, model, optimizer
    gc.collect()
    return {**rates(steps, args.batch_size), "weights": weights}


def main() -> None:
    args = parse_args()
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1 (the first step starts the loader workers)")
    data = args.data
    if data == "medical_waste" and not (MEDICAL_WASTE / "train.json").is_file():
        print(f"{MEDICAL_WASTE} is absent: using the generated demo data instead")
        data = "demo"
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    print(f"model {args.model}, data {data}, {args.size} px, batch {args.batch_size}, {args.workers} workers, "
          f"device {args.device}, {args.warmup} warm-up + {args.iters} timed steps, {args.repeats} repeats per side")
    out = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    # Hydra would send the trainer's log to <run dir>/train.log: one file here, so the console stays readable.
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)

    runs: dict[str, list[dict]] = {"detect": [], "plain": []}
    for r in range(args.repeats):
        for side in (("detect", "plain") if r % 2 == 0 else ("plain", "detect")):  # alternate who goes first
            result = run_detect(args, data, out / f"detect_{r}") if side == "detect" else run_plain(args, data)
            runs[side].append(result)
            print(f"repeat {r + 1} {side:>6}: {result['img_s']:.2f} img/s over the window, "
                  f"{result['img_s_median_step']:.2f} img/s from the median step, 1-min load {result['load']:.1f}"
                  + (f", start-up {result['startup_s']:.1f} s" if "startup_s" in result else ""), flush=True)
    weights = {round(x["weights"], 3) for side in runs.values() for x in side}
    print(f"\ninitial weights identical on both sides: {'yes' if len(weights) == 1 else f'NO {weights}'}")
    ratios = {}
    for metric in ("img_s", "img_s_median_step"):
        med = {side: statistics.median(x[metric] for x in results) for side, results in runs.items()}
        ratios[metric] = med["detect"] / med["plain"]
        for side in ("detect", "plain"):
            values = [x[metric] for x in runs[side]]
            print(f"{metric:>17} {side:>6}: median {med[side]:.2f} img/s [{', '.join(f'{v:.2f}' for v in values)}]")
        paired = [d[metric] / p[metric] for d, p in zip(runs["detect"], runs["plain"])]  # back-to-back runs
        print(f"{metric:>17} detect/plain per repeat: [{', '.join(f'{v:.3f}' for v in paired)}]")
    startup = statistics.median(x["startup_s"] for x in runs["detect"])
    print(f"detect start-up (compose config + Trainer + build: data sets, loaders, model, optimizer): {startup:.1f} s")
    print(f"ratio detect/plain = {ratios['img_s']:.3f} (goal >= 0.97)  [img/s over the timed windows, medians]")
    print(f"ratio detect/plain = {ratios['img_s_median_step']:.3f} (goal >= 0.97)  [from the median step, "
          "robust to other load]")
    print(f"logs: {out}")


if __name__ == "__main__":
    main()
