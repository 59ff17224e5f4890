"""Download every weight file a training config needs, once, on a machine with internet:

    python -m detect.fetch_weights model=cascade_rcnn_convnext_t
    python -m detect.fetch_weights model=faster_rcnn runtime.load_from=FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    python -m detect.fetch_weights experiment=member_a/cascade_r50_fold0 --list

Takes the same group=option / key=value overrides as detect.train (the config is composed the same
way) and fills torch.hub's cache ($TORCH_HOME/hub/checkpoints/) and the Hugging Face hub's cache
(timm backbones), where the training nodes read them. `--list` only says what would be fetched.
The work is detect/models/weights.py. Exit 2 for a wrong override, 1 when a file cannot be fetched.
"""

from __future__ import annotations

import sys

from detect.cli import run_command
from detect.errors import UsageError


def fetch_weights(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    listing = "--list" in argv
    overrides = [a for a in argv if a != "--list"]
    if unknown := [a for a in overrides if a.startswith("-")]:
        raise UsageError(f"unknown option {unknown[0]}: give detect.train's overrides, and --list to only list.")
    from detect.config.check import find_problems
    from detect.config.help import CONF_DIR, compose_with_hydra

    if problems := find_problems(overrides, "train"):
        raise UsageError(" ".join(problems))
    cfg = compose_with_hydra("train", overrides, CONF_DIR)
    from detect.models.weights import fetch, weights_needed

    needed = weights_needed(cfg)
    if not needed:
        print(f"model {cfg.model.name}: no weights to download (random init or local files).")
        return 0
    for weight in needed:
        if listing:
            print(f"{weight.key}={weight.name} ({weight.kind})")
            continue
        print(f"{weight.key}={weight.name}: {fetch(weight)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(fetch_weights, argv)


if __name__ == "__main__":
    sys.exit(main())
