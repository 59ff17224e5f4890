"""What a model costs: parameters, FLOPs per image and inference latency (batch 1), for a config or a run.

    python -m detect.profile model=cascade_rcnn data=trash            # any training config (random weights)
    python -m detect.profile model=rtdetr_v2_r18 model.pretrained=null --device cuda
    python -m detect.profile run=outputs/member_a/cascade_r50_fold0/2026-11-27_10-00-00   # a run: its best weights

A config takes detect.train's overrides (backbone weights are not loaded: they do not change the cost,
except for two-stage models whose proposals follow the weights: profile a run for those). A run is measured
with its checkpoint (`checkpoint=best|last|epoch_N|<path>`) and the figures go into its summary.json's `cost`
(what `detect.runs` shows). Options: --device (cpu), --threads, --warmup (2), --repeats (10), --size (the
model's min_size). The size is a square; see detect/engine/cost.py for what FLOPs count.
"""

from __future__ import annotations

import logging
import sys

from detect.cli import ArgumentParser, run_command
from detect.errors import UsageError

log = logging.getLogger("detect")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser("python -m detect.profile", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="detect.train overrides (model=..., data=...), or run=<run dir> "
                        "[checkpoint=best|last|epoch_N|<path>]")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="forwards before the timed ones (2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards; the median is reported (10)")
    parser.add_argument("--size", type=int, help="square side in pixels (default: the model's min_size)")
    return parser


def model_from_config(overrides: list[str]):
    from detect.config.check import find_problems
    from detect.config.help import CONF_DIR, compose_with_hydra
    from detect.engine.build import instantiate

    if problems := find_problems(overrides, "train"):
        raise UsageError(" ".join(problems))
    cfg = compose_with_hydra("train", overrides, CONF_DIR)
    model_cfg = cfg.model
    if "pretrained" in model_cfg:
        model_cfg.pretrained = None  # the cost is the architecture's: no download
    elif "weights" in (model_cfg.get("backbone") or {}):
        model_cfg.backbone.weights = None
    # The classes only size the class layers: the data config's list, else the trash task's 10.
    classes = cfg.data.get("classes") or list(range(10))
    model = instantiate("model", model_cfg, num_classes=len(classes), _convert_="all")
    return model, model_cfg, None, f"model={model_cfg.name} (data={cfg.data.name}, random weights)"


def model_from_run(run: str, checkpoint: str):
    from detect.engine.testing import load_trained_model

    model, run_cfg, _, path = load_trained_model(run, checkpoint)
    summary = path.parent.parent / "summary.json"
    return model, run_cfg.model, summary if summary.is_file() else None, f"{path} ({run_cfg.model.name})"


def profile(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from detect.engine.build import select_device
    from detect.engine.cost import input_size, measure_cost

    if args.threads:
        torch.set_num_threads(args.threads)
    run = next((a.split("=", 1)[1] for a in args.overrides if a.startswith("run=")), None)
    checkpoint = next((a.split("=", 1)[1] for a in args.overrides if a.startswith("checkpoint=")), "best")
    if run:
        if others := [a for a in args.overrides if not a.startswith(("run=", "checkpoint="))]:
            raise UsageError(f"run=... is measured as it was trained: leave out {' '.join(others)}")
        model, model_cfg, summary, what = model_from_run(run, checkpoint)
    else:
        model, model_cfg, summary, what = model_from_config(args.overrides)
    device = select_device(args.device, key="--device")
    model.to(device)
    height, width = (args.size, args.size) if args.size else input_size(model_cfg)
    cost = measure_cost(model, height, width, device, args.warmup, args.repeats)
    print(f"{what}\n  input {height}x{width}, batch 1, {cost['device']}, {cost['threads']} threads")
    flops = "not counted (see the warning)" if cost["gflops"] is None else f"{cost['gflops']:.2f} G per image"
    print(f"  parameters  {cost['params_m']:.2f} M\n  FLOPs       {flops}\n"
          f"  latency     {cost['latency_ms']:.1f} ms per image (median of {args.repeats})")
    if summary is not None:
        from detect.run.summary import update_summary_file

        update_summary_file(summary, cost=cost)
        print(f"  written to {summary} (cost)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(profile, argv)


if __name__ == "__main__":
    sys.exit(main())
