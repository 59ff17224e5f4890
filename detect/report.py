"""Rebuild a run's plots and its one-page report from the run's files: no model, no GPU.

    python -m detect.report run=outputs/me/cascade_rcnn_trash/2026-11-27_10-00-00
    python -m detect.report run=<run dir> confusion_score_thr=0.4 confusion_iou_thr=0.5

Reads metrics.jsonl, summary.json, .hydra/config.yaml, val_predictions.bbox.json (the best epoch's
detections on the val split) and the data's json files named in summary.json; writes plots/ (see
detect/plots/__init__.py) and report.md. The trainer calls `build_report` at the end of every
finished run; this command does the same for any run, also one that failed or was stopped (what
its files allow: a run without an evaluation gets its loss curves and label statistics), with
other confusion-matrix thresholds, or after the data moved (data_root=/new/place).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from detect.errors import ConfigError, DetectError

log = logging.getLogger("detect")

PLOTS_DIR = "plots"
PREDICTIONS_FILE = "val_predictions.bbox.json"  # the best epoch's detections on the val split
REPORT_FILE = "report.md"
DEFAULT_SCORE_THR = 0.25
DEFAULT_IOU_THR = 0.5
METRIC_COLUMNS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


def refresh_training_plots(run_dir: Path, monitor: str = "bbox_mAP_50") -> list[Path]:
    """losses.png, metrics.png, classwise_ap50.png from metrics.jsonl (after each evaluation)."""
    from detect.plots.training import plot_training_curves

    return plot_training_curves(Path(run_dir) / "metrics.jsonl", Path(run_dir) / PLOTS_DIR, monitor)


@dataclass
class Report:
    path: Path  # report.md
    plots: list[Path] = field(default_factory=list)  # PNG and CSV files written
    skipped: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _load_json(path: Path) -> dict | list:
    return json.loads(path.read_text())


def _run_summary(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise ConfigError(f"run={run_dir} is not a folder. Give a run directory: outputs/<member>/<run_name>/<time> "
                          "(python -m detect.runs lists them).")
    path = run_dir / "summary.json"
    if not path.is_file():
        if not (run_dir / "metrics.jsonl").is_file():
            raise ConfigError(f"run={run_dir} holds neither summary.json nor metrics.jsonl: it is not a run "
                              "directory (python -m detect.runs lists them).")
        return {}
    try:
        return _load_json(path)
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); the report goes on without it", path, err)
        return {}


def _data_file(summary: dict, split: str, data_root: str | None) -> Path | None:
    """The annotation file of `split` recorded by the trainer; with `data_root`, the same file name
    under the new root (the data moved)."""
    recorded = (summary.get("data_files") or {}).get(split)
    if not recorded:
        return None
    path = Path(recorded)
    if data_root:
        root = summary.get("data_root")
        relative = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
        path = Path(data_root).expanduser() / relative
    return path


def _classes(summary: dict, val_records: list[dict]) -> tuple[list[str], list[int] | None]:
    """Class names and their json category ids, as the trainer recorded them; for a run without
    them, the names of the classwise table (ids then come from the val json by name)."""
    if summary.get("classes"):
        return list(summary["classes"]), summary.get("category_ids")
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
    from detect.plots.training import read_metrics

    run_dir = Path(run_dir)
    summary = _run_summary(run_dir)
    config = _run_config(run_dir)
    plots_cfg = ((config.get("runtime") or {}).get("plots") or {})
    score_thr = float(plots_cfg.get("confusion_score_thr", DEFAULT_SCORE_THR) if score_thr is None else score_thr)
    iou_thr = float(plots_cfg.get("confusion_iou_thr", DEFAULT_IOU_THR) if iou_thr is None else iou_thr)
    monitor = summary.get("monitor") or (config.get("runtime") or {}).get("monitor") or "bbox_mAP_50"
    folder = run_dir / PLOTS_DIR
    report = Report(run_dir / REPORT_FILE)

    metrics = read_metrics(run_dir / "metrics.jsonl")
    report.plots += refresh_training_plots(run_dir, monitor)
    classes, category_ids = _classes(summary, metrics.val)

    predictions = run_dir / PREDICTIONS_FILE
    val_file = _data_file(summary, "val", data_root)
    best_epoch = summary.get("best_epoch")
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


def _run_config(run_dir: Path) -> dict:
    """The run's composed config (.hydra/config.yaml) as plain data; {} when absent or unreadable."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
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


def markdown_report(run_dir: Path, summary: dict, val: list[dict], report: Report, score_thr: float,
                    iou_thr: float) -> str:
    """report.md: what the run is, how it ended, its scores per epoch and per class, and the plots."""
    monitor = summary.get("monitor", "bbox_mAP_50")
    title = " / ".join(str(summary[k]) for k in ("member", "experiment") if summary.get(k)) or run_dir.name
    lines = [f"# Run report: {title}", "", f"Run directory: `{run_dir}`", ""]
    facts = [("status", summary.get("status")), ("model", summary.get("model")), ("data", summary.get("data")),
             ("fold", summary.get("fold")), ("epochs", f"{summary.get('epochs_done', '?')} of "
                                                     f"{summary.get('epochs', '?')}"),
             (f"best {monitor}", _cell(summary.get("best_score"))), ("best epoch", summary.get("best_epoch")),
             ("best checkpoint", summary.get("best_checkpoint")), ("started", summary.get("started")),
             ("finished", summary.get("finished")), ("processes", summary.get("world_size")),
             ("git commit", _git(summary.get("git"))), ("error", summary.get("error"))]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in facts if value not in (None, "")]
    if summary.get("overrides"):
        lines += ["", "Command-line overrides: `" + " ".join(summary["overrides"]) + "`"]
    lines += ["", "## Scores per epoch", ""]
    if val:
        lines += ["| epoch | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
        for record in val:
            mark = " (best)" if record["epoch"] == summary.get("best_epoch") else ""
            lines.append(f"| {record['epoch']}{mark} | " + " | ".join(_cell(record.get(k)) for k in METRIC_COLUMNS)
                         + " |")
        best = next((r for r in val if r["epoch"] == summary.get("best_epoch")), val[-1])
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
            raise ConfigError(f"Unknown argument {arg!r}: use key=value with key one of {list(OPTIONS)}.\n\n{USAGE}")
        options[key] = value
    if not options.get("run"):
        raise ConfigError(f"run=<run dir> is required.\n\n{USAGE}")
    for key in ("confusion_score_thr", "confusion_iou_thr"):
        if key in options:
            try:
                options[key] = float(options[key])
            except ValueError:
                raise ConfigError(f"{key}={options[key]} is not a number; give a value in [0, 1].") from None
            low_ok = options[key] >= 0 if key == "confusion_score_thr" else options[key] > 0
            if not (low_ok and options[key] <= 1):
                raise ConfigError(f"{key}={options[key]} is out of range: give a value in "
                                  f"{'[0, 1]' if key == 'confusion_score_thr' else '(0, 1]'}.")
    return options


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = parse_args(argv)
        report = build_report(options["run"], options.get("confusion_score_thr"), options.get("confusion_iou_thr"),
                              options.get("data_root"))
    except DetectError as err:
        log.error("%s", err)
        return 1
    pngs = [p for p in report.plots if p.suffix == ".png"]
    log.info("Wrote %d plots to %s and %s", len(pngs), Path(options["run"]) / PLOTS_DIR, report.path)
    for why in report.skipped:
        log.warning("Not drawn: %s", why)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
