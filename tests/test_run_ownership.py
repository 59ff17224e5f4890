"""A run folder belongs to one run: launches in the same second get their own folders, a named folder
that holds a run is refused, a resume with another config or of a run that is still training changes
nothing on disk, and an in-place resume keeps the run's original .hydra files."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detect.errors import RunFilesError
from detect.run import RunDir
from detect.run.launch import changed_keys
from detect.run.lock import RunLock, read_holder
from tests.conftest import REPO, TINY


def env(**extra: str) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PYTHONPATH": str(REPO), **extra}


def train(root: Path, cwd: Path, *extra: str, **env_extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "detect.train", f"data.root={root}", *TINY, "schedule.epochs=1",
            "runtime.max_iters_per_epoch=2", "run_name=owned", *extra]
    return subprocess.Popen(args, cwd=cwd, env=env(**env_extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_demo_root, tmp_path_factory) -> tuple[Path, Path]:
    """(cwd, run dir) of a finished tiny run."""
    cwd = tmp_path_factory.mktemp("owned")
    proc = finish(train(tiny_demo_root, cwd))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (cwd / "outputs" / "tester" / "owned").iterdir()
    return cwd, run


def test_two_launches_in_the_same_second_get_a_folder_each(tiny_demo_root, tmp_path):
    # The same time stamp for both (what two launches in one second see): the second gets <stamp>_2.
    stamp = "2026-12-06_10-00-00"
    procs = [train(tiny_demo_root, tmp_path, f"schedule.lr={lr}", DETECT_RUN_STAMP=stamp) for lr in (0.001, 0.002)]
    results = [finish(p) for p in procs]
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    folders = sorted((tmp_path / "outputs" / "tester" / "owned").iterdir())
    assert [f.name for f in folders] == [stamp, f"{stamp}_2"]
    lrs = set()
    for folder in folders:  # each folder holds one run's files, from start to end
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["run_dir"] == str(folder)
        lr = "0.001" if "schedule.lr=0.001" in overrides else "0.002"
        assert f"schedule.lr={lr}" in summary["overrides"]
        lrs.add(lr)
        logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert len([r for r in logged if r.get("mode") == "val"]) == 1  # one run's evaluation, not two
        assert not (folder / ".lock").exists()  # released at the end
    assert lrs == {"0.001", "0.002"}


def test_a_named_folder_that_holds_a_run_is_refused(finished_run, tiny_demo_root):
    cwd, run = finished_run
    before = fingerprint(run)
    proc = finish(train(tiny_demo_root, cwd, f"hydra.run.dir={run}"))
    assert proc.returncode == 2 and "already holds a run" in proc.stderr and "Traceback" not in proc.stderr
    assert f"runtime.resume_from={run}" in proc.stderr
    assert fingerprint(run) == before


@pytest.mark.parametrize("change,named", [
    (["schedule.lr=0.5"], "schedule.lr: 0.001 -> 0.5"),
    (["model=retinanet"], "model.name: 'faster_rcnn_r18_demo' -> 'retinanet'"),
    (["data.min_size=64"], "data.min_size: 96 -> 64"),
])
def test_a_resume_with_another_config_is_refused_and_changes_nothing(finished_run, tiny_demo_root, change, named):
    cwd, run = finished_run
    before = fingerprint(run)
    proc = finish(train(tiny_demo_root, cwd, f"runtime.resume_from={run}", *change))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert named in proc.stderr and f"runtime.load_from={run / 'checkpoints' / 'last.pth'}" in proc.stderr
    assert fingerprint(run) == before  # summary.json, .hydra/, train.log: byte for byte


def test_a_run_another_process_writes_is_not_resumed(finished_run, tiny_demo_root):
    cwd, run = finished_run
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a live process
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "since": "2026-12-06 10:00:00"}
        (run / ".lock").write_text(json.dumps(lock))
        before = fingerprint(run)
        proc = finish(train(tiny_demo_root, cwd, f"runtime.resume_from={run}"))
        assert proc.returncode == 1 and f"is being written by another process (pid {holder.pid}" in proc.stderr
        assert fingerprint(run) == before
    finally:
        holder.kill()
        holder.wait()
        (run / ".lock").unlink(missing_ok=True)


def test_an_in_place_resume_keeps_the_original_hydra_files_and_a_dead_holders_lock_is_taken_over(
        tiny_demo_root, tmp_path):
    proc = finish(train(tiny_demo_root, tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "tester" / "owned").iterdir()
    originals = {name: (run / ".hydra" / name).read_bytes() for name in ("config.yaml", "overrides.yaml")}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs: a lock left by a killed run
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    proc = finish(train(tiny_demo_root, tmp_path, f"runtime.resume_from={run}", "runtime.device=cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {name: (run / ".hydra" / name).read_bytes() for name in originals} == originals
    (resumed,) = (run / ".hydra").glob("resumed_*")
    assert f"runtime.resume_from={run}" in (resumed / "overrides.yaml").read_text()
    assert "Resumed from" in (run / "train.log").read_text()
    assert not (run / ".lock").exists()


def test_the_lock_is_exclusive_and_reentrant(tmp_path):
    run = RunDir(tmp_path / "run")
    first = RunLock(run)
    first.acquire()
    assert read_holder(run)["pid"] == os.getpid()
    RunLock(run).acquire()  # this process holds it already (detect.train's start-up, then fit)
    (run.lock_file).write_text(json.dumps({"pid": os.getpid(), "host": "another-host", "since": "now"}))
    with pytest.raises(RunFilesError, match="on another-host"):
        RunLock(run).acquire()  # another machine's lock is never taken over silently
    first.release()
    assert run.lock_file.exists()  # a release removes only this process's own lock
    run.lock_file.unlink()
    mine = RunLock(run)
    mine.acquire()
    mine.release()
    assert not run.lock_file.exists()


def test_changed_keys_ignore_how_a_run_executes_and_keys_of_other_versions():
    saved = {"schedule": {"lr": 0.01}, "runtime": {"workers": 2, "resume_from": None, "seed": 1}, "old": 1}
    now = {"schedule": {"lr": 0.01}, "runtime": {"workers": 8, "resume_from": "auto", "seed": 2}, "new": 1}
    assert changed_keys(saved, now) == ["runtime.seed: 1 -> 2"]


def test_a_folder_taken_in_the_same_second_gets_the_next_name(tmp_path):
    from detect.run.launch import claim_new_folder, override_value

    first = claim_new_folder(tmp_path / "multirun_2026-12-06_10-00-00")
    second = claim_new_folder(tmp_path / "multirun_2026-12-06_10-00-00")
    assert (first.name, second.name) == ("multirun_2026-12-06_10-00-00", "multirun_2026-12-06_10-00-00_2")
    assert override_value("/data/my trash, v2") == "'/data/my trash, v2'"  # Hydra reads it as one string


def test_a_named_sweep_folder_that_holds_jobs_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "config.yaml").write_text("schedule: {}\n")
    before = fingerprint(sweep)
    proc = subprocess.run([sys.executable, "-m", "detect.train", "-m", "schedule.lr=0.1,0.2",
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "already holds the jobs of a sweep" in proc.stderr
    assert fingerprint(sweep) == before


def test_a_new_run_whose_time_folder_holds_a_run_gets_the_next_name(finished_run, tiny_demo_root):
    """Another launch took <time> (and trained there) before this one's Hydra named it: this run is new
    (no resume asked, or auto finds nothing to resume), so it goes to <time>_2 instead of being refused."""
    cwd, run = finished_run
    before = fingerprint(run)
    proc = finish(train(tiny_demo_root, cwd, "runtime.resume_from=auto", DETECT_RUN_STAMP=run.name))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run.parent / f"{run.name}_2" / "summary.json").is_file() and fingerprint(run) == before


def test_a_resume_of_a_run_with_a_damaged_config_is_refused_and_leaves_no_lock(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text("schedule: [unclosed\n")
    (run / "checkpoints" / "last.pth").write_bytes(b"x")
    before = fingerprint(run)
    proc = subprocess.run([sys.executable, "-m", "detect.train", f"runtime.resume_from={run}"], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "cannot be read" in proc.stderr and "Traceback" not in proc.stderr
    assert fingerprint(run) == before and not (run / ".lock").exists()
