"""Scaffold a member's experiment file: `conf/experiment/<member>/<name>.yaml`.

    python -m detect.new_experiment member=member_c name=cascade_lr model=cascade_rcnn
    python -m detect.new_experiment member=member_c name=r101_fold2 model=cascade_rcnn_r101 data=trash fold=2

Keys: member and name (required), model, data, schedule (options of those groups; model and data
default to faster_rcnn and trash, schedule to the one the model picks), fold (data.fold), conf_dir
(the config tree; default the repository's conf/). The file holds only the deltas, in the form every
shipped experiment has; edit it to add what the experiment changes. An existing file is never
replaced: pick another name or delete the old file yourself. Imports no torch: it answers at once.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from detect.cli import run_command
from detect.errors import UsageError

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
EXAMPLE = "member=member_c name=cascade_lr model=cascade_rcnn"
KEYS = {"member", "name", "model", "data", "schedule", "fold", "conf_dir"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # one folder or file name, no path tricks
# Chosen as model/backbone=..., data/aug=..., schedule/lr_decay=...: not options of their parent group.
SUB_GROUPS = {"model": {"backbone", "neck"}, "data": {"aug"}, "schedule": {"lr_decay"}}


class ScaffoldError(UsageError):
    """A wrong key or value, or a file that exists: nothing was written (exit 2). The message says
    which and what is valid."""


def parse_args(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not value:
            raise ScaffoldError(f"'{arg}' is not key=value. Example: {EXAMPLE}")
        if key not in KEYS:
            raise ScaffoldError(f"Unknown key '{key}'. Valid keys: {', '.join(sorted(KEYS))}.")
        args[key] = value
    for key in ("member", "name"):
        if key not in args:
            raise ScaffoldError(f"{key}=... is required. Example: {EXAMPLE}")
        if not SAFE_NAME.match(args[key]):
            raise ScaffoldError(f"{key}={args[key]!r} must be one folder name: letters, digits, '_', '-', '.' "
                                "(no slashes or spaces).")
    if "fold" in args and not args["fold"].isdigit():
        raise ScaffoldError(f"fold={args['fold']!r} must be a whole number (the k of train{{k}}.json).")
    return args


def group_options(conf_dir: Path, group: str) -> list[str]:
    """A group's options, members' own (member_a/cascade_bifpn) included, sub-groups left out."""
    folder = conf_dir / group
    paths = [p.relative_to(folder).with_suffix("") for p in folder.rglob("*.yaml")]
    return sorted(p.as_posix() for p in paths if p.parts[0] not in SUB_GROUPS.get(group, set()))


def check_option(conf_dir: Path, group: str, option: str) -> None:
    valid = group_options(conf_dir, group)
    if option not in valid:
        raise ScaffoldError(f"{group}={option} is not an option of conf/{group}/. Valid: {', '.join(valid)}.")


def experiment_text(args: dict[str, str]) -> str:
    member, name = args["member"], args["name"]
    lines = [
        "# @package _global_",
        f"# python -m detect.train experiment={member}/{name}",
        f"# Written by detect.new_experiment on {time.strftime('%Y-%m-%d')}: say here what this experiment tries.",
        "defaults:  # group options this experiment picks",
        f"  - override /model: {args['model']}  # the model it starts from (conf/model/{args['model']}.yaml)",
        f"  - override /data: {args['data']}  # the data set (conf/data/{args['data']}.yaml)",
    ]
    if "schedule" in args:
        schedule = args["schedule"]
        lines.append(f"  - override /schedule: {schedule}  # the recipe (conf/schedule/{schedule}.yaml)")
    lines += [
        "",
        f"member: {member}  # runs are filed under outputs/{member}/",
        f"run_name: {name}  # folder under outputs/{member}/",
    ]
    if "fold" in args:
        lines += ["", "data:  # only what differs from the data option above",
                  f"  fold: {args['fold']}  # train{args['fold']}.json / val{args['fold']}.json"]
    lines += [
        "",
        "# Add only what this experiment changes, each key with a comment saying why, e.g.:",
        "# schedule:",
        "#   lr: 0.005  # 0.02 is for 16 images per batch; scaled to 4",
    ]
    return "\n".join(lines) + "\n"


def scaffold(argv: list[str]) -> Path:
    """Write the experiment file and return its path; ScaffoldError for bad input or an existing file."""
    args = {"model": "faster_rcnn", "data": "trash", **parse_args(argv)}
    conf_dir = Path(args.get("conf_dir", REPO_CONF)).expanduser()
    if not (conf_dir / "train.yaml").is_file():
        raise ScaffoldError(f"conf_dir={conf_dir} has no train.yaml: point conf_dir at the project's conf/ folder.")
    for group in ("model", "data", "schedule"):
        if group in args:
            check_option(conf_dir, group, args[group])
    path = conf_dir / "experiment" / args["member"] / f"{args['name']}.yaml"
    if path.exists():
        raise ScaffoldError(f"{path} already exists; it is not replaced. Pick another name=..., or edit that file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as f:  # "x": fails rather than replace a file created meanwhile
            f.write(experiment_text(args))
    except FileExistsError:
        raise ScaffoldError(f"{path} was created meanwhile; it is not replaced. Pick another name=....") from None
    return path


def new_experiment(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path = scaffold(argv)
    member_name = f"{path.parent.name}/{path.stem}"
    print(f"Wrote {path}\nEdit it, then run: python -m detect.train experiment={member_name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every command's (detect/cli.py): 2 for a wrong key or value (nothing is written)."""
    return run_command(new_experiment, argv)

if __name__ == "__main__":
    sys.exit(main())
