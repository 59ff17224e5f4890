"""What a run was made from: the overrides, the code's git commit (and whether the tree had
uncommitted changes), and the versions of the libraries, recorded in summary.json."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout that holds the detect package


def git_state(root: Path = CODE_ROOT) -> dict:
    """{"commit": sha or None, "dirty": True/False or None}; None when git or the repository is absent."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(),
            **{name: version(name) for name in ("detect", "torch", "torchvision", "hydra-core", "pycocotools",
                                               "faster-coco-eval")}}


def provenance(overrides: list[str]) -> dict:
    return {"overrides": list(overrides), "git": git_state(), "versions": versions()}
