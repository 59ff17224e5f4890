"""A run's plots and its one-page report, built from the run's files: no model, no GPU.

Reads metrics.jsonl, summary.json, .hydra/config.yaml, val_predictions.bbox.json (the best epoch's
detections on the val split) and the data's json files named in summary.json; writes plots/ (see
detect/plots/__init__.py) and report.md. The trainer calls `build_report` at the end of every
finished run; `python -m detect.report` does the same for any run, also one that failed or was stopped (what
its files allow: a run without an evaluation gets its loss curves and label statistics), with
other confusion-matrix thresholds, or after the data moved (data_root=/new/place).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from detect.errors import RunFilesError
from detect.run import RunDir, RunSummary, read_metrics, read_summary
from detect.run.paths import PLOTS_DIR, PREDICTIONS_FILE

log = logging.getLogger("detect")

DEFAULT_SCORE_THR = 0.25
DEFAULT_IOU_THR = 0.5
METRIC_COLUMNS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


def refresh_training_plots(run_dir: Path, monitor: str = "bbox_mAP_50") -> list[Path]:
    """losses.png, metrics.png, classwise_ap50.png from metrics.jsonl (after each evaluation)."""
    from detect.plots.training import plot_training_curves

    run = RunDir(run_dir)
    return plot_training_curves(run.metrics_file, run.plots, monitor)


@dataclass
class Report:
    path: Path  # report.md
    plots: list[Path] = field(default_factory=list)  # PNG and CSV files written
    skipped: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _load_json(path: Path) -> dict | list:
    return json.loads(path.read_text())


def _run_summary(run: RunDir) -> RunSummary:
    if not run.root.is_dir():
        raise RunFilesError(f"run={run} is not a folder. Give a run directory: outputs/<member>/<run_name>/<time> "
                            "(python -m detect.runs lists them).")
    try:
        summary = read_summary(run.summary_file)
    except RunFilesError as err:
        log.warning("%s; the report goes on without it", err)
        return _no_summary()
    if summary is None:
        if not run.metrics_file.is_file():
            raise RunFilesError(f"run={run} holds neither {run.summary_file.name} nor {run.metrics_file.name}: it "
                                "is not a run directory (python -m detect.runs lists them).")
        return _no_summary()
    return summary


def _no_summary() -> RunSummary:
    """A run without a (readable) summary.json: nothing known about it."""
    return RunSummary(status=None, epochs_done=None, world_size=None)


def _or_unknown(value) -> str:
    return "?" if value is None else str(value)


def _data_file(summary: RunSummary, split: str, data_root: str | None) -> Path | None:
    """The annotation file of `split` recorded by the trainer; with `data_root`, the same file name
    under the new root (the data moved)."""
    recorded = (summary.data_files or {}).get(split)
    if not recorded:
        return None
    path = Path(recorded)
    if data_root:
        root = summary.data_root
        relative = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
        path = Path(data_root).expanduser() / relative
    return path


def _classes(summary: RunSummary, val_records: list[dict]) -> tuple[list[str], list[int] | None]:
    """Class names and their json category ids, as the trainer recorded them; for a run without
    them, the names of the classwise table (ids then come from the val json by name)."""
    if summary.classes:
        return list(summary.classes), summary.category_ids
    for record in reversed(val_records):
        if record.get("classwise"):
            return list(record["classwise"]), None
    return [], None


def _ids_by_name(coco: dict, classes: list[str]) -> list[int]:
    by_name = {c["name"]: c["id"] for c in coco.get("categories", [])}
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise ValueError(f"the json has no category named {missing}")
    return [by_name[name] for name in classes]


def evaluation_plots(ground_truth: dict, detections: list[dict], classes: list[str], category_ids: list[int],
                     folder: Path, score_thr: float, iou_thr: float, title: str = "") -> list[Path]:
    """pr_curves.png + csv and both confusion matrices + csv, for `detections` on `ground_truth`."""
    from detect.evaluation.coco_metrics import precision_recall_iou50
    from detect.evaluation.confusion import confusion_matrix
    from detect.plots.evaluation import plot_confusion_matrix, plot_pr_curves, write_confusion_csv, write_pr_csv

    recall, curves = precision_recall_iou50(ground_truth, detections, classes, category_ids)
    matrix = confusion_matrix(ground_truth, detections, category_ids, score_thr, iou_thr)
    return [plot_pr_curves(recall, curves, folder, title), write_pr_csv(recall, curves, folder),
            plot_confusion_matrix(matrix, classes, folder, False, score_thr, iou_thr, title),
            plot_confusion_matrix(matrix, classes, folder, True, score_thr, iou_thr, title),
            write_confusion_csv(matrix, classes, folder)]


def build_report(run_dir: str | Path, score_thr: float | None = None, iou_thr: float | None = None,
                 data_root: str | None = None) -> Report:
    """Every plot and report.md of `run_dir`. Thresholds default to the run's runtime.plots values."""
    from detect.plots.labels import label_statistics, plot_labels

    run = RunDir(run_dir)
    run_dir = run.root
    summary = _run_summary(run)
    config = _run_config(run)
    plots_cfg = ((config.get("runtime") or {}).get("plots") or {})
    score_thr = float(plots_cfg.get("confusion_score_thr", DEFAULT_SCORE_THR) if score_thr is None else score_thr)
    iou_thr = float(plots_cfg.get("confusion_iou_thr", DEFAULT_IOU_THR) if iou_thr is None else iou_thr)
    monitor = summary.monitor or (config.get("runtime") or {}).get("monitor") or "bbox_mAP_50"
    folder = run.plots
    report = Report(run.report_file)

    metrics = read_metrics(run.metrics_file)
    report.plots += refresh_training_plots(run_dir, monitor)
    classes, category_ids = _classes(summary, metrics.val)

    predictions = run.predictions_file
    val_file = _data_file(summary, "val", data_root)
    best_epoch = summary.best_epoch
    if not predictions.is_file():
        report.skipped.append(f"PR curves and confusion matrix: no {PREDICTIONS_FILE} (the run has not "
                              "evaluated yet, or has no val split)")
    elif val_file is None or not val_file.is_file():
        report.skipped.append(f"PR curves and confusion matrix: the val annotation file {val_file or '(not recorded)'} "
                              "is not there (moved? give data_root=<folder holding it>)")
    else:
        try:
            ground_truth = _load_json(val_file)
            ids = category_ids or _ids_by_name(ground_truth, classes)
            title = f", epoch {best_epoch}" if best_epoch else ""
            report.plots += evaluation_plots(ground_truth, _load_json(predictions), classes, ids, folder,
                                             score_thr, iou_thr, title)
        except (OSError, ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
            report.skipped.append(f"PR curves and confusion matrix: {predictions.name} or {val_file} cannot be "
                                  f"used ({type(err).__name__}: {err})")

    train_file = _data_file(summary, "train", data_root)
    if train_file is None or not train_file.is_file():
        report.skipped.append(f"label statistics: the training annotation file {train_file or '(not recorded)'} "
                              "is not there (moved? give data_root=<folder holding it>)")
    elif classes:
        try:
            train = _load_json(train_file)
            ids = category_ids or _ids_by_name(train, classes)
            report.plots.append(plot_labels(label_statistics(train, classes, ids), folder, f": {train_file.name}"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            report.skipped.append(f"label statistics: {train_file} cannot be used ({type(err).__name__}: {err})")
    else:
        report.skipped.append("label statistics: the run recorded no class list")

    report.path.write_text(markdown_report(run_dir, summary, metrics.val, report, score_thr, iou_thr))
    return report


def _run_config(run: RunDir) -> dict:
    """The run's composed config (.hydra/config.yaml) as plain data; {} when absent or unreadable."""
    import yaml

    path = run.config_file
    try:
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value == -1 else f"{value:.3f}"
    return str(value)


def _git(git) -> str | None:
    if not isinstance(git, dict) or not git.get("commit"):
        return None
    return f"{git['commit'][:10]}{' (uncommitted changes)' if git.get('dirty') else ''}"


def markdown_report(run_dir: Path, summary: RunSummary, val: list[dict], report: Report, score_thr: float,
                    iou_thr: float) -> str:
    """report.md: what the run is, how it ended, its scores per epoch and per class, and the plots."""
    monitor = summary.monitor or "bbox_mAP_50"
    title = " / ".join(str(v) for v in (summary.member, summary.experiment) if v) or run_dir.name
    lines = [f"# Run report: {title}", "", f"Run directory: `{run_dir}`", ""]
    facts = [("status", summary.status), ("model", summary.model), ("data", summary.data),
             ("fold", summary.fold), ("epochs", f"{_or_unknown(summary.epochs_done)} of {_or_unknown(summary.epochs)}"),
             (f"best {monitor}", _cell(summary.best_score)), ("best epoch", summary.best_epoch),
             ("best checkpoint", summary.best_checkpoint), ("started", summary.started),
             ("finished", summary.finished), ("processes", summary.world_size),
             ("git commit", _git(summary.git)), ("error", summary.error)]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in facts if value not in (None, "")]
    if summary.overrides:
        lines += ["", "Command-line overrides: `" + " ".join(summary.overrides) + "`"]
    lines += ["", "## Scores per epoch", ""]
    if val:
        lines += ["| epoch | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
        for record in val:
            mark = " (best)" if record["epoch"] == summary.best_epoch else ""
            lines.append(f"| {record['epoch']}{mark} | " + " | ".join(_cell(record.get(k)) for k in METRIC_COLUMNS)
                         + " |")
        best = next((r for r in val if r["epoch"] == summary.best_epoch), val[-1])
        lines += ["", f"## Per class, epoch {best['epoch']}", "", "| class | AP | AP50 |", "|---|---|---|"]
        for name, ap in best.get("classwise", {}).items():
            lines.append(f"| {name} | {_cell((ap or {}).get('AP'))} | {_cell((ap or {}).get('AP50'))} |")
        lines.append(f"| **mean** | {_cell(best.get('bbox_mAP'))} | {_cell(best.get('bbox_mAP_50'))} |")
    else:
        lines.append("No evaluation in metrics.jsonl.")
    lines += ["", "## Plots", ""]
    captions = {
        "losses": "Losses and learning rate per iteration",
        "metrics": "mAP per epoch",
        "classwise_ap50": "AP50 per class at the latest evaluation",
        "pr_curves": "Precision-recall per class at IoU 0.5 (best epoch)",
        "confusion_matrix": f"Confusion matrix, best epoch (score >= {score_thr:g}, IoU >= {iou_thr:g})",
        "confusion_matrix_normalized": "Confusion matrix normalised per true class",
        "labels": "Training labels: instances per class, box sizes and shapes",
    }
    written = {p.stem for p in report.plots if p.suffix == ".png"}
    for name, caption in captions.items():
        if name in written:
            lines += [f"### {caption}", "", f"![{caption}]({PLOTS_DIR}/{name}.png)", ""]
    if report.skipped:
        lines += ["Not drawn:", ""] + [f"- {why}" for why in report.skipped] + [""]
    lines.append("Rebuild with `python -m detect.report run=" + str(run_dir) + "`.")
    return "\n".join(lines) + "\n"
