"""What does each part of the training recipe (issue 18) buy? Baseline against one change at a time, same
model, epochs, seeds and data, side by side: EMA of the weights, the multi-scale + photometric pipeline,
repeat-factor sampling, cosine instead of step decay. Prints mAP50, mAP75 and the rarest training class's
AP50 of each configuration at the last epoch (mean over the seeds, and each seed's mAP50).

    python benchmarks/recipe.py --data demo --seeds 0 1 2           # ~3 min a run on 2 cores, 15 runs
    python benchmarks/recipe.py --data medical_waste --size 320 --epochs 5 --start <demo checkpoint>

One `python -m detect.train` per configuration and seed, under --out/<data>/<config>/seed<k>/; a run whose
summary says finished is reused, so an interrupted benchmark goes on where it stopped. The table is also
written to --out/<data>/recipe.md. Figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDICAL_WASTE = ROOT.parent / "shared" / "data" / "medical_waste"

# Each configuration is the baseline plus these overrides. The repeat threshold is set per data set (--threshold):
# LVIS's t = 0.1 repeats nothing on data where every class is in more than a tenth of the images.
CONFIGS = {
    "baseline": [],
    "ema": ["schedule.ema.enable=true"],
    "multiscale_photometric": ["data/aug=multiscale_photometric"],
    "repeat_factor": ["data.sampler.name=repeat_factor"],  # after the baseline's uniform: this one wins
    "cosine": ["schedule/lr_decay=cosine"],
}


def data_overrides(args: argparse.Namespace) -> list[str]:
    if args.data == "demo":  # the baseline samples uniformly (the demo config itself samples by repeat factor)
        return ["model=faster_rcnn_r18_demo", "data=demo", "data.sampler.name=uniform",
                f"schedule.epochs={args.epochs}", f"schedule.milestones=[{args.epochs - 1}]"]
    if not (MEDICAL_WASTE / "train.json").is_file():
        sys.exit(f"{MEDICAL_WASTE} is missing: --data medical_waste needs ../shared/data (see its README.md)")
    start = [f"runtime.load_from={args.start}"] if args.start else []
    return ["model=faster_rcnn_r18_demo", "data=coco", f"data.root={MEDICAL_WASTE}", "data.name=medical_waste",
            f"data.min_size={args.size}", f"data.max_size={args.size}", "data.batch_size=4",
            f"schedule.epochs={args.epochs}", f"schedule.milestones=[{args.epochs - 1}]", *start]


def train_file(args: argparse.Namespace) -> Path:
    return (ROOT / "data" / "demo" if args.data == "demo" else MEDICAL_WASTE) / "train.json"


def rarest_class(path: Path) -> tuple[str, float]:
    """The class in the fewest training images, and that fraction of the images."""
    data = json.loads(path.read_text())
    pairs = {(a["category_id"], a["image_id"]) for a in data["annotations"]}  # an image counts once per class
    images_of = Counter(category_id for category_id, _ in pairs)
    names = {c["id"]: c["name"] for c in data["categories"]}
    category_id = min(names, key=lambda c: images_of[c])
    return names[category_id], images_of[category_id] / len(data["images"])


def train(run_dir: Path, overrides: list[str]) -> None:
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "finished":
        print(f"reusing {run_dir}", flush=True)
        return
    command = [sys.executable, "-m", "detect.train", f"hydra.run.dir={run_dir}", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def last_evaluation(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("mode") == "val"][-1]


def minutes(run_dir: Path) -> float:
    summary = json.loads((run_dir / "summary.json").read_text())
    start, end = (time.mktime(time.strptime(summary[key], "%Y-%m-%d %H:%M:%S")) for key in ("started", "finished"))
    return (end - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["demo", "medical_waste"], default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every run; lr x0.1 for the last with step")
    parser.add_argument("--size", type=int, default=320, help="medical_waste image size (its photos are 640)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="repeat_factor's data.sampler.repeat_threshold (0.5: the demo's rarest class, in 21%% "
                             "of the images, repeats 1.56x)")
    parser.add_argument("--start", type=Path, help="medical_waste: a detect checkpoint to fine-tune from (load_from)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "recipe")
    parser.add_argument("--max-iters", type=int, default=0, help="iterations per epoch (0: all; >0 for a dry run)")
    args = parser.parse_args()
    common = data_overrides(args)
    if args.max_iters:
        common.append(f"runtime.max_iters_per_epoch={args.max_iters}")
    for name in args.configs:
        extra = [f"data.sampler.repeat_threshold={args.threshold}"] if name == "repeat_factor" else []
        for seed in args.seeds:
            overrides = [*common, *CONFIGS[name], *extra, f"runtime.seed={seed}"]
            train(args.out / args.data / name / f"seed{seed}", overrides)

    rare, fraction = rarest_class(train_file(args))
    lines = [f"{args.data}: faster_rcnn_r18_demo, {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}; "
             f"last evaluation, mean over the seeds. Rarest training class: {rare} ({fraction:.0%} of the images).",
             "", f"overrides of every run: {' '.join(common)}", "",
             f"| configuration | mAP50 | mAP75 | {rare} AP50 | mAP50 per seed | minutes per run |",
             "| --- | ---: | ---: | ---: | --- | ---: |"]
    for name in args.configs:
        runs = [args.out / args.data / name / f"seed{seed}" for seed in args.seeds]
        evaluations = [last_evaluation(run) for run in runs]
        map50 = [e["bbox_mAP_50"] for e in evaluations]
        map75 = statistics.mean(e["bbox_mAP_75"] for e in evaluations)
        rare50 = statistics.mean(e["classwise"][rare]["AP50"] for e in evaluations)
        label = name + (f" (t={args.threshold})" if name == "repeat_factor" else "")
        lines.append(f"| {label} | {statistics.mean(map50):.3f} | {map75:.3f} | {rare50:.3f} | "
                     f"{' / '.join(f'{m:.3f}' for m in map50)} | {statistics.mean(map(minutes, runs)):.1f} |")
    report = "\n".join(lines)
    (args.out / args.data).mkdir(parents=True, exist_ok=True)
    (args.out / args.data / "recipe.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
