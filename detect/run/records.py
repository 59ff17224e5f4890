"""The run directory's JSON files: strict JSON written atomically, and metrics.jsonl (append, read)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from detect.errors import RunFilesError
from detect.run.paths import temporary_path


def json_safe(value):
    """NaN and infinities become null, so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_failure(path: Path, err: OSError) -> RunFilesError:
    """One message for a write that failed: the path, the cause, and what to do."""
    why = err.strerror or str(err)
    return RunFilesError(f"Could not write {path} ({why}). Free space or make the folder writable; the files written "
                         "before are intact.")


def write_json_atomic(path: Path, data: dict | list, indent: int | None = 2) -> None:
    """Write `data` as strict JSON through a temporary file, so a reader sees the old or the new file.
    A failed write (disk full, read-only folder) leaves the old file and no temporary one behind."""
    tmp = temporary_path(path)
    try:
        tmp.write_text(json.dumps(json_safe(data), indent=indent) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_failure(path, err) from None


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (flushed at once: a crash loses nothing).
    `enabled=False` (DDP ranks other than 0) writes nothing."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(json_safe(record)) + "\n")
        except OSError as err:
            raise write_failure(self.path, err) from None


@dataclass
class RunMetrics:
    """metrics.jsonl split by mode. A resumed run may have logged some iterations (or an epoch's
    evaluation) twice, before the stop and again after: the later record wins."""

    train: list[dict] = field(default_factory=list)  # by iteration
    val: list[dict] = field(default_factory=list)  # by epoch

    def val_of_epoch(self, epoch: int | None) -> dict | None:
        return next((r for r in self.val if r["epoch"] == epoch), None)


def read_metrics(path: Path) -> RunMetrics:
    """Read metrics.jsonl; a line cut short by a crash (the last one) is skipped."""
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("mode") == "train" and "iter" in record:
                train[int(record["iter"])] = record
            elif record.get("mode") == "val" and "epoch" in record:
                val[int(record["epoch"])] = record
    return RunMetrics([train[k] for k in sorted(train)], [val[k] for k in sorted(val)])
