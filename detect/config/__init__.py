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
    from detect.run.paths import RunDir, run_dir_of_checkpoint

    if run not in (None, "", "None", "null") and RunDir(Path(str(run))).has_checkpoints():
        return str(RunDir(Path(str(run).rstrip("/"))).test_root)
    owner = run_dir_of_checkpoint(Path(str(checkpoint)))
    if owner is not None and Path(str(checkpoint)).suffix:
        return str(owner.test_root)
    return f"outputs/{member}/test"


def run_dir(resume_from: str | None, run_base: str, timestamp: str, overrides=None) -> str:
    """Where `detect.train` writes (hydra.run.dir): the resume plan decides (detect/run/resume.py)."""
    from detect.run.resume import run_dir_for

    return run_dir_for(resume_from, run_base, timestamp, overrides)


def register_resolvers() -> None:
    from detect.config.schemas import register_schemas

    register_schemas()  # conf/ names the schemas (/schema/...) in its defaults lists
    if not OmegaConf.has_resolver("detect.member"):
        OmegaConf.register_new_resolver("detect.member", member_name)
    if not OmegaConf.has_resolver("detect.test_dir"):
        OmegaConf.register_new_resolver("detect.test_dir", test_dir)
    if not OmegaConf.has_resolver("detect.run_dir"):
        OmegaConf.register_new_resolver("detect.run_dir", run_dir)
