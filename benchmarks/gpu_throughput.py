"""GPU throughput: how fast detect trains and predicts Faster and Cascade R-CNN R50-FPN at 1024 px with its
GPU switches, against the plain torchvision loop, in one command (issue 22, part 3).

The one command for the GPU table (one H100/H200; about 6-8 minutes by estimate, most of it the two models'
torch.compile warm-ups; --max-minutes, default 8, skips what would not fit, see below):

    .venv/bin/python benchmarks/gpu_throughput.py
    .venv/bin/python benchmarks/gpu_throughput.py --nproc 1 2 4 8     # + multi-GPU scaling (torchrun)
    .venv/bin/python benchmarks/gpu_throughput.py --configs bf16@16 --extra runtime.prefetch_factor=4  # one lever

A CPU dry run of the same code paths (tests/test_gpu_throughput_bench.py runs it; about 15 s on 2 cores):

    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --data demo --size 128 \\
        --models faster_rcnn_r18_demo --batches 2 --configs fp32 bf16 --iters 2 --warmup 1 --threads 2 --workers 0

Data: the 640x640 JPEGs of ../shared/data/medical_waste (--data medical_waste, the default; the generated demo
set when absent, or --data demo), resized to --size (1024: data.min_size = data.max_size), R50-FPN with random
init (model.backbone.weights=null; --pretrained keeps the ImageNet weights, which need a download) and stage 1
frozen (the model configs' default), loader workers as runtime.workers=auto (CUDA: the cores - 1, at most 8;
--workers N to set). Each run trains on a json written under the results folder that lists the training images
with boxes (those of the commonest aspect-ratio group) cycled to exactly steps x batch images: every batch is
full (a short batch would raise img/s, and recompile a compiled box head) and an epoch has the steps a run
needs at any batch and number of GPUs.

Sections, in the order they run (each configuration that fails, e.g. a compile error or an out-of-memory, is a
row `failed: <first line of the error>`, and the sweep goes on; each prints its elapsed time):

1. FLOPs: of one training step (forward + backward, eager fp32, --flop-batch images of the training set at
   --size) and of one evaluation forward (one image), per image, counted once per model with
   torch.utils.flop_counter.FlopCounterMode: the matrix ops (convolutions, matmuls); torchvision's RoIAlign
   and NMS are not counted, so the figures, and the MFU from them, read slightly low.
2. Training: per model, first the plain torchvision loop (train_overhead.py's fair plain side, in its
   default same-schedule mode: a DataLoader over detect's batches, the same initial weights, parameter groups
   and lr schedule; fp32, --plain-batch images, 4 by default), then detect's real trainer (detect.engine.fit's
   `prepare(...)` + `trainer.train()`, as `python -m detect.train` runs it) for each --configs entry and batch:
       fp32           runtime.amp=false                                   batch 4
       bf16           runtime.amp=bf16 runtime.channels_last=true         batch 4, 8, 16
       bf16_compile   bf16 + runtime.cudnn_benchmark=true runtime.compile=true data.pad_to=<size>   batch 16
       fp16           runtime.amp=fp16 runtime.channels_last=true         (on request)
   `--configs bf16@8,16 fp32` picks configurations and batches; `--batches 2` gives every entry without
   `@` those batches; `--define NAME="override override ..."` adds a configuration of Hydra overrides.
   All runs: runtime.fused_optimizer=auto (the fused SGD step on CUDA, detect's default, on its fp32 row too),
   pinned memory on CUDA, schedule.auto_scale_lr.enable=true (the 1x recipe's lr 0.02 is for a batch of 16:
   batch 4 trains at 0.005, batch 16 at 0.02, so a larger batch keeps the recipe rather than its lr),
   data.val_ann=null (no evaluation), runtime.profile.enabled=false, runtime.plots.enabled=false, one epoch
   of --warmup untimed steps (--compile-warmup for a compiled configuration: its first steps compile), --iters
   timed steps and one more; the trainer's checkpoint hook is left out (it writes only after the epoch,
   outside the timed window: 0.6 GB per R50 run saved). The clock is read by the trainer's own stop check
   once per step (train_overhead.ClockedStop): the loss values are copied to the host just before, so each
   stamp follows the GPU's work of that step's forward pass.
3. Inference: per model, an eval-mode forward under torch.no_grad over --infer-iters batches of the same
   random --size x --size images (after --warmup, or --compile-warmup, untimed ones), torch.cuda.synchronize
   around each batch: plain (fp32, batch --plain-batch) against each --infer-configs entry at --infer-batch
   (8: runtime.eval_batch_size=auto at batch 4) built as detect builds it: channels_last, the box regression
   layers in fp32 under autocast (detect.engine.gpu_settings.box_regression_in_fp32), torch.compile of the
   same parts. Random init and random images: the detections kept (score > 0.05) and so the NMS work differ
   from a trained model's; both sides see the same.
4. Multi-GPU (--nproc N ..., off by default): for each N <= the GPUs here, `python -m torch.distributed.run
   --standalone --nproc_per_node=N -m detect.train` with --ddp-config at --ddp-batch per GPU (nccl, chosen by
   detect on CUDA; on --device cpu gloo, with one thread per process), runtime.log_interval=5, --ddp-warmup +
   --ddp-iters steps; img/s per GPU = batch / median(sec_per_iter) of the train records of metrics.jsonl after
   the warm-up steps (each record: the mean over its 5 steps, loader wait included).

Columns:
- img/s: images per second over the timed window (loader wait included, as a user sees it); img/s median:
  batch / the median step (or batch) time, robust to a slow step.
- vs plain: img/s / the plain side's img/s of the same model (training: the plain loop, fp32, --plain-batch 4;
  inference: the plain fp32 forward at --plain-batch 4). The fp32 row at batch 4 is detect's own overhead (or gain).
- MFU: FLOPs per image (section 1) x img/s / (--peak-tflops x 1e12). The peak is printed in the heading:
  989 TFLOP/s by default, an H100/H200 SXM's dense bf16 peak; fp32 rows are compared to the same bf16 peak.
- peak MiB: torch.cuda.max_memory_allocated over the job (the training epoch; all inference batches, warm-up
  included), after a reset; null on CPU.
- data wait: the share of the timed window the trainer waited for the loader (trainer.data_wait, as the
  data_time of metrics.jsonl); a data-bound configuration shows itself here.
- start-up s: composing the config, building data sets, loaders, model and optimizer (imports excluded).
- status: ok, `failed: <Error>: <first line>` or `skipped: ...` (--max-minutes).

--max-minutes (default 8): before each configuration, one that would end past this many minutes from the
start, by a rough estimate (a compiled training run about 2 min, a compiled inference 1 min, others 15 s, a
torchrun launch 1 min), is skipped and reported as skipped; a configuration under way is never cut.

Output: the machine line, one markdown table per section, results.md and results.json (every figure, the
configurations' overrides, errors in full; rewritten after every job, so a run stopped from outside keeps
what it measured) under outputs/benchmarks/gpu_throughput/<time>/ (--out changes the parent), with
train.log (detect's log of every run), the runs' folders (metrics.jsonl, summary.json; no checkpoints)
and the training jsons.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode
from train_overhead import DEMO, MEDICAL_WASTE, REPO, ClockedStop, compose_config, log_to_file, rates, run_plain

from detect.data.build import build_dataset
from detect.data.coco import collate
from detect.data.demo import prepare_demo_data
from detect.data.samplers import aspect_ratio_groups
from detect.engine import distributed
from detect.engine.build import build_model, loader_workers
from detect.engine.compile import compile_errors, compile_model
from detect.engine.cost import flops_per_image
from detect.engine.fit import prepare
from detect.engine.gpu_settings import amp_dtype, box_regression_in_fp32, peak_memory_mb
from detect.engine.hooks.base import Hook
from detect.engine.hooks.checkpoints import CheckpointHook
from detect.engine.inference import move_to
from detect.engine.reproducibility import seed_everything
from detect.run import RunDir

# Hydra overrides of each configuration ({size} becomes --size), and its batches when --configs and
# --batches name none.
SWITCHES = {
    "fp32": ["runtime.amp=false"],
    "bf16": ["runtime.amp=bf16", "runtime.channels_last=true"],
    "fp16": ["runtime.amp=fp16", "runtime.channels_last=true"],
    "bf16_compile": ["runtime.amp=bf16", "runtime.channels_last=true", "runtime.cudnn_benchmark=true",
                     "runtime.compile=true", "data.pad_to={size}"],
}
DEFAULT_BATCHES = {"fp32": [4], "bf16": [4, 8, 16], "fp16": [4], "bf16_compile": [16]}
# Rough seconds per job on an H100 at 1024 px, for --max-minutes only.
ESTIMATE_S = {"eager": 15, "compiled_train": 120, "compiled_infer": 60, "ddp": 60}
CUDNN_BENCHMARK = torch.backends.cudnn.benchmark  # detect sets it process-wide: reset before each job


@dataclass
class Config:
    name: str
    overrides: list[str]
    batches: list[int]

    @property
    def compiled(self) -> bool:
        for override in self.overrides:
            key, _, value = override.partition("=")
            if key.lstrip("+~") == "runtime.compile":
                return value.strip().lower() not in ("false", "null", "none", "")
        return False

    def resolved(self, size: int) -> list[str]:
        """The overrides with {size} replaced."""
        return [override.replace("{size}", str(size)) for override in self.overrides]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["faster_rcnn", "cascade_rcnn"], help="conf/model options")
    parser.add_argument("--configs", nargs="+", default=["fp32", "bf16", "bf16_compile"],
                        help="training configurations, NAME or NAME@B1,B2 (batches); names: "
                             f"{', '.join(SWITCHES)} and those of --define")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batches of every --configs entry without @ (default: fp32 4; bf16 4 8 16; "
                             "bf16_compile 16; fp16 4; others 4)")
    parser.add_argument("--define", action="append", default=[], metavar='NAME="OVERRIDE ..."',
                        help="a configuration of Hydra overrides, separated by spaces ({size} becomes --size)")
    parser.add_argument("--infer-configs", nargs="*", default=None,
                        help="inference configurations (names as --configs, no @), beside the plain fp32 forward "
                             "(default: the --configs names but fp32; none: no inference section)")
    parser.add_argument("--data", choices=("medical_waste", "demo"), default="medical_waste",
                        help="medical_waste (../shared/data; falls back to demo when absent) or the generated demo set")
    parser.add_argument("--size", type=int, default=1024, help="data.min_size = data.max_size (and data.pad_to)")
    parser.add_argument("--iters", type=int, default=20, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers, allocator, cuDNN)")
    parser.add_argument("--compile-warmup", type=int, default=8,
                        help="untimed steps first for a compiled configuration (the first ones compile)")
    parser.add_argument("--plain-batch", type=int, default=None,
                        help="batch of the plain training loop and of the plain inference (default: the "
                             "smallest training batch, 4)")
    parser.add_argument("--infer-batch", type=int, default=8, help="inference batch of the --infer-configs")
    parser.add_argument("--infer-iters", type=int, default=20, help="timed inference batches")
    parser.add_argument("--flop-batch", type=int, default=2, help="images of the training step whose FLOPs are counted")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the device's peak for MFU, TFLOP/s (989: H100/H200 SXM dense bf16)")
    parser.add_argument("--nproc", nargs="*", type=int, default=[],
                        help="multi-GPU: processes per torchrun launch (e.g. 1 2 4 8; those above the GPUs here are "
                             "skipped); none by default")
    parser.add_argument("--ddp-model", default=None,
                        help="the model of the multi-GPU runs (default: the first --models)")
    parser.add_argument("--ddp-config", default="bf16", help="the configuration of the multi-GPU runs")
    parser.add_argument("--ddp-batch", type=int, default=8, help="batch per GPU of the multi-GPU runs")
    parser.add_argument("--ddp-warmup", type=int, default=10, help="steps left out of the multi-GPU figures")
    parser.add_argument("--ddp-iters", type=int, default=30, help="steps measured in each multi-GPU run")
    parser.add_argument("--ddp-timeout", type=int, default=420, help="seconds a torchrun launch may take")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (runtime.threads)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: runtime.workers=auto: CUDA: cores - 1, at most 8; CPU: 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrained", action="store_true",
                        help="keep the backbone's ImageNet weights (a download); default: random init")
    parser.add_argument("--max-minutes", type=float, default=8.0,
                        help="skip the configurations that would end past this many minutes (rough estimates)")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run, both sides")
    parser.add_argument("--out", default=str(REPO / "outputs" / "benchmarks" / "gpu_throughput"))
    args = parser.parse_args(argv)
    for name, value in (("--iters", args.iters), ("--warmup", args.warmup), ("--compile-warmup", args.compile_warmup),
                        ("--infer-batch", args.infer_batch), ("--infer-iters", args.infer_iters),
                        ("--flop-batch", args.flop_batch), ("--ddp-batch", args.ddp_batch),
                        ("--ddp-iters", args.ddp_iters)):
        if value < 1:
            parser.error(f"{name} must be >= 1 (the first step starts the loader workers)")
    if args.ddp_warmup < 0 or any(n < 1 for n in args.nproc):
        parser.error("--ddp-warmup must be >= 0 and --nproc values >= 1")
    args.switches = dict(SWITCHES)
    for definition in args.define:
        name, _, overrides = definition.partition("=")
        if not name or not overrides or "@" in name:
            parser.error(f'--define {definition!r}: write NAME="override override ..."')
        args.switches[name] = overrides.split()
    try:
        args.plan = plan(args.configs, args.batches, args.switches)
    except ValueError as err:
        parser.error(str(err))
    if args.infer_configs is None:
        args.infer_configs = list(dict.fromkeys(c.name for c in args.plan if c.name != "fp32"))
    for name in [*args.infer_configs, args.ddp_config]:
        if name not in args.switches:
            parser.error(f"configuration {name!r} is not one of {', '.join(args.switches)}")
    if args.plain_batch is None:
        args.plain_batch = min(b for config in args.plan for b in config.batches)
    return args


def plan(entries: list[str], batches: list[int] | None, switches: dict[str, list[str]]) -> list[Config]:
    """--configs entries -> Configs with their batches."""
    configs = []
    for entry in entries:
        name, _, given = entry.partition("@")
        if name not in switches:
            raise ValueError(f"--configs {entry}: {name!r} is not one of {', '.join(switches)} (add it with --define)")
        try:
            chosen = [int(b) for b in given.split(",")] if given else (batches or DEFAULT_BATCHES.get(name, [4]))
        except ValueError:
            raise ValueError(f"--configs {entry}: write NAME@B1,B2 with whole batch sizes") from None
        if any(b < 1 for b in chosen):
            raise ValueError(f"--configs {entry}: batches must be >= 1")
        configs.append(Config(name, list(switches[name]), list(chosen)))
    return configs


# ---------------------------------------------------------------------------------------------- helpers
class Clock:
    """The --max-minutes guard."""

    def __init__(self, minutes: float):
        self.start, self.limit = time.perf_counter(), minutes * 60

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def skip(self, estimate_s: float) -> str | None:
        """Why a job of about `estimate_s` seconds is skipped now, or None."""
        if self.elapsed() + estimate_s <= self.limit:
            return None
        return (f"skipped: --max-minutes {self.limit / 60:g} (at {self.elapsed() / 60:.1f} min; this takes about "
                f"{estimate_s / 60:.1f} min)")

    def stamp(self) -> str:
        return f"[{self.elapsed() / 60:5.1f} min]"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()


def error_in_output(text: str) -> str:
    """The first error line a failed torchrun launch printed (a child's, not torchrun's summary)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"(Error|Exception)\b", line) and "ChildFailedError" not in line and "elastic" not in line:
            return line
    return lines[-1] if lines else "no output"


def cleanup(device: torch.device) -> None:
    """Between jobs: free the last one's memory and compiled code, and detect's process-wide cuDNN setting."""
    gc.collect()
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    try:
        if "torch._dynamo" in sys.modules:
            torch._dynamo.reset()  # compiled graphs of the last model (recompile limits count per code object)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
    except Exception as err:  # a broken CUDA context: the next jobs fail and say so, the tables still print
        print(f"cleanup after the job failed: {first_line(err)}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_args(args: argparse.Namespace, model: str, batch: int, warmup: int, iters: int,
             extra: list[str]) -> argparse.Namespace:
    """What train_overhead's compose_config, run_plain and friends read."""
    return argparse.Namespace(model=model, size=args.size, batch_size=batch, threads=args.threads,
                              workers=args.loader_workers, device=args.device, lr0=False, extra=list(extra),
                              warmup=warmup, iters=iters)


def data_overrides(data: str, size: int) -> list[str]:
    """As compose_config's, for the torchrun command line."""
    where = (["data=coco", f"data.root={MEDICAL_WASTE}"] if data == "medical_waste"
             else ["data=demo", f"data.root={DEMO}"])
    return [*where, f"data.min_size={size}", f"data.max_size={size}"]


class TrainSets:
    """Training jsons of exactly n images: the images with boxes of the commonest aspect-ratio group,
    cycled (new image and annotation ids), so every batch is full and an epoch has the steps a run takes."""

    def __init__(self, cfg, folder: Path):
        dataset = build_dataset(cfg.data, "train", train=True)  # detect's filtering: images with usable boxes
        groups = aspect_ratio_groups(dataset.aspect_ratios())
        common = max(set(groups), key=groups.count)
        self.pool = [info for info, group in zip(dataset.images, groups) if group == common]
        self.annotations = dataset.annotations
        self.categories = dataset.coco.get("categories", [])
        self.classes = len(dataset.classes)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, n_images: int) -> Path:
        path = self.folder / f"train_{n_images}.json"
        if not path.is_file():
            images, annotations = [], []
            for i in range(n_images):
                info = self.pool[i % len(self.pool)]
                images.append({**info, "id": i + 1})
                for ann in self.annotations.get(info["id"], []):
                    annotations.append({**ann, "id": len(annotations) + 1, "image_id": i + 1})
            path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": self.categories}))
        return path


def random_init(args: argparse.Namespace, data: str, model: str) -> list[str]:
    """model.backbone.weights=null where the model names pretrained weights (unless --pretrained)."""
    cfg = compose_config(run_args(args, model, 1, 1, 1, args.extra), data)
    weights = OmegaConf.select(cfg, "model.backbone.weights", default=None)
    return ["model.backbone.weights=null"] if weights is not None and not args.pretrained else []


# ---------------------------------------------------------------------------------------------- the jobs
def count_flops(args: argparse.Namespace, data: str, model: str, common: list[str]) -> dict:
    """FLOPs per image of one eager fp32 training step (forward + backward) and of one evaluation forward."""
    cfg = compose_config(run_args(args, model, args.flop_batch, 1, 1, [*common, *SWITCHES["fp32"]]), data)
    device = torch.device(args.device)
    seed_everything(int(cfg.runtime.seed))
    dataset = build_dataset(cfg.data, "train", train=True, float_output=device.type != "cuda")
    net = build_model(cfg, len(dataset.classes), device)
    net.train()
    images, targets = collate([dataset[(i % len(dataset), i, 0)] for i in range(args.flop_batch)])
    images, targets = move_to(images, targets, device)
    with FlopCounterMode(display=False) as counter:
        sum(net(images, targets).values()).backward()
    train = counter.get_total_flops() / args.flop_batch
    evaluation = flops_per_image(net, args.size, args.size, device)
    del net
    return {"train_flops_per_image": float(train), "eval_flops_per_image": float(evaluation)}


class StepWaits(Hook):
    """The loader wait of every step (trainer.data_wait, metrics.jsonl's data_time)."""

    def __init__(self):
        self.waits: list[float] = []

    def after_step(self, trainer, losses) -> None:
        self.waits.append(trainer.data_wait)


def run_detect(args: argparse.Namespace, data: str, model: str, overrides: list[str], batch: int, warmup: int,
               run_dir: Path) -> dict:
    """detect's trainer as train_overhead.run_detect runs it, plus the loader wait and the GPU memory peak."""
    tic = time.perf_counter()
    ns = run_args(args, model, batch, warmup, args.iters, overrides)
    cfg = compose_config(ns, data)
    device = torch.device(args.device)
    waits = StepWaits()
    steps = warmup + args.iters + 1
    with ClockedStop() as stop:
        trainer = prepare(cfg, RunDir(run_dir), {}, stop, "lines", [waits])  # what fit() runs before the loop
        # The epoch-end checkpoints come after the timed window: not written (0.6 GB per R50 run).
        trainer.hooks = [hook for hook in trainer.hooks if not isinstance(hook, CheckpointHook)]
        startup = time.perf_counter() - tic
        if trainer.parts.iters_per_epoch < steps:
            raise RuntimeError(f"the epoch has {trainer.parts.iters_per_epoch} steps, fewer than the {steps} needed")
        train_images = len(trainer.parts.train_set)
        trainer.train()
    if len(stop.stamps) < steps or len(waits.waits) < steps:
        raise RuntimeError(f"{len(stop.stamps)} clock stamps and {len(waits.waits)} steps for {steps} steps")
    window = np.diff(stop.stamps[warmup:warmup + args.iters + 1])
    # Interval k of the window runs from step warmup + k's stamp to the next step's: it holds that step's wait.
    wait = float(sum(waits.waits[warmup + 1:warmup + args.iters + 1]))
    peak = peak_memory_mb(device)
    del trainer
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return {**rates(window, batch), "data_share": wait / float(window.sum()), "peak_mem_mb": peak,
            "startup_s": startup, "train_images": train_images}


def run_plain_side(args: argparse.Namespace, data: str, model: str, overrides: list[str], batch: int) -> dict:
    """train_overhead's fair plain loop (same weights, batches and lr schedule), fp32."""
    device = torch.device(args.device)
    result = run_plain(run_args(args, model, batch, args.warmup, args.iters, overrides), data)
    return {"img_s": result["img_s"], "img_s_median_step": result["img_s_median_step"], "load": result["load"],
            "peak_mem_mb": peak_memory_mb(device)}


def run_inference(args: argparse.Namespace, data: str, model: str, overrides: list[str], batch: int, warmup: int,
                  classes: int) -> dict:
    """Eval-mode forwards of random --size images, built as detect builds its model for evaluation."""
    cfg = compose_config(run_args(args, model, batch, warmup, args.infer_iters, overrides), data)
    device = torch.device(args.device)
    seed_everything(int(cfg.runtime.seed))
    net = build_model(cfg, classes, device)  # channels_last, cudnn.benchmark and data.pad_to as detect's
    dtype = amp_dtype(cfg.runtime.get("amp"), device)
    if dtype is not None:
        box_regression_in_fp32(net)
    compile_model(net, cfg.runtime.get("compile", False), device)
    net.eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=generator).to(device) for _ in range(batch)]
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), \
            compile_errors(model):
        for _ in range(warmup + args.infer_iters):
            sync(device)
            tic = time.perf_counter()
            net(images)
            sync(device)
            times.append(time.perf_counter() - tic)
    window = np.array(times[warmup:])
    peak = peak_memory_mb(device)
    del net, images
    return {**rates(window, batch), "peak_mem_mb": peak}


def run_ddp(args: argparse.Namespace, data: str, model: str, n: int, ann: Path, common: list[str],
            out: Path) -> dict:
    """One torchrun launch of detect.train with n processes; img/s per process from metrics.jsonl."""
    cuda = torch.device(args.device).type == "cuda"
    batch, steps, interval = args.ddp_batch, args.ddp_warmup + args.ddp_iters, 5
    run_dir = out / "runs" / f"ddp_{model}_{n}"
    switches = Config(args.ddp_config, args.switches[args.ddp_config], []).resolved(args.size)
    overrides = [f"model={model}", *data_overrides(data, args.size), f"data.batch_size={batch}", *common,
                 *switches, f"data.train_ann={ann}", f"runtime.max_iters_per_epoch={steps}", "schedule.epochs=1",
                 "data.val_ann=null", f"runtime.log_interval={interval}", "runtime.progress=lines",
                 f"runtime.device={'cuda' if cuda else 'cpu'}",
                 f"runtime.workers={'auto' if args.workers is None else args.workers}",
                 *([] if cuda else ["runtime.threads=1"]), f"hydra.run.dir={run_dir}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "detect.train", *overrides]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env["OMP_NUM_THREADS"] = "1"
    tic = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.ddp_timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"torchrun with {n} processes ran past --ddp-timeout {args.ddp_timeout} s") from err
    seconds = time.perf_counter() - tic
    log_file = out / "runs" / f"ddp_{model}_{n}.log"
    log_file.write_text(f"$ {' '.join(command)}\n\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"exit code {proc.returncode}: {error_in_output(proc.stderr + proc.stdout)} "
                           f"(full output: {log_file})")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # Each record averages the steps since the one before: keep those whose steps all follow the warm-up.
    train = [r for r in records if r.get("mode") == "train" and r["iter"] - interval >= args.ddp_warmup]
    if not train:
        raise RuntimeError(f"no train record after {args.ddp_warmup} warm-up steps in {run_dir / 'metrics.jsonl'}")
    sec = statistics.median(r["sec_per_iter"] for r in train)
    memory = [r["gpu_mem_peak_mb"] for r in train if r.get("gpu_mem_peak_mb") is not None]
    per_gpu = batch / sec
    return {"img_s_per_gpu": per_gpu, "img_s_total": per_gpu * n, "records": len(train),
            "data_share": statistics.mean(r["data_time"] for r in train) / statistics.mean(
                r["sec_per_iter"] for r in train),
            "peak_mem_mb": max(memory) if memory else None, "launch_s": seconds, "run_dir": str(run_dir)}


# ---------------------------------------------------------------------------------------------- tables
def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{suffix}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def flops_table(results: dict) -> str:
    rows = [[model, fmt(r.get("train_flops_per_image", 0) / 1e9 if r["status"] == "ok" else None),
             fmt(r.get("eval_flops_per_image", 0) / 1e9 if r["status"] == "ok" else None), r["status"]]
            for model, r in results["flops"].items()]
    return table(["model", "train step GFLOP/img (fwd+bwd)", "eval forward GFLOP/img", "status"], rows)


def speed_rows(rows: list[dict], train: bool) -> list[list[str]]:
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        cells = [r["model"], r["config"], str(r["batch"]), fmt(r.get("img_s") if ok else None),
                 fmt(r.get("img_s_median_step") if ok else None), fmt(r.get("vs_plain"), 2, "x"),
                 f"{100 * r['mfu']:.3g}%" if r.get("mfu") is not None else "-", fmt(r.get("peak_mem_mb"), 0)]
        if train:
            cells += [fmt(100 * r["data_share"] if r.get("data_share") is not None else None, 1, "%"),
                      fmt(r.get("startup_s"))]
        out.append(cells + [r["status"].replace("|", "/")])
    return out


def training_table(results: dict, peak: float) -> str:
    headers = ["model", "config", "batch", "img/s", "img/s median step", "vs plain", f"MFU ({peak:g} TFLOP/s)",
               "peak MiB", "data wait", "start-up s", "status"]
    return table(headers, speed_rows(results["training"], True))


def inference_table(results: dict, peak: float) -> str:
    headers = ["model", "config", "batch", "img/s", "img/s median batch", "vs plain", f"MFU ({peak:g} TFLOP/s)",
               "peak MiB", "status"]
    return table(headers, speed_rows(results["inference"], False))


def ddp_table(results: dict) -> str:
    rows = []
    for r in results["ddp"]:
        ok = r["status"] == "ok"
        rows.append([r["model"], str(r["nproc"]), str(r["batch"]), fmt(r.get("img_s_per_gpu") if ok else None),
                     fmt(r.get("img_s_total") if ok else None), fmt(r.get("scaling"), 2),
                     fmt(r.get("peak_mem_mb"), 0),
                     fmt(100 * r["data_share"] if r.get("data_share") is not None else None, 1, "%"),
                     r["status"].replace("|", "/")])
    return table(["model", "GPUs", "batch per GPU", "img/s per GPU", "img/s total", "scaling (per-GPU vs 1)",
                  "peak MiB", "data wait", "status"], rows)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data
    if data == "medical_waste" and not (MEDICAL_WASTE / "train.json").is_file():
        print(f"{MEDICAL_WASTE} is absent: using the generated demo data instead")
        data = "demo"
    device = torch.device(args.device)
    args.loader_workers = args.workers if args.workers is not None else loader_workers("auto", device,
                                                                                        distributed.current())
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve() / time.strftime("%Y-%m-%d_%H-%M-%S")  # absolute: its jsons are read under data.root
    out.mkdir(parents=True)
    with log_to_file(out / "train.log"):
        return benchmark(args, data, out)


def benchmark(args: argparse.Namespace, data: str, out: Path) -> int:
    device = torch.device(args.device)
    clock = Clock(args.max_minutes)
    if device.type == "cuda":
        torch.cuda.init()  # the allocator's statistics (reset before each job) exist from here on
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(machine_line(args.threads))
    print(f"device {device} ({device_name}), data {data}, {args.size} px, {args.loader_workers} loader workers, "
          f"{args.warmup} warm-up ({args.compile_warmup} compiled) + {args.iters} timed + 1 steps, "
          f"{'pretrained' if args.pretrained else 'random-init'} backbones; results in {out}", flush=True)
    settings = {k: ([vars(c) for c in v] if k == "plan" else v) for k, v in vars(args).items()}
    results: dict = {"machine": machine_line(args.threads), "device": device_name, "data": data, "args": settings,
                     "peak_tflops": args.peak_tflops, "flops": {}, "training": [], "inference": [], "ddp": [],
                     "sections_s": {}}
    base = compose_config(run_args(args, args.models[0], 1, 1, 1, args.extra), data)
    prepare_demo_data(base.data)  # data=demo: generated on first use, as detect.train does
    sets = TrainSets(base, out / "data")
    common: dict[str, list[str]] = {}
    for model in dict.fromkeys([*args.models, args.ddp_model or args.models[0]]):
        try:
            common[model] = ["schedule.auto_scale_lr.enable=true", "runtime.profile.enabled=false",
                             "runtime.plots.enabled=false", *random_init(args, data, model), *args.extra]
        except Exception as err:  # e.g. a model name conf/model does not have: its rows say so
            common[model] = [*args.extra]
            print(f"{model}: {first_line(err)}")

    def with_data(model: str, overrides: list[str], n_images: int) -> list[str]:
        """Every run's overrides: the common ones, the configuration's, and a training json of n_images."""
        return [*common[model], *overrides, f"data.train_ann={sets.path(n_images)}"]

    def job(rows: list[dict], row: dict, estimate_s: float, work, *work_args) -> None:
        """Run one configuration, `work(*work_args)`, or say why not; append its row."""
        reason = clock.skip(estimate_s)
        if reason is None:
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row.update(work(*work_args))
                row["status"] = "ok"
            except (Exception, SystemExit) as err:  # a failed configuration is a row of the table; the sweep goes on
                row.update(status=f"failed: {first_line(err)[:200]}", error=f"{type(err).__name__}: {err}")
            finally:
                cleanup(device)
        else:
            row["status"] = reason
        rows.append(row)
        results["elapsed_s"] = clock.elapsed()
        derive(results, args.peak_tflops)
        write_results(args, results, out)  # after every job: a run stopped from outside keeps what it measured
        what = " ".join(str(row[k]) for k in ("model", "config", "batch", "nproc") if k in row)
        figure = (f"{row['img_s']:.2f} img/s, " if "img_s" in row else
                  f"{row['img_s_per_gpu']:.2f} img/s per GPU, " if "img_s_per_gpu" in row else "")
        print(f"{clock.stamp()} {what}: {figure if row['status'] == 'ok' else ''}{row['status']}", flush=True)

    def section(name: str, title: str, body) -> None:
        tic = time.perf_counter()
        print(f"\n## {title}", flush=True)
        body()
        results["sections_s"][name] = time.perf_counter() - tic
        print(f"({name}: {results['sections_s'][name]:.1f} s)", flush=True)

    def flops() -> None:
        """1. FLOPs per image of each model."""
        for model in args.models:
            row: dict = {"model": model}
            results["flops"][model] = row
            job([], row, ESTIMATE_S["eager"], count_flops, args, data, model, with_data(model, [], args.flop_batch))
        print(flops_table(results))

    def training() -> None:
        """2. Per model: the plain loop, then detect per configuration and batch."""
        for model in args.models:
            plain: dict = {"model": model, "config": "plain (torchvision loop, fp32)", "batch": args.plain_batch,
                           "warmup": args.warmup, "overrides": []}
            n_images = (args.warmup + args.iters + 1) * args.plain_batch
            job(results["training"], plain, ESTIMATE_S["eager"], run_plain_side, args, data, model,
                with_data(model, SWITCHES["fp32"], n_images), args.plain_batch)
            for config in args.plan:
                warmup = args.compile_warmup if config.compiled else args.warmup
                for batch in config.batches:
                    row = {"model": model, "config": config.name, "batch": batch, "warmup": warmup,
                           "overrides": config.resolved(args.size)}
                    overrides = with_data(model, config.resolved(args.size), (warmup + args.iters + 1) * batch)
                    run_dir = out / "runs" / f"{len(results['training']):02d}_{model}_{config.name}_b{batch}"
                    job(results["training"], row, ESTIMATE_S["compiled_train" if config.compiled else "eager"],
                        run_detect, args, data, model, overrides, batch, warmup, run_dir)
        print(training_table(results, args.peak_tflops))
        print(f"vs plain: img/s over the plain loop's (fp32, batch {args.plain_batch}) of the same model; MFU: "
              f"train-step FLOPs per image x img/s / {args.peak_tflops:g} TFLOP/s (fp32 rows against the same bf16 "
              "peak); data wait: share of the timed window spent waiting for the loader")

    def inference() -> None:
        """3. Per model: the plain fp32 forward, then each --infer-configs entry."""
        for model in args.models:
            plain = {"model": model, "config": "plain (fp32)", "batch": args.plain_batch, "warmup": args.warmup,
                     "overrides": []}
            job(results["inference"], plain, ESTIMATE_S["eager"], run_inference, args, data, model,
                [*common[model], *SWITCHES["fp32"]], args.plain_batch, args.warmup, sets.classes)
            for name in args.infer_configs:
                config = Config(name, args.switches[name], [args.infer_batch])
                warmup = args.compile_warmup if config.compiled else args.warmup
                overrides = config.resolved(args.size)
                row = {"model": model, "config": name, "batch": args.infer_batch, "warmup": warmup,
                       "overrides": overrides}
                job(results["inference"], row, ESTIMATE_S["compiled_infer" if config.compiled else "eager"],
                    run_inference, args, data, model, [*common[model], *overrides], args.infer_batch, warmup,
                    sets.classes)
        print(inference_table(results, args.peak_tflops))
        print(f"eval-mode forwards of the same random {args.size}x{args.size} images under torch.no_grad, "
              f"synchronised per batch; vs plain: over the fp32 forward at batch {args.plain_batch}; MFU from the "
              "eval-forward FLOPs")

    def multi_gpu() -> None:
        """4. torchrun launches of detect.train with 1, 2, ... processes."""
        model = args.ddp_model or args.models[0]
        cuda = device.type == "cuda"
        available = torch.cuda.device_count() if cuda else (os.cpu_count() or 1)
        for n in args.nproc:
            row = {"model": model, "config": args.ddp_config, "nproc": n, "batch": args.ddp_batch}
            if n > available:
                row["status"] = f"skipped: {n} processes, {available} {'GPUs' if cuda else 'cores'} here"
                results["ddp"].append(row)
                print(f"{clock.stamp()} {model} {n} processes: {row['status']}")
                continue
            ann = sets.path((args.ddp_warmup + args.ddp_iters) * args.ddp_batch * n)
            job(results["ddp"], row, ESTIMATE_S["ddp"], run_ddp, args, data, model, n, ann, common[model], out)
        print(ddp_table(results))
        print(f"torchrun --standalone, {args.ddp_config} at batch {args.ddp_batch} per process, {args.ddp_warmup} "
              f"warm-up + {args.ddp_iters} measured steps; img/s per GPU = batch / median sec_per_iter of "
              "metrics.jsonl's train records after the warm-up; scaling: img/s per GPU over the 1-process run's")

    section("flops", "FLOPs per image", flops)
    section("training", f"Training ({args.size} px)", training)
    if args.infer_configs:
        section("inference", f"Inference ({args.size} px)", inference)
    if args.nproc:
        section("ddp", "Multi-GPU training (torchrun)", multi_gpu)
    results["elapsed_s"] = clock.elapsed()
    derive(results, args.peak_tflops)
    write_results(args, results, out)
    print(f"\nelapsed {clock.elapsed() / 60:.1f} min; results: {out / 'results.md'}, {out / 'results.json'}")
    rows = [*results["training"], *results["inference"], *results["ddp"]]
    return 0 if any(r["status"] == "ok" for r in rows) else 1


def derive(results: dict, peak_tflops: float) -> None:
    """The figures computed from others: vs plain and MFU (training, inference), scaling (multi-GPU)."""
    add_ratios(results["training"], results, "train_flops_per_image", peak_tflops)
    add_ratios(results["inference"], results, "eval_flops_per_image", peak_tflops)
    one = next((r for r in results["ddp"] if r["nproc"] == 1 and r["status"] == "ok"), None)
    for r in results["ddp"]:
        if one is not None and r["status"] == "ok":
            r["scaling"] = r["img_s_per_gpu"] / one["img_s_per_gpu"]


def add_ratios(rows: list[dict], results: dict, flops_key: str, peak_tflops: float) -> None:
    """vs plain (the model's first row: the plain side) and MFU of each measured row."""
    for r in rows:
        if r["status"] != "ok":
            continue
        plain = next((p for p in rows if p["model"] == r["model"] and p["config"].startswith("plain")), None)
        if plain is not None and plain["status"] == "ok":
            r["vs_plain"] = r["img_s"] / plain["img_s"]
            r["vs_plain_median_step"] = r["img_s_median_step"] / plain["img_s_median_step"]
        flops = results["flops"].get(r["model"], {}).get(flops_key)
        r["mfu"] = flops * r["img_s"] / (peak_tflops * 1e12) if flops else None


def write_results(args: argparse.Namespace, results: dict, out: Path) -> None:
    lines = ["# GPU throughput", "", results["machine"], "",
             f"device {results['device']}, data {results['data']}, {args.size} px, "
             f"{'pretrained' if args.pretrained else 'random-init'} backbones, "
             f"{args.loader_workers} loader workers, {args.warmup} warm-up ({args.compile_warmup} compiled) + "
             f"{args.iters} timed + 1 steps; `{' '.join(sys.argv)}`", "",
             "## FLOPs per image", "", flops_table(results), "",
             f"## Training (MFU against {args.peak_tflops:g} TFLOP/s, the dense bf16 peak; fp32 rows too)", "",
             training_table(results, args.peak_tflops), ""]
    if results["inference"]:
        lines += ["## Inference", "", inference_table(results, args.peak_tflops), ""]
    if results["ddp"]:
        lines += ["## Multi-GPU training (torchrun)", "", ddp_table(results), ""]
    lines += ["Section times: " + ", ".join(f"{k} {v:.0f} s" for k, v in results["sections_s"].items())
              + f"; total {results['elapsed_s'] / 60:.1f} min", ""]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
