"""Cost per training iteration of each augmentation pipeline (conf/data/aug), side by side in one run.

For each pipeline, an iteration is: build a batch of --batch images through the data set with that
pipeline (`dataset[(index, seed, epoch 0)]`, as a loader worker does: decoding, augmentation, the
conversion to float) and one forward + backward pass of the model on it, in the main process. The
model is built once and never stepped (same weights for every pipeline, so the same proposals and
NMS cost); only its `skip_train_resize` follows the pipeline (multiscale, lsj and strong size the
images, the detector does not resize them again), as a training run sets it. Every pipeline sees the
same image indices and seeds. The pipelines alternate over --repeats rounds of --iters iterations and
the medians are printed: data ms/iteration, step ms/iteration, and the total relative to flip.

    .venv/bin/python benchmarks/augment_cost.py                  # the demo data (256-320 px), r18 demo model
    .venv/bin/python benchmarks/augment_cost.py --iters 10 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from machine import machine_line  # benchmarks/machine.py (scripts run from this folder)

from detect.config import register_resolvers
from detect.data.build import build_dataset
from detect.data.demo import prepare_demo_data

REPO = Path(__file__).resolve().parents[1]
PIPELINES = ["flip", "multiscale", "lsj", "photometric", "multiscale_photometric", "strong"]


def compose_config(aug: str, extra: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"data/aug={aug}", *extra])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per pipeline and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the pipelines alternate within each")
    parser.add_argument("--batch", type=int, default=4, help="images per iteration (the demo's data.batch_size)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every side, e.g. data.root=...")
    args = parser.parse_args()
    os.chdir(REPO)  # data.root=data/demo is relative to the launch folder: the repository's (git-ignored) one
    torch.set_num_threads(args.threads)
    register_resolvers()
    print(machine_line(args.threads))

    configs = {aug: compose_config(aug, args.overrides) for aug in PIPELINES}
    prepare_demo_data(configs["flip"].data)
    datasets = {aug: build_dataset(cfg.data, "train", train=True) for aug, cfg in configs.items()}
    torch.manual_seed(0)
    model = hydra.utils.instantiate(configs["flip"].model, num_classes=len(datasets["flip"].classes), _convert_="all")
    model.train()
    generator = torch.Generator().manual_seed(0)
    count = len(datasets["flip"])

    def iteration(aug: str, keys: list[tuple[int, int, int]]) -> tuple[float, float, float]:
        """(data seconds, step seconds, mean pixels per image the model trains on)."""
        start = time.perf_counter()
        images, targets = zip(*(datasets[aug][key] for key in keys))
        loaded = time.perf_counter()
        model.transform.skip_train_resize = bool(configs[aug].model.skip_train_resize)
        batch, _ = model.transform(list(images), [dict(t) for t in targets])
        losses = model(list(images), list(targets))
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
        pixels = statistics.mean(h * w for h, w in batch.image_sizes)
        return loaded - start, time.perf_counter() - loaded, pixels

    batches = [[(int(i), int(s), 0) for i, s in zip(torch.randint(count, (args.batch,), generator=generator),
                                                     torch.randint(0, 2**62, (args.batch,), generator=generator))]
               for _ in range(args.iters + 1)]
    times: dict[str, list[tuple[float, float, float]]] = {aug: [] for aug in PIPELINES}
    for round_ in range(args.repeats):
        shift = round_ % len(PIPELINES)  # each pipeline takes its turn first: no place is favoured
        for aug in PIPELINES[shift:] + PIPELINES[:shift]:
            iteration(aug, batches[-1])  # warm-up: first calls of a new input size
            times[aug] += [iteration(aug, keys) for keys in batches[:-1]]

    base = None
    print(f"{args.repeats} rounds x {args.iters} iterations of {args.batch} images, medians:")
    print(f"{'pipeline':<22} {'data ms/iter':>12} {'step ms/iter':>12} {'total ms':>9} {'vs flip':>8} "
          f"{'model input px':>15}")
    for aug in PIPELINES:
        data = statistics.median(t[0] for t in times[aug]) * 1000
        step = statistics.median(t[1] for t in times[aug]) * 1000
        side = statistics.mean(t[2] for t in times[aug]) ** 0.5  # the side of a square of the same area
        base = base or data + step
        print(f"{aug:<22} {data:>12.1f} {step:>12.1f} {data + step:>9.1f} {(data + step) / base:>7.2f}x "
              f"{f'~{side:.0f}x{side:.0f}':>15}")


if __name__ == "__main__":
    main()
