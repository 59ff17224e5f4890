"""Nothing is lost when a run dies: Ctrl-C/SIGTERM stop cleanly and resume exactly, kill -9 resumes from
the last epoch, checkpoints never run pickled code, a full disk keeps the previous files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detect.errors import CheckpointError
from detect.run.checkpoints import load_checkpoint, save_checkpoint
from tests.conftest import REPO, TINY

EPOCHS = 3


def train_args(root: Path, run_name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "detect.train", f"data.root={root}", *TINY, f"schedule.epochs={EPOCHS}",
            f"run_name={run_name}", *extra]


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PYTHONPATH": str(REPO)}


def run_dirs(cwd: Path, run_name: str) -> list[Path]:
    return sorted((cwd / "outputs" / "tester" / run_name).glob("20*"))


def wait_for(predicate, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the training subprocess"
        time.sleep(0.1)


def train_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def losses(run_dir: Path) -> list[tuple]:
    return [(r["mode"], r["iter"], round(r.get("loss", r.get("bbox_mAP", 0.0)), 5)) for r in train_lines(run_dir)]


def start_and_signal(cwd, root, run_name, sig, when) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(train_args(root, run_name), cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: run_dirs(cwd, run_name) and when(run_dirs(cwd, run_name)[0]))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def uninterrupted(tiny_demo_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("full")
    proc = subprocess.run(train_args(tiny_demo_root, "full"), cwd=cwd, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dirs(cwd, "full")[0]


def test_ctrl_c_mid_epoch_stops_cleanly_and_auto_resume_continues_exactly(tiny_demo_root, tmp_path, uninterrupted):
    proc = start_and_signal(tmp_path, tiny_demo_root, "run", signal.SIGINT,
                            lambda d: sum(r["mode"] == "train" for r in train_lines(d)) >= 7)  # inside epoch 2
    output = proc.stdout + proc.stderr
    assert proc.returncode == 130 and "Traceback" not in output, output[-3000:]
    [run_dir] = run_dirs(tmp_path, "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "runtime.resume_from=" in output
    state = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)  # a complete, safe checkpoint
    steps = train_lines(run_dir)[0]["steps"]  # per epoch: 8 images in batches of 2, landscape and portrait apart
    assert state["epoch"] == 1 and 0 < state["epoch_step"] < steps  # stopped inside epoch 2
    assert state["iter"] == state["epoch"] * steps + state["epoch_step"]

    resumed = subprocess.run(train_args(tiny_demo_root, "run", "runtime.resume_from=auto"), cwd=tmp_path, env=env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_dirs(tmp_path, "run") == [run_dir]  # continued in its own folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == EPOCHS and len(summary["restarted"]) == 1
    # Every logged loss and score equals the uninterrupted run's: the run continued exactly.
    assert losses(run_dir) == losses(uninterrupted)
    assert summary["best_score"] == json.loads((uninterrupted / "summary.json").read_text())["best_score"]


def test_sigterm_and_kill_9_lose_at_most_the_current_epoch(tiny_demo_root, tmp_path):
    proc = start_and_signal(tmp_path, tiny_demo_root, "run", signal.SIGKILL,
                            lambda d: (d / "checkpoints" / "last.pth").is_file())
    assert proc.returncode == -signal.SIGKILL
    [run_dir] = run_dirs(tmp_path, "run")
    before = json.loads((run_dir / "summary.json").read_text())
    assert before["status"] == "running"  # kill -9 leaves no chance to write anything: detect.runs says stale
    resumed = subprocess.run(train_args(tiny_demo_root, "run", "runtime.resume_from=auto"), cwd=tmp_path, env=env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == EPOCHS
    assert summary["best_score"] >= (before["best_score"] or 0)
    assert Path(summary["best_checkpoint"]).is_file()
    assert [r["epoch"] for r in train_lines(run_dir) if r["mode"] == "val"][-1] == EPOCHS


def test_auto_resume_without_an_earlier_run_starts_fresh(tiny_demo_root, tmp_path):
    proc = subprocess.run(train_args(tiny_demo_root, "new", "runtime.resume_from=auto", "schedule.epochs=1",
                                     "runtime.max_iters_per_epoch=1"), cwd=tmp_path, env=env(), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no unfinished run of new with the same overrides" in proc.stdout + proc.stderr
    assert json.loads((run_dirs(tmp_path, "new")[0] / "summary.json").read_text())["status"] == "finished"


def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)  # torch.save pickles it; loading it fully would run the command
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="may be truncated or not a detect checkpoint"):
        load_checkpoint(path)


def test_too_little_disk_space_keeps_the_previous_checkpoint(tmp_path, monkeypatch, caplog):
    path = tmp_path / "checkpoints" / "last.pth"
    save_checkpoint({"model": {"w": torch.zeros(10_000)}}, path)
    before = path.read_bytes()
    monkeypatch.setattr("detect.run.checkpoints.shutil.disk_usage", lambda p: type("U", (), {"free": 1000})())
    assert save_checkpoint({"model": {"w": torch.ones(10_000)}}, path) is False
    assert path.read_bytes() == before and "Not written: the previous checkpoints stay" in caplog.text


def test_a_write_that_fails_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pth"
    save_checkpoint({"model": {"w": torch.zeros(10)}}, path)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("detect.run.checkpoints.torch.save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoints are intact"):
        save_checkpoint({"model": {"w": torch.ones(10)}}, path)
    assert path.read_bytes() == before and not list(path.parent.glob("*.tmp"))


def test_which_folder_a_resume_continues_in(tmp_path):
    from detect.config import run_dir

    base = tmp_path / "outputs" / "tester" / "exp"

    def make_run(name, status, overrides):
        d = base / name
        (d / "checkpoints").mkdir(parents=True)
        for ckpt in ("last.pth", "epoch_1.pth"):
            (d / "checkpoints" / ckpt).write_bytes(b"x")
        (d / "summary.json").write_text(json.dumps({"status": status, "overrides": overrides}))
        return d

    old = make_run("2026-01-01_00-00-00", "interrupted", ["schedule.lr=0.01"])
    make_run("2026-01-02_00-00-00", "finished", ["schedule.lr=0.01"])  # finished: never taken over
    make_run("2026-01-03_00-00-00", "interrupted", ["schedule.lr=0.02"])  # other settings: not this command
    same = ["schedule.lr=0.01", "runtime.resume_from=auto"]
    assert run_dir("auto", str(base), "NEW", same) == str(old)
    assert run_dir("auto", str(base), "NEW", ["schedule.lr=0.05", "runtime.resume_from=auto"]) == f"{base}/NEW"
    assert run_dir(str(old) + "/", str(base), "NEW") == str(old)  # a run dir, its checkpoints/ or last.pth
    assert run_dir(str(old / "checkpoints"), str(base), "NEW") == str(old)
    assert run_dir(str(old / "checkpoints" / "last.pth"), str(base), "NEW") == str(old)
    # an older checkpoint must not rewind its run in place: a new folder
    assert run_dir(str(old / "checkpoints" / "epoch_1.pth"), str(base), "NEW") == f"{base}/NEW"
    assert run_dir(None, str(base), "NEW") == f"{base}/NEW"
