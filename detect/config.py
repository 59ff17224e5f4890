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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("detect.member"):
        OmegaConf.register_new_resolver("detect.member", member_name)
    if not OmegaConf.has_resolver("detect.test_dir"):
        OmegaConf.register_new_resolver("detect.test_dir", test_dir)
