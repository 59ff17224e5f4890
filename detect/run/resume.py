"""The resume plan, in one place: where a run writes and which checkpoint it continues from.

runtime.resume_from:
- null: a new run folder `<run_base>/<time>`, nothing loaded;
- `<run dir>` (or its checkpoints/ folder, or its checkpoints/last.pth): continue in that folder
  from its last.pth;
- `auto`: the newest unfinished run of this member and run_name launched with the same overrides
  (resume_from aside) that holds a last.pth, continued in place; else a new folder, nothing loaded;
- any other checkpoint (epoch_N.pth, a loose .pth): a new folder, continued from that file, so the
  later checkpoints of its run are never overwritten.

`run_dir_for` answers "where" (Hydra's run dir resolver calls it before the run starts) and
`checkpoint_to_resume` answers "from what" (the trainer calls it in that folder): both read the
same rules below. Imports no torch.
Naming creates nothing: detect.train claims the new folder (detect.run.launch) before Hydra starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from detect.errors import RunFilesError
from detect.run.paths import RunDir, is_last_checkpoint, run_dir_of_checkpoint
from detect.run.summary import Status, read_summary

AUTO = "auto"
STAMP_ENV = "DETECT_RUN_STAMP"  # under torchrun: rank 0's time stamp, so every process names the same folder
RESUME_KEY = "runtime.resume_from"
# What the last run_dir_for call decided: ("resume", folder) to continue a run in place, or ("new", folder).
# detect.run.launch reads it: a "new" folder that exists already was taken by another launch meanwhile.
last_decision: tuple[str, str] | None = None


def _value(resume_from) -> str:
    return "" if resume_from in (None, "", "None", "null") else str(resume_from)


def _without_resume(overrides) -> list[str]:
    return sorted(str(o) for o in overrides or [] if not str(o).startswith(f"{RESUME_KEY}="))


def newest_resumable_run(run_base: str | Path, overrides=None) -> RunDir | None:
    """The newest run dir directly under `outputs/<member>/<run_name>/` that holds a last.pth, did
    not finish, and was launched with the same overrides (runtime.resume_from aside): "the same
    command + auto" never takes over a finished run or one with other settings. Run dirs are named by
    their start time, so the newest sorts last. None when there is none."""
    base = Path(run_base)
    if not base.is_dir():
        return None
    runs = []
    for folder in base.iterdir():
        run = RunDir(folder)
        if not run.last_checkpoint.is_file():
            continue
        try:
            summary = read_summary(run.summary_file)
        except RunFilesError:
            continue
        if summary is None or summary.status == Status.FINISHED.value:
            continue
        if _without_resume(summary.overrides) == _without_resume(overrides):
            runs.append(run)
    return max(runs, key=lambda run: run.root.name) if runs else None


def _run_to_continue_in_place(value: str) -> RunDir | None:
    """The run folder that `value` names for an in-place resume: the folder, its checkpoints/, or its last.pth."""
    path = Path(value).expanduser()
    owner = run_dir_of_checkpoint(path)
    run = owner if owner is not None and (path.is_dir() or is_last_checkpoint(path)) else RunDir(path)
    return run if run.has_checkpoints() else None


def run_dir_for(resume_from, run_base: str, timestamp: str, overrides=None) -> str:
    """Where `detect.train` writes (hydra.run.dir, through the `detect.run_dir` resolver)."""
    global last_decision
    timestamp = os.environ.get(STAMP_ENV) or timestamp
    value = _value(resume_from)
    found = None
    if value == AUTO:
        found = newest_resumable_run(run_base, overrides)
    elif value:
        found = _run_to_continue_in_place(value)
    if found is not None:
        last_decision = ("resume", str(found.root).rstrip("/"))
    else:
        last_decision = ("new", f"{run_base}/{timestamp}")
    return last_decision[1]


def checkpoint_to_resume(resume_from, run_dir: RunDir) -> Path | None:
    """The checkpoint a run in `run_dir` continues from; None to start fresh (auto found nothing).
    A folder stands for its last.pth (detect.run.checkpoints.load_checkpoint says so when it is missing)."""
    value = _value(resume_from)
    if not value:
        return None
    if value == AUTO:
        # run_dir_for picked this folder because it holds a last.pth, or a new folder that has none
        return run_dir.last_checkpoint if run_dir.last_checkpoint.is_file() else None
    return Path(value).expanduser()
