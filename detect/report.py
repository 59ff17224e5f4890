"""Rebuild a run's plots and its one-page report from the run's files: no model, no GPU.

    python -m detect.report run=outputs/me/cascade_rcnn_trash/2026-11-27_10-00-00
    python -m detect.report run=<run dir> confusion_score_thr=0.4 confusion_iou_thr=0.5

The work is detect.plots.report.build_report (the trainer calls it at the end of every run).
"""

from __future__ import annotations

import logging
import sys

from detect.cli import run_command
from detect.errors import UsageError
from detect.plots.report import build_report
from detect.run import RunDir

log = logging.getLogger("detect")

USAGE = """usage: python -m detect.report run=RUN_DIR [confusion_score_thr=0.25] [confusion_iou_thr=0.5] [data_root=DIR]

Rebuilds RUN_DIR/plots/ (losses, mAP per epoch, per-class AP50, PR curves, confusion matrices, label
statistics) and RUN_DIR/report.md from the run's files; needs no model and no GPU.
  run                  a run directory: outputs/<member>/<run_name>/<time> (python -m detect.runs lists them)
  confusion_score_thr  detections below this score are left out of the confusion matrix (default: the run's
                       runtime.plots.confusion_score_thr, else 0.25)
  confusion_iou_thr    IoU for a detection to match a ground-truth box (default: the run's value, else 0.5)
  data_root            the data's folder when it moved since training (default: where the run read it)
"""

OPTIONS = ("run", "confusion_score_thr", "confusion_iou_thr", "data_root")


def parse_args(argv: list[str]) -> dict:
    """key=value arguments (as detect.train's overrides), checked and typed."""
    options: dict = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise UsageError(f"Unknown argument {arg!r}: use key=value with key one of {list(OPTIONS)}.\n\n{USAGE}")
        options[key] = value
    if not options.get("run"):
        raise UsageError(f"run=<run dir> is required.\n\n{USAGE}")
    for key in ("confusion_score_thr", "confusion_iou_thr"):
        if key in options:
            try:
                options[key] = float(options[key])
            except ValueError:
                raise UsageError(f"{key}={options[key]} is not a number; give a value in [0, 1].") from None
            low_ok = options[key] >= 0 if key == "confusion_score_thr" else options[key] > 0
            if not (low_ok and options[key] <= 1):
                raise UsageError(f"{key}={options[key]} is out of range: give a value in "
                                  f"{'[0, 1]' if key == 'confusion_score_thr' else '(0, 1]'}.")
    return options


def main(argv: list[str]) -> int:
    """Exit codes as every command's (detect/cli.py): 2 for a bad argument, 1 when the run cannot be read."""
    return run_command(rebuild, argv)


def rebuild(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    options = parse_args(argv)
    report = build_report(options["run"], options.get("confusion_score_thr"), options.get("confusion_iou_thr"),
                          options.get("data_root"))
    pngs = [p for p in report.plots if p.suffix == ".png"]
    log.info("Wrote %d plots to %s and %s", len(pngs), RunDir(options["run"]).plots, report.path)
    for why in report.skipped:
        log.warning("Not drawn: %s", why)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
