"""Plots of one set of detections against the ground truth: PR curves and confusion matrices.

The numbers come from detect.evaluation (coco_metrics.precision_recall_iou50, confusion.py); the
same numbers are written as CSV beside the PNGs, for a team that wants its own charts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from detect.evaluation.confusion import normalize_columns
from detect.plots import new_figure, save_figure

_MAX_LEGEND_CLASSES = 20  # more classes: grey curves without a legend, only the mean is named
_MAX_ANNOTATED_CLASSES = 30  # more classes: the confusion matrix cells carry no numbers


def plot_pr_curves(recall: np.ndarray, curves: dict[str, np.ndarray | None], folder: Path,
                   title: str = "") -> Path:
    """pr_curves.png: precision against recall at IoU 0.5 per class (legend: class and AP50, the
    curve's mean) and the mean curve over the classes with ground truth (its mean is bbox_mAP_50)."""
    fig = new_figure("pr_curves")
    ax = fig.subplots()
    scored = {name: curve for name, curve in curves.items() if curve is not None}
    many = len(scored) > _MAX_LEGEND_CLASSES
    for name, curve in scored.items():
        if many:
            ax.plot(recall, curve, color="grey", linewidth=0.5, alpha=0.6)
        else:
            ax.plot(recall, curve, linewidth=1, label=f"{name} {curve.mean():.3f}")
    if scored:
        mean_curve = np.mean(list(scored.values()), axis=0)
        ax.plot(recall, mean_curve, color="black", linewidth=3, label=f"all classes {mean_curve.mean():.3f} mAP50")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, as COCOeval)")
    ax.set_title(f"Precision-recall at IoU 0.5{title}")
    ax.grid(alpha=0.3)
    return save_figure(fig, folder, "pr_curves")


def write_pr_csv(recall: np.ndarray, curves: dict[str, np.ndarray | None], folder: Path) -> Path:
    """pr_curves_iou50.csv: one row per recall point, one column per class (empty: no ground truth)."""
    path = folder / "pr_curves_iou50.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["recall", *curves])
        for i, r in enumerate(recall):
            writer.writerow([f"{r:.2f}", *("" if c is None else repr(float(c[i])) for c in curves.values())])
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], folder: Path, normalized: bool,
                          score_thr: float, iou_thr: float, title: str = "") -> Path:
    """confusion_matrix.png (counts) or confusion_matrix_normalized.png (each true-class column sums
    to 1): rows predicted class, columns true class, last row/column background."""
    name = "confusion_matrix_normalized" if normalized else "confusion_matrix"
    values = normalize_columns(matrix) if normalized else matrix
    labels = [*class_names, "background"]
    fig = new_figure(name)
    ax = fig.subplots()
    shown = np.where(values > 0, values, np.nan)  # empty cells stay white
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, int(matrix.max())))
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalized else "boxes")
    if len(labels) <= _MAX_ANNOTATED_CLASSES + 1:
        peak = np.nanmax(shown) if np.isfinite(shown).any() else 1
        for row in range(values.shape[0]):
            for col in range(values.shape[1]):
                value = values[row, col]
                if value > 0:
                    text = f"{value:.2f}" if normalized else str(int(value))
                    ax.text(col, row, text, ha="center", va="center", fontsize=7,
                            color="white" if value > 0.6 * peak else "black")
    size = "small" if len(labels) <= _MAX_ANNOTATED_CLASSES + 1 else 4
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right", fontsize=size)
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=size)
    ax.set_xlabel("true class")
    ax.set_ylabel("predicted class")
    kind = "normalised per true class" if normalized else f"{int(matrix.sum())} boxes"
    ax.set_title(f"Confusion matrix ({kind}; score >= {score_thr:g}, IoU >= {iou_thr:g}){title}", fontsize="medium")
    return save_figure(fig, folder, name)


def write_confusion_csv(matrix: np.ndarray, class_names: list[str], folder: Path) -> Path:
    """confusion_matrix.csv: counts, a header row of true classes, each row led by its predicted class."""
    path = folder / "confusion_matrix.csv"
    labels = [*class_names, "background"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["predicted \\ true", *labels])
        for label, row in zip(labels, matrix.tolist()):
            writer.writerow([label, *row])
    return path


def read_confusion_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """The labels (classes + background) and the counts of a confusion_matrix.csv."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0][1:], np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.int64)


def read_pr_csv(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """The recall points and per-class precision of a pr_curves_iou50.csv."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    recall = np.array([float(row[0]) for row in rows[1:]])
    curves = {}
    for k, name in enumerate(names, start=1):
        column = [row[k] for row in rows[1:]]
        curves[name] = None if all(v == "" for v in column) else np.array([float(v) for v in column])
    return recall, curves

