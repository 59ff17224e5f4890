"""The run directory's machine-readable files: metrics.jsonl and summary.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _json_safe(value):
    """NaN and infinities become null, so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (flushed at once: a crash loses nothing).
    `enabled=False` (DDP ranks other than 0) writes nothing."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(_json_safe(record)) + "\n")


def write_json_atomic(path: Path, data: dict | list, indent: int | None = 2) -> None:
    """Write `data` as strict JSON through a temporary file, so a reader sees the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=indent) + "\n")
    os.replace(tmp, path)


class RunSummary:
    """`summary.json`, rewritten whenever something changes (status, best metric, epoch).

    A run resumed in its own folder keeps its summary: the first start time stays, each restart is
    added to `restarted`, and the end state of the earlier session (error, finished) is cleared.
    `enabled=False` (DDP ranks other than 0) keeps the fields in memory and writes nothing."""

    def __init__(self, path: Path, enabled: bool = True, **fields):
        self.path = path
        self.enabled = enabled
        try:
            earlier = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            earlier = {}  # a damaged summary is rewritten whole
        for key in ("error", "finished"):
            earlier.pop(key, None)
        self.data = {**earlier, "status": "running", **fields}
        if earlier.get("started"):
            self.data["started"] = earlier["started"]
            self.data["restarted"] = [*earlier.get("restarted", []), fields.get("started")]
        self.save()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        if self.enabled:
            write_json_atomic(self.path, self.data)
