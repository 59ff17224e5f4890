"""torchrun with two CPU processes (gloo): one run folder written by rank 0 only, the evaluation
covering every val image exactly once (its numbers equal a one-process evaluation of the same
checkpoint), and the learning-rate scaling rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch

from tests.conftest import REPO, TINY, compose_train


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_process_run_keeps_the_run_directory_contract(tiny_demo_root, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "OMP_NUM_THREADS": "1"}
    # The default run dir (outputs/<member>/<run_name>/<time>), relative to the launch folder: both
    # processes must agree on the time stamp and share one folder.
    args = [f"data.root={tiny_demo_root}", *TINY, "data.batch_size=1", "schedule.epochs=2",
            "runtime.threads=1", "schedule.auto_scale_lr.enable=true", "schedule.auto_scale_lr.base_batch_size=1"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "detect.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs" / "tester").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "checkpoints", "metrics.jsonl", "plots", "report.md",
                                                         "summary.json", "train.log", "val_predictions.bbox.json"]
    # Plots are drawn by rank 0 alone: one set, complete.
    assert len(list((run_dir / "plots").glob("*.png"))) == 7
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["epochs_done"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted([
        f"best_bbox_mAP_50_epoch_{summary['best_epoch']}.pth", "epoch_1.pth", "epoch_2.pth", "last.pth"])
    log = (run_dir / "train.log").read_text()
    # Rank 0 writes the log once; 8 training images / (1 per batch x 2 processes) = 4 steps per epoch.
    assert log.count("Evaluation after epoch 2 (4 images on 2 processes") == 1
    assert "lr 0.001 -> 0.002 (total batch 2 / base_batch_size 1)" in log
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["mode"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] * 2 and train[-1]["iter"] == 8
    evals = [r for r in records if r["mode"] == "val"]
    assert [r["epoch"] for r in evals] == [1, 2]

    # The same checkpoint evaluated by one process scores exactly the same: no val image was left
    # out or counted twice by the two-process evaluation.
    test = subprocess.run([sys.executable, "-m", "detect.test", f"run={run_dir}", "checkpoint=last",
                           "workers=0", "batch_size=1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert test.returncode == 0, test.stderr[-3000:]
    single = json.loads(next(run_dir.glob("**/metrics.json")).read_text())
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"):
        assert single[key] == evals[-1][key], key
    assert single["classwise"] == evals[-1]["classwise"]

    # A checkpoint written inside an epoch by 2 processes cannot continue with 1: its step count means
    # other batches there. The message says what to do instead.
    moved = tmp_path / "copy"
    shutil.copytree(run_dir, moved)
    state = torch.load(moved / "checkpoints" / "last.pth", weights_only=True)
    torch.save({**state, "epoch": 1, "epoch_step": 2}, moved / "checkpoints" / "last.pth")
    resumed = subprocess.run([sys.executable, "-m", "detect.train", *args, f"runtime.resume_from={moved}"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    assert "by a run with 2 process(es); this one has 1" in resumed.stdout + resumed.stderr


def test_torchrun_refuses_a_sweep_with_a_clear_message(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-m", "detect.train", "-m", "schedule.lr=0.01,0.02"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "a sweep (-m) starts many trainings" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_auto_scale_lr_is_a_stated_option():
    cfg = compose_train(["schedule=1x"])
    assert cfg.schedule.auto_scale_lr.enable is False and cfg.schedule.auto_scale_lr.base_batch_size == 16


def test_when_rank_0_refuses_the_folder_every_process_exits_with_its_code(tmp_path):
    """Rank 0 settles the run folder; when it refuses (here: a named folder that holds a run) the other
    rank gets the same answer instead of waiting for it."""
    run = tmp_path / "taken"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("schedule: {}\n")
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "detect.train", f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and output.count("already holds a run") == 1, output[-3000:]  # said once, by rank 0
    assert output.count("exitcode  : 2") == 2  # torchrun's report: both ranks ended with the usage error's code
