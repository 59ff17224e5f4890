"""Training-data throughput: detect's loader vs a plain PIL pipeline, images/s over full epochs.

detect's side is what the trainer builds (detect.engine.build.build_components): the config composed
with Hydra (`data=coco`, conf/runtime/default.yaml), `build_dataset(cfg.data, "train", train=True)`
(torchvision.io decoding, v2 transforms on uint8: horizontal flip p=data.hflip_prob) and
`build_loader` (seeded batch sampler, aspect-ratio grouping, persistent workers as configured),
re-seeded per epoch as the trainer does; on a CPU its workers hand over float images, as in CPU
training (`--uint8` measures the GPU-training loader instead, whose uint8 images the GPU converts:
not counted here, there is no GPU on this machine). The plain side: `PIL.Image.open(...).convert("RGB")`,
`torchvision.transforms.functional.to_tensor`, the same flip of image and boxes (on the float tensor,
as torchvision's detection tutorial does), targets built from the json per item, and a
`DataLoader(shuffle=True)` with the same collate, batch size, workers and persistent_workers.

One warm-up epoch per side first (equal OS file cache, workers started), then the two sides
alternate over --repeats epochs each; the median images/s is reported per worker count, and the
median of the per-repeat ratios (the two epochs of a repeat run back to back, so they share whatever
else loads the machine: the robust figure on a shared machine; the 1-minute load average is printed).
A check that both give the same image tensors (decoders may differ by about 1/255) and boxes comes first.

    .venv/bin/python benchmarks/data_throughput.py                       # workers 0 and 2, 5 repeats
    .venv/bin/python benchmarks/data_throughput.py --workers 2 --repeats 9 --batch-size 4

Skips (exit 0) when ../shared/data/medical_waste is absent. Results: outputs/benchmarks/data_throughput/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as F

from detect.config import register_resolvers
from detect.data.build import build_dataset, build_loader
from detect.data.coco import collate
from detect.data.transforms import detection_transforms

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "medical_waste"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to measure")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="measured epochs per side and worker count")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the main process")
    parser.add_argument("--check-images", type=int, default=16, help="images compared between the two pipelines")
    parser.add_argument("--uint8", action="store_true",
                        help="detect's GPU-training loader (uint8 images; the GPU converts them, not timed here)")
    parser.add_argument("--out", default=str(REPO / "outputs" / "benchmarks" / "data_throughput"))
    return parser.parse_args()


class PilCoco(Dataset):
    """What a plain script writes: PIL decode, to_tensor, a coin-flip hflip, targets from the json."""

    def __init__(self, root: Path, ann_file: Path, hflip_prob: float):
        coco = json.loads(ann_file.read_text())
        categories = sorted(c["id"] for c in coco["categories"])
        self.label_of = {cat: i + 1 for i, cat in enumerate(categories)}
        self.anns: dict[int, list[dict]] = defaultdict(list)
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.anns[ann["image_id"]].append(ann)
        # detect trains on images with at least one box (data.train_keep_empty=false): the same list here.
        self.images = [img for img in coco["images"] if self.anns[img["id"]]]
        self.root, self.hflip_prob = root, hflip_prob

    def __len__(self) -> int:
        return len(self.images)

    def item(self, index: int, flip: bool):
        info = self.images[index]
        with Image.open(self.root / info["file_name"]) as im:
            image = F.to_tensor(im.convert("RGB"))
        anns = self.anns[info["id"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        if flip:
            image = image.flip(-1)
            boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
        return image, {"boxes": boxes, "labels": labels, "image_id": info["id"]}

    def __getitem__(self, index: int):
        return self.item(index, bool(torch.rand(1).item() < self.hflip_prob))


def compose_config(root: str, batch_size: int):
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["data=coco", f"data.root={root}", f"data.batch_size={batch_size}"])


def check_same_tensors(detect_set, pil_set: PilCoco, count: int) -> dict:
    """Max |detect - PIL| over `count` images, unflipped and flipped (transforms forced to p=0 / p=1)."""
    index_of_id = {info["id"]: i for i, info in enumerate(pil_set.images)}
    worst = {"image_max_abs_diff": 0.0, "image_mean_abs_diff": 0.0, "pixels_differing": 0.0, "boxes_max_abs_diff": 0.0}
    for flip in (False, True):
        view = copy.copy(detect_set)  # same data set, transforms with a fixed flip decision
        view.transforms = detection_transforms(1.0 if flip else 0.0)
        step = max(1, len(view) // count)
        for index in range(0, len(view), step)[:count]:
            image, target = view[index]
            pil_image, pil_target = pil_set.item(index_of_id[target["image_id"]], flip)
            diff = (image - pil_image).abs()
            worst["image_max_abs_diff"] = max(worst["image_max_abs_diff"], float(diff.max()))
            worst["image_mean_abs_diff"] = max(worst["image_mean_abs_diff"], float(diff.mean()))
            # to_tensor divides by 255, ToDtype multiplies by 1/255: float rounding (~1e-8) is not a difference.
            worst["pixels_differing"] = max(worst["pixels_differing"], float((diff > 0.5 / 255).float().mean()))
            worst["boxes_max_abs_diff"] = max(worst["boxes_max_abs_diff"],
                                              float((target["boxes"] - pil_target["boxes"]).abs().max()))
            assert torch.equal(target["labels"], pil_target["labels"]), f"labels differ for image {index}"
    return worst


def images_per_second(loader: DataLoader) -> float:
    tic, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - tic)


def measure(cfg, detect_set, pil_set: PilCoco, workers: int, batch_size: int, repeats: int) -> dict:
    rt = cfg.runtime
    # As Trainer.build builds it (pin_memory is off on CPU; rank 0 of 1).
    detect_loader = build_loader(detect_set, batch_size, True, workers=workers, seed=rt.seed, pin_memory=False,
                                 persistent_workers=bool(rt.persistent_workers),
                                 group_by_aspect_ratio=bool(rt.group_by_aspect_ratio))
    pil_loader = DataLoader(pil_set, batch_size=batch_size, shuffle=True, collate_fn=collate, num_workers=workers,
                            persistent_workers=bool(rt.persistent_workers) and workers > 0)
    epoch = 0

    def detect_epoch() -> float:
        nonlocal epoch
        # The trainer re-seeds the loader and the batch sampler every epoch: that cost belongs to detect's side.
        detect_loader.generator.manual_seed(rt.seed + epoch)
        detect_loader.batch_sampler.set_epoch(epoch)
        epoch += 1
        return images_per_second(detect_loader)

    sides = {"detect": detect_epoch, "pil": lambda: images_per_second(pil_loader)}
    for run in sides.values():  # warm-up: file cache, persistent workers started, allocator warm
        run()
    rates: dict[str, list[float]] = {"detect": [], "pil": []}
    for r in range(repeats):
        for name in (("detect", "pil") if r % 2 == 0 else ("pil", "detect")):  # alternate who goes first
            rates[name].append(sides[name]())
    return rates  # the loaders go out of scope here, which shuts their persistent workers down


def main() -> None:
    args = parse_args()
    root = Path(args.data_root)
    if not (root / "train.json").is_file():
        print(f"SKIP: no data at {root} (train.json expected; see ../shared/data/README.md). Pass --data-root.")
        return
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    cfg = compose_config(str(root), args.batch_size)
    detect_set = build_dataset(cfg.data, "train", train=True, float_output=not args.uint8)
    pil_set = PilCoco(root, root / cfg.data.train_ann, float(cfg.data.hflip_prob))
    print(f"data: {root}/{cfg.data.train_ann}, {len(detect_set)} training images (detect) / {len(pil_set)} (PIL), "
          f"batch {args.batch_size}, hflip p={cfg.data.hflip_prob}, "
          f"persistent_workers={cfg.runtime.persistent_workers}, detect hands over "
          f"{'uint8 (GPU-training path)' if args.uint8 else 'float (CPU-training path)'}")
    if len(detect_set) != len(pil_set):
        raise SystemExit("the two pipelines do not see the same images: compare detect.data.validate's report")

    same = check_same_tensors(detect_set, pil_set, args.check_images)
    print(f"same tensors ({args.check_images} images, unflipped and flipped): max |detect - PIL| = "
          f"{same['image_max_abs_diff']:.2e} ({same['image_max_abs_diff'] * 255:.2f}/255), mean "
          f"{same['image_mean_abs_diff'] * 255:.4f}/255, values differing by >= 1/255: {same['pixels_differing']:.2%}; "
          f"boxes max diff {same['boxes_max_abs_diff']:.2e}")

    results = {}
    for workers in args.workers:
        rates = measure(cfg, detect_set, pil_set, workers, args.batch_size, args.repeats)
        med = {name: statistics.median(values) for name, values in rates.items()}
        paired = [d / p for d, p in zip(rates["detect"], rates["pil"])]
        results[workers] = {"rates": rates, "median": med, "ratio": med["detect"] / med["pil"], "paired": paired,
                            "paired_ratio": statistics.median(paired), "load": os.getloadavg()[0]}
        for name in ("detect", "pil"):
            print(f"workers={workers} {name:>6}: median {med[name]:7.1f} img/s  over {args.repeats} epochs "
                  f"[{', '.join(f'{v:.1f}' for v in rates[name])}]  spread {min(rates[name]):.1f}-"
                  f"{max(rates[name]):.1f}")
        print(f"workers={workers} detect/PIL per repeat [{', '.join(f'{v:.2f}' for v in paired)}], 1-min load "
              f"{results[workers]['load']:.1f}")
    print()
    for workers, res in results.items():
        print(f"workers={workers}: detect {res['median']['detect']:.1f} img/s, PIL {res['median']['pil']:.1f} img/s, "
              f"ratio detect/PIL = {res['ratio']:.2f} (goal >= 1.3); median of per-repeat ratios "
              f"{res['paired_ratio']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    path.write_text(json.dumps({"machine": machine_line(args.threads), "args": vars(args), "same_tensors": same,
                                "results": results}, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
