"""labels.png: what the training data holds — instances per class, box sizes, box shapes.

Counted from the COCO json as given (crowd boxes and boxes without area left out), so a team
sees at once the rare classes (few Battery boxes?) and whether the boxes are tiny or huge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from detect.plots import new_figure, save_figure


@dataclass
class LabelStatistics:
    class_names: list[str]
    instances: list[int]  # per class, in class order
    sizes: np.ndarray  # sqrt(width * height) of each box, pixels
    aspect_ratios: np.ndarray  # width / height of each box
    images: int


def label_statistics(coco: dict, class_names: list[str], category_ids: list[int]) -> LabelStatistics:
    """Count the boxes of `coco` (a COCO dict) per class; category_ids[k] is class k's json id."""
    index_of = {int(cat): k for k, cat in enumerate(category_ids)}
    instances = [0] * len(class_names)
    widths, heights = [], []
    for ann in coco.get("annotations", []):
        k = index_of.get(int(ann.get("category_id", -1)))
        bbox = ann.get("bbox") or []
        if k is None or ann.get("iscrowd", 0) or len(bbox) != 4:
            continue
        w, h = float(bbox[2]), float(bbox[3])
        if not (w > 0 and h > 0):
            continue
        instances[k] += 1
        widths.append(w)
        heights.append(h)
    w, h = np.asarray(widths), np.asarray(heights)
    return LabelStatistics(list(class_names), instances, np.sqrt(w * h), w / np.where(h > 0, h, 1),
                           len(coco.get("images", [])))


def plot_labels(stats: LabelStatistics, folder: Path, source: str = "") -> Path:
    """Three panels: instances per class (bars), box size histogram (log scale, with COCO's small /
    medium / large limits at 32 and 96 px), aspect ratio histogram (log scale)."""
    fig = new_figure("labels")
    counts_ax, size_ax, ratio_ax = fig.subplots(1, 3)
    positions = range(len(stats.class_names))
    bars = counts_ax.bar(positions, stats.instances, color="tab:blue")
    if len(stats.class_names) <= 30:
        counts_ax.bar_label(bars, fontsize=7)
    counts_ax.set_xticks(list(positions), labels=stats.class_names, rotation=60, ha="right",
                         fontsize="small" if len(stats.class_names) <= 30 else 4)
    counts_ax.set_ylabel("boxes")
    counts_ax.set_title(f"{sum(stats.instances)} boxes on {stats.images} images")

    if stats.sizes.size:
        low, high = max(stats.sizes.min(), 1.0), max(stats.sizes.max(), 2.0)
        size_ax.hist(stats.sizes, bins=np.geomspace(low, high * 1.001, 40), color="tab:green")
        size_ax.set_xscale("log")
        for limit, label in ((32, "small | medium"), (96, "medium | large")):
            size_ax.axvline(limit, color="black", linestyle=":", linewidth=1)
            size_ax.text(limit, 1.0, f" {label}", transform=size_ax.get_xaxis_transform(), rotation=90,
                         va="top", fontsize=7)
        ratio_low, ratio_high = stats.aspect_ratios.min(), stats.aspect_ratios.max()
        ratio_ax.hist(stats.aspect_ratios, bins=np.geomspace(ratio_low, ratio_high * 1.001 + 1e-9, 40),
                      color="tab:orange")
        ratio_ax.set_xscale("log")
        ratio_ax.axvline(1.0, color="black", linestyle=":", linewidth=1)
    else:
        for ax in (size_ax, ratio_ax):
            ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
    size_ax.set_xlabel("box size sqrt(width x height), pixels")
    size_ax.set_ylabel("boxes")
    size_ax.set_title("Box sizes")
    ratio_ax.set_xlabel("aspect ratio width / height")
    ratio_ax.set_title("Box shapes")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 30, 100, 0.5 instead of 3x10^1 ...
    for ax in (size_ax, ratio_ax):
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=6)
    fig.suptitle(f"Training labels{source}")
    return save_figure(fig, folder, "labels")
