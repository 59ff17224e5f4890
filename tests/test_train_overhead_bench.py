"""benchmarks/train_overhead.py compares like with like: the plain loop gets detect's batches (same
images, order and augmentation), lr schedule and RNG stream, so both sides end with the same weights,
which the script checks and reports (exit code 1 when they differ); --lr0 keeps the weights still on
both sides; --profile-steps writes a torch.profiler summary. Runs on the generated demo data at 128 px
on a CPU (about 15 s per run on 2 cores); no timings are asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

BENCH = REPO / "benchmarks"
TINY = ["--data", "demo", "--size", "128", "--iters", "2", "--warmup", "1", "--repeats", "1", "--threads", "1",
        "--workers", "0"]


def run_bench(args: list[str], code: str | None = None) -> subprocess.CompletedProcess:
    """The script as a user runs it from the repo root (or, with `code`, that Python run in its place)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, str(BENCH / "train_overhead.py"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def moved(stdout: str) -> float:
    return float(re.search(r"training moved the parameters by (\S+),", stdout).group(1))


def test_same_schedule_both_sides_end_with_the_same_weights_and_the_profile_lists_ops(tmp_path):
    result = run_bench([*TINY, "--profile-steps", "2", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "mode: same schedule" in out
    assert "initial weights identical on both sides: yes" in out
    assert "final weights agree: yes" in out
    assert moved(out) > 0  # the weights trained (the warm-up's lr is small, but not zero): the check is not idle
    assert re.search(r"ratio detect/plain = \d+\.\d{3} \(goal >= 0\.97\)", out)
    assert re.search(r"^machine: .*torch threads 1$", out, re.MULTILINE)
    profile = Path(re.search(r"^profile: (.+)$", out, re.MULTILINE).group(1))
    assert profile.parent.parent == tmp_path and profile.is_file()
    text = profile.read_text()
    assert "over 2 training steps" in text and "Top 25 ops by self CPU time" in text
    assert "aten::convolution_backward" in text  # an op of the training step, from the table
    sync = text.split("Host synchronisation points")[1]
    assert re.search(r"^aten::item +\d+", sync, re.MULTILINE)  # the loss values read on the host, at least


def test_lr0_keeps_the_weights_still_on_both_sides(tmp_path):
    result = run_bench([*TINY, "--lr0", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mode: lr 0 on both sides" in result.stdout
    assert "final weights agree: yes" in result.stdout
    assert moved(result.stdout) == 0
    assert "ratio detect/plain = " in result.stdout
    assert not list(tmp_path.glob("*/profile.txt"))  # --profile-steps 0: no profile


def test_a_plain_side_without_detects_warmup_is_reported_and_fails(tmp_path):
    # The unfair plain loop: a constant lr instead of detect's warm-up ramp.
    code = ("import sys, torch; sys.path.insert(0, 'benchmarks'); import train_overhead as t; "
            "t.build_lr_scheduler = lambda optimizer, schedule, iters: "
            "torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0); "
            "sys.exit(t.main(sys.argv[1:]))")
    result = run_bench([*TINY, "--out", str(tmp_path)], code=code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "final weights agree: NO" in result.stdout
    assert "did not train the same weights" in result.stdout


@pytest.fixture
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports benchmarks/machine.py as `machine`
    import train_overhead

    threads = torch.get_num_threads()
    yield train_overhead
    torch.set_num_threads(threads)


def test_the_plain_loader_yields_detects_first_batches_tensor_for_tensor(bench_module):
    from torch.utils.data import DataLoader

    from detect.data.coco import collate
    from detect.data.demo import prepare_demo_data
    from detect.engine import distributed
    from detect.engine.build import build_data

    args = bench_module.parse_args(TINY)
    cfg = bench_module.compose_config(args, "demo")
    prepare_demo_data(cfg.data)
    device = torch.device("cpu")
    _, _, detect_loader, _ = build_data(cfg, distributed.current(), device)
    detect_loader.generator.manual_seed(int(cfg.runtime.seed))  # as Trainer.train_epoch for epoch 0
    detect_loader.batch_sampler.set_epoch(0, start_batch=0)
    dataset, batches = bench_module.detect_batches(cfg, device, 3, args)
    assert len(batches) == 3 and all(len(key) == 3 for batch in batches for key in batch)  # (index, seed, epoch)
    plain = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=0)
    for (images_d, targets_d), (images_p, targets_p) in zip(detect_loader, plain):
        assert len(images_d) == len(images_p) == 4
        assert all(torch.equal(a, b) for a, b in zip(images_d, images_p))
        for a, b in zip(targets_d, targets_p):
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
