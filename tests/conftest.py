"""Shared fixtures: config composition, a tiny generated demo set, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from detect.config import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Tiny demo set and model settings: a real training run that takes seconds on a CPU.
TINY = [
    "data.demo.num_train=8",
    "data.demo.num_val=4",
    "data.demo.min_px=96",
    "data.demo.max_px=128",
    "data.min_size=96",
    "data.max_size=128",
    "data.batch_size=2",
    "runtime.workers=0",
    "runtime.log_interval=1",
]

register_resolvers()


def compose_train(overrides: list[str] | None = None):
    """Compose conf/train.yaml the way `python -m detect.train` does (with the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [], return_hydra_config=True)


def run_cli(args: list[str], cwd: Path = REPO, env: dict | None = None, timeout: int = 600):
    """Run `python -m detect.train ...` in a subprocess and return the CompletedProcess."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", **(env or {})}
    return subprocess.run([sys.executable, "-m", "detect.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_demo_root(tmp_path_factory) -> Path:
    """A tiny demo set generated once per test session."""
    from detect.data.demo import ensure_demo_data

    root = tmp_path_factory.mktemp("demo") / "demo"
    ensure_demo_data(root, seed=0, num_train=8, num_val=4, min_px=96, max_px=128)
    return root


def tiny_train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"hydra.run.dir={run_dir}", *TINY, *extra]
