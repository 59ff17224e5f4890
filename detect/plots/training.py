"""Curves from a run's metrics.jsonl: losses and lr per iteration, mAP per epoch, per-class AP50.

Refreshed by the trainer after every evaluation, and by `python -m detect.report`.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from detect.plots import new_figure, save_figure
from detect.run import read_metrics


def _number(value) -> float:
    """A metric value for plotting: None (JSON null) and COCO's -1 ("nothing to score") become NaN."""
    return math.nan if value is None or value == -1 else float(value)


def plot_losses(train: list[dict], folder: Path) -> Path:
    """losses.png: each loss term and the total (top), the learning rate (bottom), per iteration."""
    fig = new_figure("losses")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    iters = [r["iter"] for r in train]
    terms = sorted({k for r in train for k in r if k.startswith("loss_")})
    for key in terms:
        top.plot(iters, [_number(r.get(key)) for r in train], label=key, linewidth=1)
    if train:
        top.plot(iters, [_number(r.get("loss")) for r in train], label="loss (total)", color="black", linewidth=2)
        top.legend(loc="upper right", fontsize="small", ncol=2)
    else:
        top.text(0.5, 0.5, "no training steps logged yet", ha="center", va="center", transform=top.transAxes)
    top.set_ylabel("loss (mean over the log interval)")
    top.set_title("Training losses")
    top.grid(alpha=0.3)
    bottom.plot(iters, [r.get("lr", math.nan) for r in train], color="tab:purple")
    bottom.set_ylabel("lr")
    bottom.set_xlabel("iteration")
    bottom.grid(alpha=0.3)
    return save_figure(fig, folder, "losses")


def plot_metrics(val: list[dict], folder: Path, monitor: str = "bbox_mAP_50") -> Path:
    """metrics.png: bbox_mAP, bbox_mAP_50 and bbox_mAP_75 per epoch; the best `monitor` marked."""
    fig = new_figure("metrics")
    ax = fig.subplots()
    epochs = [r["epoch"] for r in val]
    for key, style in (("bbox_mAP", "-o"), ("bbox_mAP_50", "-s"), ("bbox_mAP_75", "--^")):
        ax.plot(epochs, [_number(r.get(key)) for r in val], style, label=key)
    scores = [(_number(r.get(monitor)), r["epoch"]) for r in val]
    scores = [(s, e) for s, e in scores if not math.isnan(s)]
    if scores:
        best = max(s for s, _ in scores)
        epoch = min(e for s, e in scores if s == best)  # the trainer keeps the earliest of equal scores
        ax.plot([epoch], [best], "*", color="gold", markersize=18, markeredgecolor="black",
                label=f"best {monitor} {best:.3f} (epoch {epoch})")
    if not val:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.set_title("Validation mAP per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return save_figure(fig, folder, "metrics")


def plot_classwise_ap50(val: list[dict], folder: Path) -> Path:
    """classwise_ap50.png: AP50 of every class at the latest evaluation, best at the top; the mean
    (bbox_mAP_50) as a line. A class without ground truth in the val split is listed last as n/a."""
    fig = new_figure("classwise_ap50")
    ax = fig.subplots()
    if not val:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, folder, "classwise_ap50")
    latest = val[-1]
    rows = [(name, ap.get("AP50") if ap else None) for name, ap in latest.get("classwise", {}).items()]
    scored = sorted([(v, n) for n, v in rows if v is not None], reverse=True)
    names = [n for _, n in scored] + [f"{n} (n/a)" for n, v in rows if v is None]
    values = [v for v, _ in scored] + [0.0 for _, v in rows if v is None]
    positions = list(range(len(names)))
    bars = ax.barh(positions, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" if not n.endswith("(n/a)") else "" for v, n in zip(values, names)],
                 padding=3, fontsize="small")
    ax.set_yticks(positions, labels=names, fontsize="small" if len(names) <= 30 else 5)
    ax.invert_yaxis()
    mean = _number(latest.get("bbox_mAP_50"))
    if not math.isnan(mean):
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"bbox_mAP_50 {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("AP50")
    ax.set_title(f"AP50 per class, epoch {latest['epoch']}")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, folder, "classwise_ap50")


def plot_training_curves(metrics_file: Path, folder: Path, monitor: str = "bbox_mAP_50") -> list[Path]:
    """All three curve plots from metrics.jsonl."""
    metrics = read_metrics(metrics_file)
    return [plot_losses(metrics.train, folder), plot_metrics(metrics.val, folder, monitor),
            plot_classwise_ap50(metrics.val, folder)]
