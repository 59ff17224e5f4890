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
    """Appends one JSON object per line to `metrics.jsonl` (flushed at once: a crash loses nothing)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_json_safe(record)) + "\n")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    os.replace(tmp, path)


class RunSummary:
    """`summary.json`, rewritten whenever something changes (status, best metric, epoch)."""

    def __init__(self, path: Path, **fields):
        self.path = path
        self.data = {"status": "running", **fields}
        self.save()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
