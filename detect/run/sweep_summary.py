"""After a multirun (`-m`): a summary table of every job, and for k-fold sweeps a cross-validation report.

A Hydra callback (`hydra.callbacks.sweep_summary` in conf/train.yaml: `SweepSummary` here) calls
`summarize_sweep` when all jobs are done. It reads only the jobs' files (`.hydra/overrides.yaml`,
`summary.json`, `metrics.jsonl`), so it can also be run by hand on a finished sweep folder:
`python -m detect.sweep <sweep dir>`.
Imports no torch: it runs in the launching process.

Written into the sweep folder:
- `sweep_summary.md`: the overrides all jobs share, then per job the overrides that differ, status,
  best score of the monitored metric and its epoch; `sweep_summary.json`: the same per job, with
  every override of the job;
- `cv_report.md` / `.json` when jobs differ in `data.fold` only: per group of otherwise equal overrides,
  mean and std (population, over the folds that finished) of the best score, and of each class's AP50
  at each fold's best epoch.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from detect.errors import RunFilesError
from detect.run.paths import RunDir, SweepDir
from detect.run.records import read_metrics
from detect.run.summary import RunSummary, read_summary


def read_job(job_dir: Path) -> dict:
    run = RunDir(job_dir)
    overrides = list(OmegaConf.load(run.overrides_file)) if run.overrides_file.is_file() else []
    try:
        summary = read_summary(run.summary_file)
    except RunFilesError as err:
        summary = RunSummary(status=f"unreadable summary ({err})")
    status = summary.status if summary else "no summary (died before training started)"
    summary = summary or RunSummary()
    return {"job": job_dir.name, "dir": str(job_dir), "overrides": overrides, "status": status,
            "monitor": summary.monitor, "best_score": summary.best_score, "best_epoch": summary.best_epoch,
            "fold": summary.fold, "error": summary.error}


def jobs_of(sweep_dir: Path) -> list[dict]:
    return [read_job(d) for d in SweepDir(sweep_dir).job_dirs()]


def best_epoch_classwise_ap50(job: dict) -> dict[str, float | None]:
    if job["best_epoch"] is None:
        return {}
    record = read_metrics(RunDir(job["dir"]).metrics_file).val_of_epoch(job["best_epoch"])
    return {name: ap["AP50"] for name, ap in record["classwise"].items()} if record else {}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)} if values else {
        "mean": None, "std": None, "n": 0}


def common_overrides(jobs: list[dict]) -> list[str]:
    """Overrides every job shares (the sweep's fixed settings), in the first job's order."""
    if len(jobs) < 2:
        return []
    shared = set.intersection(*(set(j["overrides"]) for j in jobs))
    return [o for o in jobs[0]["overrides"] if o in shared]


def summary_table(jobs: list[dict]) -> str:
    """Markdown: the overrides all jobs share once, then one row per job with what differs."""
    monitor = next((j["monitor"] for j in jobs if j["monitor"]), "bbox_mAP_50")
    common = common_overrides(jobs)
    lines = [f"Common overrides: {' '.join(common)}", ""] if common else []
    lines += [f"| job | overrides | status | best {monitor} | epoch |", "| --- | --- | --- | ---: | ---: |"]
    for j in jobs:
        varying = [o for o in j["overrides"] if o not in common]
        lines.append(f"| {j['job']} | {' '.join(varying) or '(none)'} | {j['status']} | "
                     f"{_fmt(j['best_score'])} | {_fmt(j['best_epoch'])} |")
    return "\n".join(lines)


def cross_validation(jobs: list[dict]) -> list[dict]:
    """Groups of jobs equal but for data.fold, with mean/std of the best score and per-class AP50."""
    groups: dict[tuple, list[dict]] = {}
    for j in jobs:
        if any(o.startswith("data.fold=") for o in j["overrides"]):
            key = tuple(o for o in j["overrides"] if not o.startswith("data.fold="))
            groups.setdefault(key, []).append(j)
    reports = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        done = [j for j in members if j["status"] == "finished" and j["best_score"] is not None]
        per_class: dict[str, list[float]] = {}
        for j in done:
            for name, ap50 in best_epoch_classwise_ap50(j).items():
                per_class.setdefault(name, [])
                if ap50 is not None:
                    per_class[name].append(ap50)
        reports.append({
            "overrides": list(key), "folds": [j["fold"] for j in members],
            "folds_finished": [j["fold"] for j in done], "monitor": members[0]["monitor"] or "bbox_mAP_50",
            "best_score": _mean_std([j["best_score"] for j in done]),
            "classwise_AP50": {name: _mean_std(values) for name, values in per_class.items()},
        })
    return reports


def cv_markdown(reports: list[dict]) -> str:
    parts = []
    for r in reports:
        s = r["best_score"]
        parts.append(f"## {' '.join(r['overrides']) or '(no other overrides)'}\n\n"
                     f"folds {r['folds']}, finished {r['folds_finished']}: best {r['monitor']} "
                     f"mean {_fmt(s['mean'])} std {_fmt(s['std'])}\n\n| class | AP50 mean | AP50 std | folds |\n"
                     "| --- | ---: | ---: | ---: |\n"
                     + "\n".join(f"| {name} | {_fmt(c['mean'])} | {_fmt(c['std'])} | {c['n']} |"
                                 for name, c in r["classwise_AP50"].items()))
    return "\n\n".join(parts) + "\n"


def summarize_sweep(sweep_dir: str | Path) -> str:
    """Write the sweep summary (and the CV report when folds vary) into `sweep_dir`; return the text shown."""
    sweep_dir, files = Path(sweep_dir), SweepDir(sweep_dir)
    jobs = jobs_of(sweep_dir)
    table = summary_table(jobs)
    files.summary_file("md").write_text(table + "\n")
    files.summary_file("json").write_text(json.dumps(jobs, indent=2) + "\n")
    text = f"Sweep {sweep_dir}: {len(jobs)} jobs\n{table}"
    reports = cross_validation(jobs)
    if reports:
        files.cv_report_file("md").write_text(cv_markdown(reports))
        files.cv_report_file("json").write_text(json.dumps(reports, indent=2) + "\n")
        text += "\n\nCross-validation:\n" + "\n".join(
            f"  {' '.join(r['overrides']) or '(all)'}: {r['monitor']} mean {_fmt(r['best_score']['mean'])} "
            f"std {_fmt(r['best_score']['std'])} over folds {r['folds_finished']}" for r in reports)
        text += f"\n  per-class AP50: {files.cv_report_file('md')}"
    return text


# Jobs of this process's sweeps that did not finish: detect.train exits 1 when there are any.
unfinished_jobs: list[str] = []


class SweepSummary(Callback):
    """Hydra callback: summarize the sweep when every job has run, and note the jobs that did not finish."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            print(summarize_sweep(sweep_dir), flush=True)
            unfinished_jobs.extend(f"{job['dir']} ({job['status']})" for job in jobs_of(sweep_dir)
                                   if job["status"] != "finished")
