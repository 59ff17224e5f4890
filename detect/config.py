"""OmegaConf resolvers used by the config tree. Imports nothing heavy: `--help` stays instant."""

from __future__ import annotations

import getpass
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


def newest_resumable_run(run_base: str | Path) -> Path | None:
    """The newest run dir directly under `outputs/<member>/<run_name>/` holding checkpoints/last.pth
    (run dirs are named by their start time, so the newest sorts last); None when there is none."""
    base = Path(run_base)
    if not base.is_dir():
        return None
    runs = [d for d in base.iterdir() if (d / "checkpoints" / "last.pth").is_file()]
    return max(runs, key=lambda d: d.name) if runs else None


def run_dir(resume_from: str | None, run_base: str, timestamp: str) -> str:
    """Where `detect.train` writes (hydra.run.dir). A resumed run continues in its own folder:
    runtime.resume_from=<run dir> (or a .pth inside <run dir>/checkpoints/) -> that folder;
    runtime.resume_from=auto -> the newest run of this member and run_name with a last.pth, else a
    new folder; anything else -> `<run_base>/<timestamp>`."""
    value = "" if resume_from in (None, "None", "null") else str(resume_from)
    if value == "auto":
        found = newest_resumable_run(run_base)
        return str(found) if found else f"{run_base}/{timestamp}"
    path = Path(value).expanduser() if value else None
    if path is not None and (path / "checkpoints").is_dir():
        return str(path).rstrip("/")
    if path is not None and path.suffix == ".pth" and path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return f"{run_base}/{timestamp}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("detect.member"):
        OmegaConf.register_new_resolver("detect.member", member_name)
    if not OmegaConf.has_resolver("detect.test_dir"):
        OmegaConf.register_new_resolver("detect.test_dir", test_dir)
    if not OmegaConf.has_resolver("detect.run_dir"):
        OmegaConf.register_new_resolver("detect.run_dir", run_dir)
