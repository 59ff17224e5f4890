"""Faster R-CNN vs Cascade R-CNN on real photos, same backbone, image size, schedule and seed.

Trains both with `python -m detect.train` on a COCO root (default: ../shared/data/medical_waste),
then prints the last evaluation's bbox_mAP / bbox_mAP_50 / bbox_mAP_75 of both side by side with
the cascade's gain. Cascade R-CNN's gain is expected at the stricter IoU (mAP_75), its cost in time.

    python benchmarks/cascade_vs_faster.py                      # CPU-sized pair (R18 from scratch)
    python benchmarks/cascade_vs_faster.py --pair full --epochs 12 --size 640 \
        --extra model.backbone.weights=/path/resnet50.pth        # the R50 configs, e.g. on a GPU

`--pair demo` compares faster_rcnn_r18_demo with cascade_rcnn_r18_demo (identical but for the box
head), `--pair full` faster_rcnn with cascade_rcnn. `--jobs 2` trains both at once, each on
half of the CPU threads (the two runs then share the machine alike).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"demo": ("faster_rcnn_r18_demo", "cascade_rcnn_r18_demo"), "full": ("faster_rcnn", "cascade_rcnn")}
METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "medical_waste"))
    parser.add_argument("--pair", choices=sorted(PAIRS), default="demo")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="images are resized to this many pixels (square data)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--out", default=str(REPO / "outputs" / "benchmarks" / "cascade_vs_faster"))
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for both runs")
    return parser.parse_args()


def train_command(model: str, args: argparse.Namespace, run_dir: Path, threads: int) -> list[str]:
    return [
        sys.executable, "-m", "detect.train", f"model={model}", "data=coco", f"data.root={args.data_root}",
        "data.train_ann=train.json", "data.val_ann=val.json", f"data.min_size={args.size}",
        f"data.max_size={args.size}", f"data.batch_size={args.batch_size}", "schedule=demo",
        f"schedule.epochs={args.epochs}", f"schedule.milestones=[{max(args.epochs - 1, 1)}]",
        "runtime.seed=0", f"runtime.threads={threads}", f"hydra.run.dir={run_dir}", *args.extra,
    ]


def last_evaluation(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("mode") == "val"]
    if not evals:
        raise SystemExit(f"{run_dir}: no evaluation in metrics.jsonl; see {run_dir / 'train.log'}")
    return evals[-1]


def main() -> None:
    args = parse_args()
    if not (Path(args.data_root) / "train.json").is_file():
        raise SystemExit(f"No COCO data at {args.data_root} (train.json and val.json expected); pass --data-root")
    out = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    pending = list(PAIRS[args.pair])
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    seconds: dict[str, float] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            model = pending.pop(0)
            (out / model).mkdir(parents=True)
            log = (out / model / "stdout.log").open("w")
            print(f"training {model} -> {out / model}", flush=True)
            proc = subprocess.Popen(train_command(model, args, out / model, threads), cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            running[model] = (proc, time.perf_counter())
        time.sleep(2)
        for model, (proc, started) in list(running.items()):
            if proc.poll() is not None:
                seconds[model] = time.perf_counter() - started
                del running[model]
                if proc.returncode != 0:
                    raise SystemExit(f"{model} failed (exit {proc.returncode}); see {out / model / 'stdout.log'}")

    results = {model: {**{k: last_evaluation(out / model)[k] for k in METRICS}, "train_seconds": seconds[model]}
               for model in PAIRS[args.pair]}
    faster, cascade = PAIRS[args.pair]
    print(f"\n{args.data_root}: {args.epochs} epochs at {args.size} px, batch {args.batch_size}, "
          f"{args.jobs} job(s) x {threads} thread(s); last evaluation of each run")
    print(f"{'metric':<14}{faster:>24}{cascade:>24}{'cascade - faster':>18}")
    for key in (*METRICS, "train_seconds"):
        a, b = results[faster][key], results[cascade][key]
        print(f"{key:<14}{a:>24.4f}{b:>24.4f}{b - a:>+18.4f}")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    main()
