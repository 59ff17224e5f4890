"""The machine line every benchmark prints first, so figures are never read without their context."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torchvision


def machine_line(threads: int) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor() or "unknown CPU")
    return (f"machine: {cpu}, {os.cpu_count()} cores, python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, torch threads {threads}")
