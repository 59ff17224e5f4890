"""`summary.json`: what a run is and how it stands, as one typed record.

`RunSummary` is the only way to read or write the file: the trainer keeps it current through a
`SummaryFile` (status, best score, epochs done ...), and `detect.runs`, `detect.report`,
`detect.sweep` and the resume resolver read it with `read_summary`. Keys a newer or older version
wrote that this one does not know are kept as they are (`extra`), so nothing is lost on rewrite.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from detect.errors import RunFilesError
from detect.run.records import write_json_atomic


class Status(str, Enum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


# Fields that appear in summary.json only once they have a value (as before the summary was typed).
ONLY_WHEN_SET = ("cost", "finished", "restarted", "resumed_from", "error", "nonfinite_skipped", "wandb_run_id",
                 "last_checkpoint")


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class RunSummary:
    """The fields of summary.json. Times are local 'YYYY-mm-dd HH:MM:SS'; paths are strings."""

    status: str = Status.RUNNING.value  # running | finished | failed | interrupted
    member: str | None = None
    experiment: str | None = None  # the run name (experiment=... sets it)
    model: str | None = None
    data: str | None = None
    fold: int | None = None
    run_dir: str | None = None
    monitor: str | None = None  # the metric that picks the best checkpoint
    best_score: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    epochs_done: int = 0
    epochs: int | None = None
    seed: int | None = None
    world_size: int = 1
    started: str | None = None
    finished: str | None = None
    restarted: list[str] = field(default_factory=list)  # start time of every resumed session
    resumed_from: str | None = None
    error: str | None = None  # "ErrorType: message" of a failed run
    nonfinite_skipped: int | None = None  # steps skipped for a NaN/inf loss (runtime.skip_nonfinite)
    weights: str | None = None  # which weights the scores and checkpoints hold: "ema" (schedule.ema) or "raw"
    stopped_early: str | None = None  # why the run ended before its last epoch (runtime.early_stopping)
    gpu_mem_peak_mb: float | None = None  # the most GPU memory tensors held in any epoch (MiB); null on CPU
    cost: dict[str, Any] | None = None  # params_m, gflops, latency_ms, size, device, threads (detect/engine/cost.py)
    wandb_run_id: str | None = None
    # what detect.report needs to draw PR curves and the confusion matrix without the model
    classes: list[str] | None = None
    category_ids: list[int] | None = None
    data_root: str | None = None
    data_files: dict[str, str] | None = None  # split -> annotation file
    # provenance: the command line, the code and the libraries
    overrides: list[str] = field(default_factory=list)
    git: dict[str, Any] | None = None  # {"commit": sha, "dirty": bool}
    versions: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        known = {f.name for f in fields(cls)} - {"extra"}
        summary = cls(**{k: v for k, v in data.items() if k in known})
        summary.extra = {k: v for k, v in data.items() if k not in known}
        if summary.restarted is None:
            summary.restarted = []
        if summary.overrides is None:
            summary.overrides = []
        return summary

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        data["status"] = str(data["status"])
        for key in ONLY_WHEN_SET:  # written once they happen: a fresh run's summary stays short
            if data[key] in (None, []):
                del data[key]
        return {**extra, **data}

    @property
    def git_commit(self) -> str | None:
        return self.git.get("commit") if isinstance(self.git, dict) else None


def update_summary_file(path: Path, **changes: Any) -> None:
    """Change fields of an existing summary.json (detect.profile adds a run's cost), atomically."""
    summary = read_summary(path)
    if summary is None:
        raise RunFilesError(f"{path} is missing: no run summary to update.")
    for key, value in changes.items():
        if key == "extra" or not hasattr(summary, key):
            raise AttributeError(f"RunSummary has no field {key!r}")
        setattr(summary, key, value)
    write_json_atomic(Path(path), summary.to_dict())


def read_summary(path: Path) -> RunSummary | None:
    """The summary at `path` (a summary.json file); None when there is none. A file that is not a
    JSON object with a status (half-written, damaged) raises RunFilesError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFilesError(f"{path} is not valid JSON ({err}); the run's other files are intact.") from err
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise RunFilesError(f"{path} is not a run summary (no status).")
    return RunSummary.from_dict(data)


class SummaryFile:
    """Keeps summary.json current: every `update` rewrites it atomically.

    A run resumed in its own folder keeps its summary: the first start time stays, each restart is
    added to `restarted`, and the end state of the earlier session (error, finished) is cleared.
    `enabled=False` (DDP ranks other than 0) keeps the fields in memory and writes nothing."""

    def __init__(self, path: Path, summary: RunSummary, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        try:
            earlier = read_summary(self.path) if enabled else None
        except RunFilesError:
            earlier = None  # a damaged summary is rewritten whole
        if earlier is not None:
            merged = RunSummary.from_dict({**earlier.to_dict(), **_set_fields(summary)})
            merged.error, merged.finished = summary.error, summary.finished
            if earlier.started:
                merged.started = earlier.started
                merged.restarted = [*earlier.restarted, summary.started]
            summary = merged
        summary.status = Status.RUNNING.value
        self.data = summary
        self.save()

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            if key == "extra" or not hasattr(self.data, key):
                raise AttributeError(f"RunSummary has no field {key!r}")
            setattr(self.data, key, str(value) if isinstance(value, Status) else value)
        self.save()

    def end(self, status: Status, error: str | None = None) -> None:
        """The run ended: status, end time and (for a failure) the error."""
        changes: dict[str, Any] = {"status": status, "finished": now()}
        if error is not None:
            changes["error"] = error
        self.update(**changes)

    def save(self) -> None:
        if self.enabled:
            write_json_atomic(self.path, self.data.to_dict())


def _set_fields(summary: RunSummary) -> dict:
    """The fields of a fresh summary that carry information (defaults left out), so a resumed run's
    earlier values (best score, epochs done, ...) are kept unless this session sets them."""
    defaults = RunSummary()
    out = {}
    for f in fields(RunSummary):
        value = getattr(summary, f.name)
        if f.name != "extra" and value != getattr(defaults, f.name):
            out[f.name] = value
    return out
