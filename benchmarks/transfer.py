"""Does a pretrained start help? A transfer check that runs on a CPU: faster_rcnn_r18_demo trained on
the demo data, then fine-tuned on ../shared/data/medical_waste (4 other classes: the class layers
start fresh, everything else from the demo run, via runtime.load_from), against the same model and
schedule from random init. Prints mAP50 per epoch side by side.

    python benchmarks/transfer.py --epochs 6 --size 512

Three training runs go under outputs/benchmarks/transfer/<time>/ (demo, scratch, finetuned); pass
--pretrained <checkpoint> to reuse a demo run. The two medical_waste runs share every setting (seed
included) but the start. Figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "medical_waste"


def train(run_dir: Path, overrides: list[str]) -> float:
    """One `python -m detect.train` in its own folder; returns the wall time in seconds."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "detect.train", f"hydra.run.dir={run_dir}",
               *overrides]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - start


def map50_per_epoch(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {row["epoch"]: row["bbox_mAP_50"] for row in rows if "bbox_mAP_50" in row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs on medical_waste (6); lr x0.1 for the last")
    parser.add_argument("--size", type=int, default=512, help="image size on medical_waste (512; the photos are 640)")
    parser.add_argument("--pretrained", type=Path, help="a demo checkpoint to start from (default: train one)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "transfer" /
                        time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--max-iters", type=int, default=0, help="iterations per epoch (0: all; >0 for a dry run)")
    args = parser.parse_args()
    if not (DATA / "train.json").is_file():
        sys.exit(f"{DATA} is missing: this check needs the shared medical_waste data (see ../shared/data/README.md)")
    limit = [f"runtime.max_iters_per_epoch={args.max_iters}"] if args.max_iters else []
    seconds = {}
    pretrained = args.pretrained
    if pretrained is None:
        seconds["demo"] = train(args.out / "demo", ["model=faster_rcnn_r18_demo", "data=demo", *limit])
        pretrained = args.out / "demo" / "checkpoints" / "last.pth"
    medical_waste = ["model=faster_rcnn_r18_demo", "data=coco", f"data.root={DATA}", "data.name=medical_waste",
                     f"data.min_size={args.size}", f"data.max_size={args.size}", "data.batch_size=4",
                     f"schedule.epochs={args.epochs}", f"schedule.milestones=[{args.epochs - 1}]", *limit]
    seconds["scratch"] = train(args.out / "scratch", medical_waste)
    seconds["finetuned"] = train(args.out / "finetuned", [*medical_waste, f"runtime.load_from={pretrained}"])

    scratch, finetuned = map50_per_epoch(args.out / "scratch"), map50_per_epoch(args.out / "finetuned")
    lines = [f"medical_waste val mAP50, faster_rcnn_r18_demo at {args.size} px (start: {pretrained})", "",
             "| epoch | from scratch | fine-tuned from demo |", "| --- | --- | --- |"]
    lines += [f"| {epoch} | {scratch.get(epoch, float('nan')):.3f} | {finetuned.get(epoch, float('nan')):.3f} |"
              for epoch in sorted(set(scratch) | set(finetuned))]
    lines += ["", "wall time: " + ", ".join(f"{name} {s / 60:.1f} min" for name, s in seconds.items())]
    report = "\n".join(lines)
    (args.out / "transfer.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
