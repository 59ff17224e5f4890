"""OmegaConf resolvers used by the config tree. Imports nothing heavy: `--help` stays instant."""

from __future__ import annotations

import getpass
import json
import os
import re
from pathlib import Path

from omegaconf import OmegaConf


def member_name() -> str:
    """Whose run this is: $DETECT_MEMBER, else the login name; made safe for a folder name."""
    name = os.environ.get("DETECT_MEMBER") or ""
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            name = "unknown"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "unknown"


def test_dir(run: str | None, checkpoint: str, member: str) -> str:
    """Where `detect.test` writes: `<run dir>/test`, or `<run dir>/test` of a checkpoint that sits
    in a run's checkpoints/ folder, else `outputs/<member>/test` (a loose .pth, or a `run=` that is
    not a run dir: a typo must not create folders of its own)."""
    if run not in (None, "", "None", "null") and (Path(str(run)).expanduser() / "checkpoints").is_dir():
        return f"{str(run).rstrip('/')}/test"
    path = Path(str(checkpoint)).expanduser()
    if path.suffix == ".pth" and path.parent.name == "checkpoints":
        return str(path.parent.parent / "test")
    return f"outputs/{member}/test"


def _without_resume(overrides) -> list[str]:
    return sorted(str(o) for o in overrides or [] if not str(o).startswith("runtime.resume_from="))


def newest_resumable_run(run_base: str | Path, overrides=None) -> Path | None:
    """The newest run dir directly under `outputs/<member>/<run_name>/` that holds checkpoints/last.pth,
    did not finish, and was launched with the same overrides (runtime.resume_from aside): "the same
    command + auto" never takes over a finished run or one with other settings. Run dirs are named by
    their start time, so the newest sorts last. None when there is none."""
    base = Path(run_base)
    if not base.is_dir():
        return None
    runs = []
    for d in base.iterdir():
        if not (d / "checkpoints" / "last.pth").is_file():
            continue
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("status") != "finished" and _without_resume(summary.get("overrides")) == _without_resume(
                overrides):
            runs.append(d)
    return max(runs, key=lambda d: d.name) if runs else None


def run_dir(resume_from: str | None, run_base: str, timestamp: str, overrides=None) -> str:
    """Where `detect.train` writes (hydra.run.dir). A resumed run continues in its own folder:
    runtime.resume_from=<run dir> (or its checkpoints/ or checkpoints/last.pth) -> that folder;
    runtime.resume_from=auto -> the newest unfinished run of this member and run_name launched with
    the same overrides, else a new folder; any other checkpoint (epoch_N.pth, a loose file) -> a new
    folder `<run_base>/<timestamp>`, so the later checkpoints of its run are never overwritten.
    Under torchrun every process uses rank 0's time stamp ($DETECT_RUN_STAMP, set by
    detect.engine.distributed.init_from_env), so all of them name the same folder."""
    timestamp = os.environ.get("DETECT_RUN_STAMP") or timestamp
    value = "" if resume_from in (None, "None", "null") else str(resume_from)
    if value == "auto":
        found = newest_resumable_run(run_base, overrides)
        return str(found) if found else f"{run_base}/{timestamp}"
    path = Path(value).expanduser() if value else None
    if path is not None and path.name == "checkpoints" and path.is_dir():
        path = path.parent
    if path is not None and path.name == "last.pth" and path.parent.name == "checkpoints":
        path = path.parent.parent
    if path is not None and (path / "checkpoints").is_dir():
        return str(path).rstrip("/")
    return f"{run_base}/{timestamp}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("detect.member"):
        OmegaConf.register_new_resolver("detect.member", member_name)
    if not OmegaConf.has_resolver("detect.test_dir"):
        OmegaConf.register_new_resolver("detect.test_dir", test_dir)
    if not OmegaConf.has_resolver("detect.run_dir"):
        OmegaConf.register_new_resolver("detect.run_dir", run_dir)
