"""`scale` benchmark (issue 7): the data check and the leaderboard at the sizes a team reaches.

    python benchmarks/scale.py                                 # 1M boxes, 20k image files, 1,000 run dirs
    python benchmarks/scale.py --images 20000 --files 2000 --runs 100    # a quick look
    python benchmarks/scale.py --part coco                     # only the COCO figures (or --part runs)

Part `coco`: a synthetic COCO json (--images x --boxes-per-image boxes, 10 classes, 640x480 images;
about 0.1% each of the boxes too short (3 numbers), of zero width, outside the image, and partly
outside, so the validator drops and clips), written to a temp folder. Then, each in a fresh
process: json load (`load_coco_json`) + `validate_coco`, and the full `CocoDetection(...)`
construction (load, classes, validation, index image -> boxes) with the image-file check off.
Memory is the peak resident set size (`resource.getrusage(...).ru_maxrss`) a stage adds to the
process it runs in (Python, numpy, torch already imported). Then `check_image_files` over --files
real empty files in one folder. Goal: a few seconds for the 1M boxes.

Part `runs`: --runs run dirs as the trainer leaves them (summary.json, .hydra/config.yaml with the
composed demo config, overrides.yaml, train.log, metrics.jsonl, checkpoints/): single runs, sweep
jobs, ~5% that died before the trainer (no summary.json: their config is parsed) and some
detect.test result folders of loose checkpoints (a config without `schedule:`, parsed and skipped).
Timed: `python -m detect.runs --root <it>` as a subprocess (wall, interpreter start included) and
the table built in-process. Goal: under 1 s.

Figures are wall-clock seconds (time.perf_counter), with the CPU seconds of the process
(time.process_time) in brackets where they differ in meaning: on a machine shared with other jobs
(see the load average printed first) the wall time grows, the CPU time much less. Short stages
are repeated (--repeat) and the median shown. Everything is measured in this one run and printed
next to its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: `detect` is importable without an install
CLASSES = [f"class_{i}" for i in range(10)]
WIDTH, HEIGHT = 640, 480  # pixels, every synthetic image
BROKEN_EVERY = 1000  # one box in this many is of each broken kind (4 kinds: 0.4% in all)


def machine() -> str:
    """CPU model, cores usable by this process / all, memory, Python."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return f"{model}, {usable} of {os.cpu_count()} cores usable{mem}, Python {platform.python_version()}{load}"


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# ------------------------------------------------------------------------------------------ coco
def box(ann_id: int, rng: random.Random) -> str:
    """The bbox json of one annotation: mostly inside the image, every BROKEN_EVERY-th of each broken kind."""
    kind = ann_id % BROKEN_EVERY
    if kind == 1:
        return "[10, 10, 20]"  # 3 numbers: dropped as not 4 finite numbers
    if kind == 2:
        return "[10, 10, 0, 20]"  # zero width: dropped
    if kind == 3:
        return f"[{WIDTH + 5}, 10, 20, 20]"  # entirely outside: dropped
    if kind == 4:
        return f"[{WIDTH - 10}, 10, 30, 20]"  # partly outside: clipped by 20 px
    w, h = rng.randint(8, 200), rng.randint(8, 200)
    return f"[{rng.randint(0, WIDTH - w)}, {rng.randint(0, HEIGHT - h)}, {w}, {h}]"


def write_coco(path: Path, images: int, per_image: int, seed: int = 0) -> None:
    """A COCO json written as text, line by line (no million dicts in this process)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        f.write('{"categories": [' + ", ".join(f'{{"id": {i + 1}, "name": "{n}"}}' for i, n in enumerate(CLASSES))
                + '],\n"images": [\n')
        f.write(",\n".join(f'{{"id": {i}, "file_name": "images/{i:07d}.jpg", "width": {WIDTH}, "height": {HEIGHT}}}'
                           for i in range(1, images + 1)))
        f.write('],\n"annotations": [\n')
        for i in range(images):
            lines = []
            for j in range(per_image):
                ann_id = i * per_image + j + 1
                lines.append(f'{{"id": {ann_id}, "image_id": {i + 1}, "category_id": {rng.randint(1, len(CLASSES))}, '
                             f'"bbox": {box(ann_id, rng)}, "area": 100.0, "iscrowd": 0}}')
            f.write((",\n" if i else "") + ",\n".join(lines))
        f.write("]}\n")


def timed(stages: dict, name: str, fn):
    """`fn`, adding its wall and CPU seconds to stages[name] = [wall, cpu] on each call."""
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] = [time.perf_counter() - wall, time.process_time() - cpu]
    return wrapper


def stage_validate(ann: Path) -> dict:
    """load_coco_json + validate_coco, timed separately; the peak memory both add."""
    from detect.data.coco import load_coco_json
    from detect.data.validate import validate_coco

    stages: dict[str, list[float]] = {}
    base = peak_rss_mib()
    coco = timed(stages, "load", load_coco_json)(ann)
    label_of_category = {c["id"]: i + 1 for i, c in enumerate(coco["categories"])}
    cleaned, report = timed(stages, "validate", validate_coco)(coco, ann, label_of_category)
    return {**stages, "peak_mib": peak_rss_mib() - base, "kept": len(cleaned), "summary": report.summary()}


def stage_dataset(ann: Path) -> dict:
    """The whole CocoDetection construction (image-file check off, as data.check_files=false), with
    the json load and the validation inside it timed on their own (the rest: classes and the index)."""
    import logging

    from detect.data import coco as coco_module

    logging.getLogger("detect").setLevel(logging.ERROR)  # the report line is printed by stage_validate
    stages: dict[str, list[float]] = {}
    coco_module.load_coco_json = timed(stages, "load", coco_module.load_coco_json)
    coco_module.validate_coco = timed(stages, "validate", coco_module.validate_coco)
    base = peak_rss_mib()
    dataset = timed(stages, "construct", coco_module.CocoDetection)(ann.parent, ann, check_files=False)
    stages["index"] = [stages["construct"][i] - stages["load"][i] - stages["validate"][i] for i in range(2)]
    return {**stages, "peak_mib": peak_rss_mib() - base, "images": len(dataset)}


def fmt(wall_cpu: list[float]) -> str:
    return f"{wall_cpu[0]:5.2f} ({wall_cpu[1]:5.2f})"


def in_child(stage: str, ann: Path) -> dict:
    """Run a stage in a fresh interpreter, so its memory figure is its own."""
    proc = subprocess.run([sys.executable, __file__, "--stage", stage, "--ann", str(ann)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_coco(args: argparse.Namespace, tmp: Path) -> None:
    from detect.data.validate import check_image_files

    boxes = args.images * args.boxes_per_image
    ann = tmp / "coco" / "train.json"
    ann.parent.mkdir()
    t0 = time.perf_counter()
    write_coco(ann, args.images, args.boxes_per_image)
    print(f"\n[coco] {args.images:,} images x {args.boxes_per_image} = {boxes:,} boxes, {len(CLASSES)} classes: "
          f"{ann.stat().st_size / 2**20:.0f} MiB json (written in {time.perf_counter() - t0:.1f} s, not a figure)")
    v = in_child("validate", ann)
    d = in_child("dataset", ann)
    print(f"  check: {v['summary']}")
    print("  seconds, wall (cpu)                          alone        inside CocoDetection(...)")
    for name, what in (("load", "json load (load_coco_json)"), ("validate", "validation (validate_coco)")):
        print(f"  {what:<42} {fmt(v[name])}   {fmt(d[name])}")
    print(f"  {'classes + index image -> boxes':<42} {'':13}   {fmt(d['index'])}")
    print(f"  {'CocoDetection(...) construction, in all':<42} {'':13}   {fmt(d['construct'])}   goal: a few seconds")
    print(f"  peak memory added (ru_maxrss): load + validation {v['peak_mib']:.0f} MiB; "
          f"CocoDetection {d['peak_mib']:.0f} MiB (json dicts + cleaned list + index)")

    folder = tmp / "files" / "images"
    folder.mkdir(parents=True)
    for i in range(1, args.files + 1):
        (folder / f"{i:07d}.jpg").touch()
    images = [{"id": i, "file_name": f"images/{i:07d}.jpg"} for i in range(1, args.files + 1)]
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        check_image_files(images, folder.parent, "train.json")
        times.append(time.perf_counter() - t0)
    print(f"  image-file check, {args.files:,} files in one folder  {statistics.median(times) * 1000:6.1f} ms "
          f"(median of {args.repeat}; one listing per folder)   goal: part of the few seconds")


# ------------------------------------------------------------------------------------------ runs
def demo_config_yaml() -> str:
    """The composed default training config, as Hydra saves it in .hydra/config.yaml."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from detect.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_yaml(compose(config_name="train"))


def write_run(run_dir: Path, config: str, status: str | None, rng: random.Random, fold=None) -> None:
    """One run dir: .hydra files, train.log, metrics.jsonl, checkpoints/, and summary.json unless status is None."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=cascade_rcnn\n- data=trash\n")
    (run_dir / "train.log").write_text("[INFO] epoch 1\n" * 50)
    epochs = 12
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"mode": "val", "epoch": e, "bbox_mAP_50": 0.05 * e})
                                                   + "\n" for e in range(1, epochs + 1)))
    (run_dir / "checkpoints" / "last.pth").touch()
    if status is None:
        return
    score = round(rng.random(), 5)
    summary = {"status": status, "member": run_dir.parts[-3] if fold is None else run_dir.parts[-4],
               "experiment": "cascade_rcnn_trash", "model": "cascade_rcnn", "data": "trash", "fold": fold,
               "run_dir": str(run_dir), "monitor": "bbox_mAP_50", "best_score": score, "best_epoch": 7,
               "epochs_done": epochs if status == "finished" else 5, "epochs": epochs, "seed": 42,
               "started": "2026-11-20 10:00:00", "finished": "2026-11-20 18:00:00", "error": None,
               "overrides": ["model=cascade_rcnn", "data=trash"], "git": {"commit": "abc1234", "dirty": False},
               "versions": {"python": "3.11.7", "torch": "2.4.0", "torchvision": "0.19.0", "hydra": "1.3.2"}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def make_runs(root: Path, count: int, config: str) -> dict:
    """`count` run dirs: 80% single runs, 15% sweep jobs, 5% without summary.json; plus count/50
    detect.test folders of loose checkpoints. Returns how many of each were written."""
    rng = random.Random(0)
    test_config = "run: null\ncheckpoint: x.pth\nmode: eval\ndata:\n  root: null\n"  # detect.test's, no schedule:
    made = {"single": 0, "sweep jobs": 0, "no summary": 0, "test folders": 0}
    for i in range(count):
        member = f"member_{i % 5}"
        stamp = f"2026-11-{1 + i % 28:02d}_10-{i // 60 % 60:02d}-{i % 60:02d}"
        if i % 20 == 0:
            write_run(root / member / f"exp_{i % 40}" / stamp, config, None, rng)
            made["no summary"] += 1
        elif i % 20 < 4:  # sweep jobs of 5 folds
            write_run(root / member / f"exp_{i % 40}" / f"multirun_{stamp}" / str(i % 5), config, "finished", rng,
                      fold=i % 5)
            made["sweep jobs"] += 1
        else:
            status = ("finished", "finished", "finished", "failed", "interrupted", "running")[i % 6]
            write_run(root / member / f"exp_{i % 40}" / stamp, config, status, rng)
            made["single"] += 1
    for i in range(count // 50):
        test_dir = root / f"member_{i % 5}" / "test" / f"eval_2026-11-20_10-00-{i:02d}"
        (test_dir / ".hydra").mkdir(parents=True)
        (test_dir / ".hydra" / "config.yaml").write_text(test_config)
        made["test folders"] += 1
    return made


def bench_runs(args: argparse.Namespace, tmp: Path) -> None:
    from detect.run import leaderboard as runs

    root = tmp / "outputs"
    made = make_runs(root, args.runs, demo_config_yaml())
    print(f"\n[runs] {args.runs:,} run dirs under {root.name}/: "
          + ", ".join(f"{n} {kind}" for kind, n in made.items()))
    walls, out = [], ""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "detect.runs", "--root", str(root)], capture_output=True,
                              text=True, cwd=REPO, env=env, check=False)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"detect.runs failed:\n{proc.stderr[-3000:]}")
        out = proc.stdout
    listed = len(out.splitlines()) - 2  # header and rule
    inproc = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        table = runs.format_table(runs.sort_runs(runs.read_runs(root)))
        inproc.append(time.perf_counter() - t0)
    assert len(table.splitlines()) - 2 == listed
    print(f"  python -m detect.runs --root ... (subprocess wall)   {statistics.median(walls):6.2f} s "
          f"(median of {args.repeat}; {listed} rows)   goal: < 1 s")
    print(f"  table built in-process (read_runs + sort + format)   {statistics.median(inproc):6.2f} s "
          f"(median of {args.repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "coco", "runs"), default="all")
    parser.add_argument("--images", type=int, default=200_000, help="images of the synthetic json")
    parser.add_argument("--boxes-per-image", type=int, default=5, help="boxes per image (1M in all by default)")
    parser.add_argument("--files", type=int, default=20_000, help="empty image files for the existence check")
    parser.add_argument("--runs", type=int, default=1000, help="run dirs for detect.runs")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the short stages (median shown)")
    parser.add_argument("--stage", choices=("validate", "dataset"), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--ann", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps((stage_validate if args.stage == "validate" else stage_dataset)(args.ann)))
        return
    print(f"scale benchmark on {machine()}")
    with tempfile.TemporaryDirectory(prefix="detect_scale_") as tmp:
        if args.part in ("all", "coco"):
            bench_coco(args, Path(tmp))
        if args.part in ("all", "runs"):
            bench_runs(args, Path(tmp))


if __name__ == "__main__":
    main()
