"""Leaderboard of every run under a root folder: what `python -m detect.runs` prints.

A run dir is any folder under the root that holds `summary.json`, or a training config
(`.hydra/config.yaml` with a `schedule:` section, unlike detect.test's result folders):
`<member>/<run_name>/<time>/` for single runs (run_name may contain slashes) and
`<member>/<run_name>/multirun_<time>/<job>/` for sweep jobs. Reads only those files (no torch).

Columns: member, experiment (the run_name), model, data, fold, status, epochs (done/total),
best <monitor> (4 decimals; the monitored metric, `runtime.monitor`), best epoch, started, and the
run dir as you can paste it into `detect.test run=...` or `--diff` (the root as given, joined with
the folder: `outputs/alice/...`; `--csv` gives it absolute, so scripts can use it from anywhere).

Status:
- `finished`, `failed`, `interrupted`: as summary.json says;
- `running`: summary.json says running and train.log, metrics.jsonl or summary.json changed within
  the last `--stale-minutes` (default 30);
- `stale`: summary.json says running but nothing was written for longer: the process probably died
  (kill -9, node lost); resume it with `runtime.resume_from=<run dir>`;
- `no-summary`: `.hydra/config.yaml` but no summary.json: the run died before the trainer started
  (or started a few seconds ago); model/data/fold/epochs then come from the config;
- `unreadable`: summary.json is not valid JSON (half-written or damaged); the run is still listed.
Member and experiment come from summary.json, else from the folder names.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import yaml

from detect.errors import RunFilesError
from detect.run.paths import BROWSE_LOG, RunDir
from detect.run.summary import read_summary

TABLE_COLUMNS = ["member", "experiment", "model", "data", "fold", "status", "epochs", "best", "best_epoch",
                 "params_m", "gflops", "latency_ms", "started", "run_dir"]
CSV_COLUMNS = ["member", "experiment", "model", "data", "fold", "status", "epochs_done", "epochs", "monitor",
               "best_score", "best_epoch", "params_m", "gflops", "latency_ms", "cost_device", "started", "finished",
               "seed", "git_commit", "error", "run_dir"]
COST_COLUMNS = ("params_m", "gflops", "latency_ms")  # from summary.json's cost (detect/engine/cost.py)
STATUSES = ["running", "stale", "finished", "failed", "interrupted", "no-summary", "unreadable"]
# libyaml's parser where PyYAML was built with it: a composed config takes 2 ms instead of 15, which is
# most of the time over 1,000 run dirs when some have no summary.json (benchmarks/scale.py).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(path: Path):
    try:
        return yaml.load(path.read_text(), Loader=_YAML_LOADER)  # safe: plain data, no python objects
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under root holding summary.json, or a training config without one, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        run = RunDir(here)
        if run.summary_file.name in filenames or (is_training_config(run.config_file)
                                                  and BROWSE_LOG not in filenames):
            found.append(here)
            dirnames.clear()  # nothing below a run dir is a run (checkpoints/, detect.test's test/ folders)
    return sorted(found)


def is_training_config(path: Path) -> bool:
    """A composed training config has `schedule:`; detect.test's result folders (outputs/<member>/test/...)
    have a .hydra/config.yaml too, but are not runs. An unparsable config counts as a run: better shown."""
    if not path.is_file():
        return False
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):  # unreadable or damaged: shown, as an unparsable one
        return True
    if text.startswith("schedule:") or "\nschedule:" in text:  # a top-level key: no need to parse it here
        return True
    try:
        cfg = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        return True
    return not isinstance(cfg, dict) or "schedule" in cfg


def names_from_path(run_dir: Path, root: Path) -> tuple[str, str]:
    """(member, experiment) from `<member>/<run_name...>/<time>` or `.../multirun_<time>/<job>`."""
    parts = run_dir.relative_to(root).parts
    if len(parts) >= 2 and parts[-1].isdigit() and parts[-2].startswith("multirun_"):
        parts = parts[:-1]  # a sweep job: drop the job number too
    return (parts[0] if parts else "-"), "/".join(parts[1:-1]) or "-"


def live_status(run_dir: Path, stale_minutes: float, now: float) -> str:
    """`running` if one of the run's files changed recently, else `stale` (a dead process never
    rewrites summary.json, so its last word stays 'running')."""
    mtimes = [path.stat().st_mtime for path in RunDir(run_dir).files_written_while_running() if path.is_file()]
    return "running" if mtimes and now - max(mtimes) <= stale_minutes * 60 else "stale"


def read_run(run_dir: Path, root: Path, stale_minutes: float = 30, now: float | None = None) -> dict:
    """One leaderboard row: the CSV_COLUMNS fields plus `rel` (run dir relative to root)."""
    now = time.time() if now is None else now
    member, experiment = names_from_path(run_dir, root)
    row = dict.fromkeys(CSV_COLUMNS)
    row.update(member=member, experiment=experiment, run_dir=str(run_dir.resolve()),
               rel=str(run_dir.relative_to(root)), shown=str(run_dir))
    run = RunDir(run_dir)
    if not run.summary_file.is_file():
        # Hydra wrote the config but the trainer never wrote a summary: take what the config knows.
        config_file = run.config_file
        cfg = flatten(_load_yaml(config_file) or {})
        row.update(status="no-summary", model=cfg.get("model.name"), data=cfg.get("data.name"),
                   fold=cfg.get("data.fold"), epochs=cfg.get("schedule.epochs"),
                   started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(config_file.stat().st_mtime)))
        return row
    try:
        summary = read_summary(run.summary_file)
    except RunFilesError:
        row["status"] = "unreadable"
        return row
    row.update({key: getattr(summary, key) for key in CSV_COLUMNS
                if key not in ("run_dir", "git_commit", "cost_device", *COST_COLUMNS)})
    cost = summary.cost if isinstance(summary.cost, dict) else {}  # older runs have none: a dash
    row.update({key: cost.get(key) for key in COST_COLUMNS}, cost_device=cost.get("device"))
    row["member"] = summary.member or member
    row["experiment"] = summary.experiment or experiment
    row["git_commit"] = summary.git_commit
    if row["status"] == "running":
        row["status"] = live_status(run_dir, stale_minutes, now)
    return row


def read_runs(root: Path, stale_minutes: float = 30) -> list[dict]:
    now = time.time()
    return [read_run(d, root, stale_minutes, now) for d in find_run_dirs(root)]


def filter_runs(rows: list[dict], member: str | None = None, experiment: str | None = None,
                status: str | None = None) -> list[dict]:
    """Member and experiment match exactly or as a glob (`cascade_*`); status exactly."""
    def keep(row: dict) -> bool:
        return ((member is None or fnmatch.fnmatchcase(str(row["member"]), member))
                and (experiment is None or fnmatch.fnmatchcase(str(row["experiment"]), experiment))
                and (status is None or row["status"] == status))
    return [r for r in rows if keep(r)]


def sort_runs(rows: list[dict], column: str = "best", reverse: bool = False) -> list[dict]:
    """Scores sort best first, every other column ascending; `reverse` flips that. Rows without a
    value (no score yet, unreadable summary) always come last."""
    field = {"best": "best_score", "epochs": "epochs_done", "run_dir": "rel"}.get(column, column)

    def key(row: dict) -> tuple:
        # Numbers before text, so a stray type in someone's summary.json cannot break the sort.
        value = row[field]
        return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))

    present = [r for r in rows if r[field] is not None]
    missing = [r for r in rows if r[field] is None]
    return sorted(present, key=key, reverse=(column == "best") != reverse) + missing


def _text(value) -> str:
    return "-" if value is None else str(value)


def _number(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def format_table(rows: list[dict]) -> str:
    """Aligned plain text, one line per run."""
    monitors = {r["monitor"] for r in rows if r["monitor"]}
    same_monitor = len(monitors) <= 1

    def best(r: dict) -> str:
        score = r["best_score"]
        text = f"{score:.4f}" if isinstance(score, (int, float)) else _text(score)
        return text if same_monitor or score is None else f"{text} ({r['monitor']})"

    header = ["member", "experiment", "model", "data", "fold", "status", "epochs",
              f"best {monitors.pop() if len(monitors) == 1 else 'score'}", "best epoch", "params M", "GFLOPs",
              "ms/img", "started", "run dir"]
    lines = [[_text(r["member"]), _text(r["experiment"]), _text(r["model"]), _text(r["data"]), _text(r["fold"]),
              r["status"], f"{_text(r['epochs_done'])}/{_text(r['epochs'])}", best(r), _text(r["best_epoch"]),
              _number(r.get("params_m"), 1), _number(r.get("gflops"), 1), _number(r.get("latency_ms"), 0),
              _text(r["started"]), r.get("shown", r["rel"])] for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def plot_cost(rows: list[dict], path: Path) -> int:
    """mAP (the runs' monitor) against GFLOPs and against latency, one point per run with a cost and a
    score, labelled by experiment; one PNG. Returns the number of runs drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in rows if isinstance(r.get("best_score"), (int, float))
             and isinstance(r.get("gflops"), (int, float)) and isinstance(r.get("latency_ms"), (int, float))]
    monitors = sorted({str(r["monitor"]) for r in drawn if r["monitor"]})
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for axis, key, label in ((axes[0], "gflops", "GFLOPs per image"), (axes[1], "latency_ms", "latency, ms per image")):
        for r in drawn:
            axis.scatter(r[key], r["best_score"], s=30)
            axis.annotate(f"{r['experiment']}", (r[key], r["best_score"]), fontsize=8, xytext=(4, 3),
                          textcoords="offset points")
        axis.set_xlabel(label)
        axis.set_ylabel(" / ".join(monitors) or "best score")
        axis.grid(alpha=0.3)
    devices = sorted({str(r.get("cost_device")) for r in drawn})
    axes[1].set_title(f"measured on {', '.join(devices)}" if devices else "no run has a cost yet", fontsize=9)
    axes[0].set_title(f"{len(drawn)} runs (runs without a cost or a score are left out)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return len(drawn)


def write_csv(rows: list[dict], out: TextIO | None = None) -> None:
    """All CSV_COLUMNS, full-precision scores, absolute run dirs; empty cell for a missing value."""
    writer = csv.DictWriter(out or sys.stdout, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def flatten(node, prefix: str = "") -> dict:
    """{"a.b.c": leaf}; lists are leaves (compared whole)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _same(a, b) -> bool:
    # Compare as JSON text: 1, 1.0, true and "1" are different settings even where Python says ==.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def config_diff(run_a: Path, run_b: Path) -> str:
    """Keys of `.hydra/config.yaml` whose values differ (`key: a -> b`, `(absent)` on one side),
    then both override lists. Values are compared as written: an interpolation such as
    `${data.min_size}` stays unresolved, so a difference shows once, at the key that set it."""
    configs, overrides = [], []
    for run in (run_a, run_b):
        configs.append(flatten(_load_yaml(RunDir(run).config_file) or {}))
        overrides.append(_load_yaml(RunDir(run).overrides_file) or [])
    a, b = configs

    def shown(flat: dict, key: str) -> str:
        return _value(flat[key]) if key in flat else "(absent)"

    changed = [f"  {key}: {shown(a, key)} -> {shown(b, key)}" for key in sorted(a.keys() | b.keys())
               if key not in a or key not in b or not _same(a[key], b[key])]
    return "\n".join([f"A: {run_a}", f"B: {run_b}", "config (.hydra/config.yaml), keys that differ:",
                      *(changed or ["  (none)"]),
                      f"overrides A: {' '.join(map(str, overrides[0])) or '(none)'}",
                      f"overrides B: {' '.join(map(str, overrides[1])) or '(none)'}"])
