"""Checkpoint files: atomic writes, safe loads, the best-by-metric rule and pruning."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from pathlib import Path

import torch

from detect.errors import CheckpointError

log = logging.getLogger("detect")
SPACE_MARGIN = 1.2  # ask for 20% more free space than the checkpoint is expected to take


def save_checkpoint(state: dict, path: Path) -> bool:
    """Write to a temporary file and rename it into place: a crash mid-write keeps the old file.

    Before writing, the free space of the folder is compared with the size of the folder's newest
    checkpoint (checkpoints of one run are all about that size). Too little: a warning, nothing is
    written (the previous files stay) and False is returned; the run goes on and tries again at the
    next checkpoint. A write that fails all the same (disk full meanwhile) leaves no partial file
    and raises CheckpointError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = [p.stat().st_size for p in path.parent.glob("*.pth")]
    if sizes:
        needed, free = max(sizes) * SPACE_MARGIN, shutil.disk_usage(path.parent).free
        if free < needed:
            log.warning("Only %.0f MB free in %s; %s needs about %.0f MB. Not written: the previous checkpoints stay. "
                        "Free some space (the run tries again at the next checkpoint).", free / 1e6, path.parent,
                        path.name, needed / 1e6)
            return False
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"Could not write {path} ({err}); no partial file was left and the previous checkpoints "
                              f"are intact. Free space in {path.parent}, then resume with "
                              f"runtime.resume_from={path.parent.parent}.") from err
    return True


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without running pickled code (weights_only). A run dir means its last.pth."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pth" if (path / "checkpoints").is_dir() else path / "last.pth"
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Give a .pth file or a run directory.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...: all mean "not loadable"
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(err).__name__}: {err}). "
                              "It may be truncated or not a detect checkpoint.") from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a detect checkpoint (no 'model' entry).")
    state["path"] = str(path)
    return state


def is_better(new: float | None, best: float | None) -> bool:
    """Higher is better; NaN/None never counts as better; an equal score keeps the old best."""
    if new is None or math.isnan(new):
        return False
    return best is None or math.isnan(best) or new > best


def best_checkpoint_name(monitor: str, epoch: int) -> str:
    return f"best_{monitor}_epoch_{epoch}.pth"


def prune_epoch_checkpoints(folder: Path, max_keep: int) -> list[Path]:
    """Delete the oldest epoch_N.pth beyond `max_keep` (best_* and last.pth are other names and
    never touched). Returns the removed paths. max_keep < 0 keeps everything."""
    if max_keep < 0:
        return []
    pattern = re.compile(r"^epoch_(\d+)\.pth$")
    epochs = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pth") if (m := pattern.match(p.name)))
    doomed = [p for _, p in epochs[: max(0, len(epochs) - max_keep)]]
    for path in doomed:
        path.unlink()
    return doomed
