"""Disk full, read-only and over-long output paths, Ctrl-C while starting up: one message naming the
path and the cause, no temporary files left, the previous checkpoint and summary.json intact and
marked failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

from detect.errors import CheckpointError
from tests.conftest import REPO, TINY, compose_train


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PYTHONPATH": str(REPO)}


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in: chmod 555, or /sys where root ignores modes."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
    except OSError:
        return folder
    try:  # root writes through modes: a read-only file system instead
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses writes (root, and /sys is writable)")


def test_disk_full_while_saving_a_checkpoint_fails_the_run_cleanly(tiny_demo_root, tmp_path, monkeypatch):
    """torch reports a full disk as a RuntimeError from its zip writer: the second epoch's checkpoint fails."""
    from detect.engine.fit import fit
    from detect.run import checkpoints

    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, "runtime.max_iters_per_epoch=2", "schedule.epochs=2"])
    with open_dict(cfg):
        del cfg["hydra"]
    real_save, saved = checkpoints.torch.save, []

    def save(obj, f, *args, **kwargs):
        if obj.get("epoch") == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1024 vs 960\n"
                               "PytorchStreamWriter failed writing file data/3: file write failed: "
                               "No space left on device")
        saved.append(Path(f).name)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"Could not write .*epoch_2.pth \(PytorchStreamWriter failed writing"):
        fit(cfg, run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert summary["epochs_done"] == 1
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    state = checkpoints.load_checkpoint(run / "checkpoints" / "last.pth")  # epoch 1's, whole
    assert state["epoch"] == 1


def test_the_first_checkpoint_is_checked_for_space_too(tmp_path, monkeypatch, caplog):
    import torch

    from detect.run.checkpoints import save_checkpoint

    monkeypatch.setattr("detect.run.checkpoints.shutil.disk_usage", lambda p: type("U", (), {"free": 1000})())
    assert save_checkpoint({"model": {"w": torch.zeros(10_000)}}, tmp_path / "checkpoints" / "last.pth") is False
    assert "needs about 0 MB" in caplog.text and not list(tmp_path.rglob("*.pth*"))


def test_a_full_disk_under_summary_json_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from detect.errors import RunFilesError
    from detect.run.records import write_json_atomic

    path = tmp_path / "summary.json"
    write_json_atomic(path, {"status": "running"})

    def full(self, text, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(RunFilesError, match=r"Could not write .*summary.json \(No space left on device\)"):
        write_json_atomic(path, {"status": "failed"})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "running"} and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("command,args", [
    ("train", ["hydra.run.dir={ro}/run"]),
    ("test", ["checkpoint=x.pth", "hydra.run.dir={ro}/test"]),
    ("browse", ["out={ro}/browse"]),
])
def test_a_read_only_output_folder_gives_one_line_and_no_traceback(tmp_path, command, args):
    ro = read_only_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-m", f"detect.{command}", *(a.format(ro=ro) for a in args)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"Cannot create {ro}/" in proc.stderr and "is not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_detect_report_into_a_read_only_run_gives_one_line(tmp_path, monkeypatch, capsys):
    from detect import report

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"mode": "train", "epoch": 1, "iter": 1, "loss": 1.0}) + "\n")

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert report.main([f"run={run}"]) == 1
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(run) in err and len(err.strip().splitlines()) == 1


def test_an_over_long_run_name_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "detect.train", f"run_name={'x' * 300}"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is 300 bytes; file systems allow 255" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_ctrl_c_while_starting_up_leaves_no_folder(tiny_demo_root, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "detect.train", f"data.root={tiny_demo_root}", *TINY,
                             f"hydra.run.dir={run}"], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / ".hydra" / "config.yaml").exists():  # Hydra made the folder; torch is being imported
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in out + err, (out + err)[-2000:]
    assert not run.exists()
