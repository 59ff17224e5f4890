"""Training overhead: detect's trainer vs a minimal plain loop, same model, data, batch, size, threads.

detect's side is the real path of `python -m detect.train`: the config composed with Hydra from
conf/train.yaml, `prepare(cfg, run_dir, ...)` (detect.engine.fit: build and hooks, timed: the start-up),
then the loop `trainer.train()` with its hooks, i.e. all of `fit()`, with the trainer's loaders
(seeded batch sampler, aspect-ratio groups, (index, seed) keys, persistent workers), its optimizer,
per-iteration warm-up schedule (torch schedulers), loss-finite check, metrics hook (train.log,
metrics.jsonl every runtime.log_interval steps) and the
StopRequest signal handling, whose per-step call is where the clock is read. Validation is off
(data.val_ann=null); the epoch-end checkpoint is written after the clock stops.

The plain side builds the identical model from the same composed config (detect.engine.build's
build_model after the same seeding: the same initial weights, checked), and runs a plain
torch.utils.data.DataLoader and the loop `loss = sum(model(images, targets).values()); zero_grad;
backward; (clip); optimizer.step(); scheduler.step()`, nothing else.

Both sides follow the same weights, because the step cost of a detector depends on them (the RPN's
proposals that survive NMS, the sampled RoIs): on a GPU, a plain loop without detect's lr warm-up
and with other batches (`DataLoader(shuffle=True)`) drifted 15-30% from detect's step cost with a
randomly initialised detector, which the ratio then showed as detect's overhead (or gain). So the
figures come from one of two modes, both checked at the end by comparing the final weights of the
two sides of each repeat (relative L2 difference per tensor <= --tolerance, 1e-3: CPU runs agree
bit for bit, GPU atomics in roi_align's backward add a little; exit code 1 when they do not agree):
- same schedule (default): the plain side's optimizer has detect's parameter groups (and
  schedule.auto_scale_lr), its lr schedule is detect's (build_lr_scheduler over the same steps,
  warm-up included, stepped once per step), schedule.grad_clip is applied as detect does, and its
  DataLoader gets as batch_sampler the list of batches detect's training sampler yields for epoch 0:
  the same images in the same order with the same per-image augmentation seeds (the data set
  augments item (index, seed, epoch) on torch's RNG seeded with seed, so the tensors are identical).
  Its generator is seeded as detect's loader's (it seeds the workers and keeps the global RNG,
  which draws the RPN's and RoI head's samples, on the same stream on both sides).
- --lr0: schedule.lr=0 on both sides: the weights never move (BatchNorm's running statistics
  still do, identically), so both sides time the initial weights' step, whatever the schedule.

Both run --warmup untimed steps, then --iters timed steps, then one more step (detect's clock is
read inside a step; see compose_config); the sides alternate over --repeats and the median
images/s is reported, over the whole timed window and from the median step time (other processes
on a shared machine slow single steps several-fold; the 1-minute load average is printed per run).
Images/s include the data loading wait, as a user sees it. torch threads: --threads on both sides
(runtime.threads for detect); the loader workers run with 1 thread each (DataLoader's default).
detect's start-up excludes the Python imports (torch, torchvision, detect), as they are the same for both.
Not mirrored on the plain side: runtime.amp (fp32 there: the weights then differ by design and the
check only informs), runtime.compile, the fused optimizer step on CUDA (runtime.fused_optimizer),
pinned memory and schedule.accumulate (refused).

--profile-steps N (after the timed runs) profiles N steps of detect's trainer, after --warmup
untimed ones, with torch.profiler in a separate short run and writes profile.txt beside the logs:
the top ops by self CPU time (and self CUDA time on a GPU) and the host synchronisation points
(aten::item, aten::_local_scalar_dense, aten::nonzero, cudaStreamSynchronize, cudaMemcpyAsync, ...).

    .venv/bin/python benchmarks/train_overhead.py                    # r18 demo model, medical_waste at 320 px
    .venv/bin/python benchmarks/train_overhead.py --data demo --iters 50 --repeats 3
    .venv/bin/python benchmarks/train_overhead.py --data demo --iters 50 --lr0 --profile-steps 5
    .venv/bin/python benchmarks/train_overhead.py --model faster_rcnn --size 640 --device cuda --iters 100

Writes the detect side's run dirs under outputs/benchmarks/train_overhead/ (checkpoints deleted).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)
from torch.utils.data import DataLoader

from detect.config import register_resolvers
from detect.data.coco import collate
from detect.data.demo import prepare_demo_data
from detect.engine import distributed
from detect.engine.build import build_data, build_model, parameter_groups, scale_lr, updates_per_epoch
from detect.engine.fit import prepare
from detect.engine.gpu_settings import amp_dtype
from detect.engine.hooks.base import Hook
from detect.engine.inference import move_to
from detect.engine.interrupt import StopRequest
from detect.engine.lr_schedule import build_lr_scheduler
from detect.engine.reproducibility import seed_everything
from detect.run import RunDir

REPO = Path(__file__).resolve().parents[1]
# $DETECT_MEDICAL_WASTE points elsewhere (a copy carried to a GPU machine, which does not see ../shared).
MEDICAL_WASTE = Path(os.environ.get("DETECT_MEDICAL_WASTE") or REPO.parent / "shared" / "data" / "medical_waste")
DEMO = REPO / "data" / "demo"  # data=demo's root (data/demo), absolute: the script runs from any folder
# Ops where the host waits for (or, on a CPU, would wait for) the device: a value read on the host.
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "cudaStreamSynchronize",
            "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--workers", type=int, default=2, help="loader workers (runtime.workers on CPU: 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr0", action="store_true",
                        help="schedule.lr=0 on both sides: the weights never move (default: both sides follow "
                             "detect's lr schedule, warm-up included, on the same batches)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after the timed runs, profile this many steps of detect's trainer (torch.profiler) "
                             "into profile.txt; 0: no profile")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest relative L2 difference per tensor at which the final weights of the two sides "
                             "count as the same")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for both sides")
    parser.add_argument("--out", default=str(REPO / "outputs" / "benchmarks" / "train_overhead"))
    return parser.parse_args(argv)


def total_steps(args: argparse.Namespace) -> int:
    """Steps each side runs: warm-up, the timed ones, and one more (see compose_config)."""
    return args.warmup + args.iters + 1


def compose_config(args: argparse.Namespace, data: str, steps: int | None = None):
    from hydra import compose, initialize_config_dir

    data_overrides = (["data=coco", f"data.root={MEDICAL_WASTE}"] if data == "medical_waste"
                      else ["data=demo", f"data.root={DEMO}"])
    overrides = [
        f"model={args.model}", *data_overrides, f"data.min_size={args.size}", f"data.max_size={args.size}",
        f"data.batch_size={args.batch_size}", "data.val_ann=null", "schedule.epochs=1",
        # +1: detect's clock is read mid-step (StopRequest is asked after the forward pass), so the timed
        # window runs from step warmup to step warmup + iters, i.e. `iters` whole steps as on the plain side,
        # which runs the same warmup + iters + 1 steps (the same lr schedule and final weights), untimed last.
        f"runtime.max_iters_per_epoch={steps or total_steps(args)}", f"runtime.threads={args.threads}",
        f"runtime.workers={args.workers}", f"runtime.device={args.device}",
        *(["schedule.lr=0"] if args.lr0 else []), *args.extra,
    ]
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def fingerprint(model: torch.nn.Module) -> float:
    return sum(float(p.detach().double().abs().sum()) for p in model.parameters())


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights and buffers (BatchNorm statistics), to compare the sides after the runs."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / max(||a||, ||b||) in float64 (0 for two zero tensors); integer tensors (BatchNorm's
    num_batches_tracked) are equal or not (inf); a shape mismatch is inf."""
    if a.shape != b.shape:
        return math.inf
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else math.inf
    a, b = a.double(), b.double()
    scale = max(float(a.norm()), float(b.norm()))
    return float((a - b).norm()) / scale if scale > 0 else 0.0


def compare_weights(detect: dict[str, torch.Tensor], plain: dict[str, torch.Tensor]) -> dict[str, float]:
    """The relative difference of every tensor (inf for a tensor one side lacks)."""
    return {name: relative_difference(detect[name], plain[name]) if name in detect and name in plain else math.inf
            for name in sorted({*detect, *plain})}


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


def too_few_batches(available: int, args: argparse.Namespace) -> SystemExit:
    return SystemExit(f"The training set has {available} batches of {args.batch_size} per epoch, fewer than the "
                      f"{total_steps(args)} steps a run takes (--warmup {args.warmup} + --iters {args.iters} + 1): "
                      "lower --iters or --warmup.")


def run_detect(args: argparse.Namespace, data: str, run_dir: Path) -> dict:
    tic = time.perf_counter()
    cfg = compose_config(args, data)
    with ClockedStop() as stop:
        trainer = prepare(cfg, RunDir(run_dir), {}, stop, "lines", [])  # what fit() runs before the loop
        startup = time.perf_counter() - tic
        if trainer.parts.iters_per_epoch < total_steps(args):
            raise too_few_batches(len(trainer.parts.train_loader), args)
        weights = fingerprint(trainer.parts.model)
        trainer.train()
    steps = np.diff(stop.stamps[args.warmup:args.warmup + args.iters + 1])
    final = cpu_state(trainer.parts.model)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 2 x model size per run, not needed
    del trainer
    gc.collect()
    return {**rates(steps, args.batch_size), "startup_s": startup, "weights": weights, "final": final}


def detect_batches(cfg, device: torch.device, steps: int, args: argparse.Namespace):
    """The training set as detect builds it (detect.engine.build.build_data: same transforms, uint8
    images on CUDA), and the first `steps` batches detect's training sampler yields in epoch 0, as
    Trainer.train_epoch asks for them (set_epoch(0, start_batch=0)): lists of (index, seed, epoch) keys."""
    train_set, _, loader, _ = build_data(cfg, distributed.current(), device)
    if len(loader) < steps:
        raise too_few_batches(len(loader), args)
    loader.batch_sampler.set_epoch(0, start_batch=0)
    batches = list(loader.batch_sampler)[:steps]
    del loader  # never iterated: no workers were started
    return train_set, batches


def run_plain(args: argparse.Namespace, data: str) -> dict:
    cfg = compose_config(args, data)
    seed = int(cfg.runtime.seed)
    seed_everything(seed)  # python, numpy, torch and CUDA, as detect's build_components
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = total_steps(args)
    dataset, batches = detect_batches(cfg, device, steps, args)
    # The generator seeded as detect's for epoch 0 (seed + 0): it seeds the workers, and the loader draws
    # its base seed from it instead of from the global RNG, which the detector's samplers use.
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(seed))
    model = build_model(cfg, len(dataset.classes), device)  # the same model (and memory format) as detect's
    weights = fingerprint(model)
    initial = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    sch = cfg.schedule
    # detect's parameter groups (schedule.paramwise) and lr (schedule.auto_scale_lr), torch's optimizer step.
    optimizer = hydra.utils.instantiate(sch.optimizer)(
        parameter_groups(model, float(sch.lr), float(sch.weight_decay), sch.get("paramwise") or {}))
    scale_lr(cfg, optimizer, distributed.current())
    scheduler = build_lr_scheduler(optimizer, sch, updates_per_epoch(steps, 1))
    clip = sch.get("grad_clip")
    model.train()
    stamps = []
    for images, targets in loader:
        images, targets = move_to(images, targets, device)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        if device.type == "cuda" and len(stamps) in (args.warmup - 1, args.warmup + args.iters - 1):
            torch.cuda.synchronize()  # only at the window's ends: the steps in between stay asynchronous
        stamps.append(time.perf_counter())
    steps_s = np.diff(stamps[args.warmup - 1:args.warmup + args.iters])
    final = cpu_state(model)
    # How far training moved the parameters (relative L2 over all of them): the agreement is not that of idle weights.
    moved = math.sqrt(sum(float((final[name].double() - p.double()).norm()) ** 2 for name, p in initial.items())
                      / max(sum(float(p.double().norm()) ** 2 for p in initial.values()), 1e-300))
    del loader, model, optimizer, scheduler
    gc.collect()
    return {**rates(steps_s, args.batch_size), "weights": weights, "final": final, "moved": moved}


class ProfilerSteps(Hook):
    """Marks each training step's end for torch.profiler's schedule."""

    def __init__(self, profiler: torch.profiler.profile):
        self.profiler = profiler

    def after_step(self, trainer, losses) -> None:
        self.profiler.step()


def run_profile(args: argparse.Namespace, data: str, out: Path) -> Path:
    """--profile-steps steps of detect's trainer after --warmup untimed ones, under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile, schedule

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    cfg = compose_config(args, data, steps=args.warmup + args.profile_steps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # Step `warmup - 1` starts the profiler (its own start-up is not counted), the next N are recorded.
    profiler = profile(activities=activities, record_shapes=False,
                       schedule=schedule(wait=args.warmup - 1, warmup=1, active=args.profile_steps, repeat=1))
    run_dir = out / "profile_run"
    with StopRequest() as stop:
        trainer = prepare(cfg, RunDir(run_dir), {}, stop, "lines", [ProfilerSteps(profiler)])
        with profiler:
            trainer.train()
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    del trainer
    gc.collect()
    averages = profiler.key_averages()
    n = args.profile_steps
    lines = [f"torch.profiler over {n} training steps of detect's trainer (after {args.warmup} untimed), model "
             f"{args.model}, data {data}, {args.size} px, batch {args.batch_size}, {args.workers} workers, device "
             f"{device}, torch threads {args.threads}{', schedule.lr=0' if args.lr0 else ''}",
             "Times are totals over the profiled steps (the profiler adds its own cost per op). With loader workers, "
             "the main process's wait for a batch is enumerate(DataLoader)#...__next__.", "",
             "Top 25 ops by self CPU time:", averages.table(sort_by="self_cpu_time_total", row_limit=25)]
    if cuda:
        # self_device_time_total since torch 2.4 (self_cuda_time_total before)
        key = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
        lines += ["", "Top 25 ops by self CUDA time:", averages.table(sort_by=key, row_limit=25)]
    lines += ["", "Host synchronisation points (the host reads a value computed on the device and waits for it; on a "
              "CPU the same ops show where it would wait):",
              f"{'op':<28} {'calls':>7} {'per step':>9} {'self CPU ms':>12} {'CPU total ms':>13}"]
    found = {event.key: event for event in averages if event.key in SYNC_OPS}
    for name in SYNC_OPS:
        if name in found:
            event = found[name]
            lines.append(f"{name:<28} {event.count:>7} {event.count / n:>9.1f} "
                         f"{event.self_cpu_time_total / 1e3:>12.2f} {event.cpu_time_total / 1e3:>13.2f}")
    if not found:
        lines.append("(none of " + ", ".join(SYNC_OPS) + ")")
    path = out / "profile.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_weights(runs: dict[str, list[dict]], tolerance: float, amp: bool) -> bool:
    """Print the initial and final weights checks; True when both sides agree in every repeat."""
    weights = {round(x["weights"], 3) for side in runs.values() for x in side}
    initial_ok = len(weights) == 1
    print(f"\ninitial weights identical on both sides: {'yes' if initial_ok else f'NO {weights}'}")
    differences: dict[str, float] = {}
    for d, p in zip(runs["detect"], runs["plain"]):
        for name, value in compare_weights(d["final"], p["final"]).items():
            differences[name] = max(differences.get(name, 0.0), value)
    worst = max(differences.values(), default=0.0)
    final_ok = all(value <= tolerance for value in differences.values())  # NaN counts as a difference
    moved = max(x["moved"] for x in runs["plain"])
    where = f"over {len(differences)} tensors, {len(runs['plain'])} repeat(s); tolerance {tolerance:g}"
    if final_ok:
        print(f"final weights agree: yes (max relative difference {worst:.1e} {where}; training moved the "
              f"parameters by {moved:.1e}, relative L2 over all)")
    else:
        largest = sorted(differences.items(), key=lambda item: -item[1] if not math.isnan(item[1]) else -math.inf)
        names = ", ".join(f"{name} {value:.1e}" for name, value in largest[:5] if not value <= tolerance)
        print(f"final weights agree: NO (max relative difference {worst:.1e} {where}; largest: {names})")
        if amp:
            print("  (runtime.amp is on: detect trains in mixed precision, the plain side in fp32, so the weights "
                  "differ by design; this check does not set the exit code then)")
    return initial_ok and (final_ok or amp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1 (the first step starts the loader workers)")
    if args.iters < 1 or args.profile_steps < 0:
        raise SystemExit("--iters must be >= 1 and --profile-steps >= 0")
    data = args.data
    if data == "medical_waste" and not (MEDICAL_WASTE / "train.json").is_file():
        print(f"{MEDICAL_WASTE} is absent: using the generated demo data instead")
        data = "demo"
    cfg = compose_config(args, data)
    if int(cfg.schedule.get("accumulate", 1)) != 1:
        raise SystemExit("schedule.accumulate > 1 is not mirrored by the plain loop: leave it at 1 here")
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    mode = ("lr 0 on both sides (schedule.lr=0: the weights never move)" if args.lr0 else
            "same schedule (the plain side gets detect's lr schedule, grad clipping and batches)")
    print(f"model {args.model}, data {data}, {args.size} px, batch {args.batch_size}, {args.workers} workers, "
          f"device {args.device}, {args.warmup} warm-up + {args.iters} timed + 1 steps, {args.repeats} repeats per "
          f"side; mode: {mode}")
    out = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    with log_to_file(out / "train.log"):
        return benchmark(args, data, out, cfg)


@contextlib.contextmanager
def log_to_file(path: Path):
    """The trainer's log into one file (Hydra would send it to each run dir's train.log), so the
    console shows only the benchmark's lines."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def benchmark(args: argparse.Namespace, data: str, out: Path, cfg) -> int:
    """The alternating runs, the weights checks, the figures and the profile; the exit code."""
    prepare_demo_data(cfg.data)  # data=demo: generated on first use, as detect.train does
    amp = amp_dtype(cfg.runtime.get("amp"), torch.device(args.device)) is not None
    runs: dict[str, list[dict]] = {"detect": [], "plain": []}
    for r in range(args.repeats):
        for side in (("detect", "plain") if r % 2 == 0 else ("plain", "detect")):  # alternate who goes first
            result = run_detect(args, data, out / f"detect_{r}") if side == "detect" else run_plain(args, data)
            runs[side].append(result)
            print(f"repeat {r + 1} {side:>6}: {result['img_s']:.2f} img/s over the window, "
                  f"{result['img_s_median_step']:.2f} img/s from the median step, 1-min load {result['load']:.1f}"
                  + (f", start-up {result['startup_s']:.1f} s" if "startup_s" in result else ""), flush=True)
    agree = report_weights(runs, args.tolerance, amp)
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
    del runs
    gc.collect()
    if args.profile_steps:
        print(f"profile: {run_profile(args, data, out)}", flush=True)
    print(f"logs: {out}")
    if not agree:
        print("The two sides did not train the same weights: the ratio above compares different work.")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
