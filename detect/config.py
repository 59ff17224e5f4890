"""OmegaConf resolvers used by the config tree. Imports nothing heavy: `--help` stays instant."""

from __future__ import annotations

import getpass
import os
import re

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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("detect.member"):
        OmegaConf.register_new_resolver("detect.member", member_name)
