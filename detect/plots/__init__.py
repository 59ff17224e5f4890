"""PNG plots of a run, written into `<run dir>/plots/` (matplotlib, no display needed).

After each evaluation (detect.plots.training):  losses.png, metrics.png, classwise_ap50.png
At the end of a run (detect.report builds them): pr_curves.png (+ pr_curves_iou50.csv),
confusion_matrix.png, confusion_matrix_normalized.png (+ confusion_matrix.csv) from the best
epoch's val predictions (detect.plots.evaluation), and labels.png from the training data
(detect.plots.labels).

Every figure has a fixed size in pixels (SIZES), so a plot of 3 classes and one of 80 have the same
frame. Figures are made with matplotlib's object API (no pyplot: no global state, no GUI backend)
and written atomically, so a reader never sees half a PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

DPI = 100
# name -> (width, height) in pixels
SIZES = {
    "losses": (1200, 800),
    "metrics": (900, 600),
    "classwise_ap50": (900, 700),
    "pr_curves": (900, 800),
    "confusion_matrix": (1000, 900),
    "confusion_matrix_normalized": (1000, 900),
    "labels": (1500, 500),
}


def new_figure(name: str):
    """An empty matplotlib Figure of the size SIZES[name]."""
    from matplotlib.figure import Figure

    width, height = SIZES[name]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def save_figure(fig, folder: Path, name: str) -> Path:
    """Write `fig` to folder/<name>.png (atomically) and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = folder / f".{name}.png.tmp"
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)
    return path
