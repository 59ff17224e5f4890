"""`python -m detect.runs`: the leaderboard over fake run dirs written by hand, and over one real run."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout

import pytest
import yaml

from detect import runs
from detect.run import leaderboard
from tests.conftest import REPO, run_cli, tiny_train_args

HOUR = 3600


def make_run(root, rel, summary=None, config=None, overrides=(), age_s=0):
    """A run dir as the trainer leaves it: .hydra files, summary.json (a dict, raw text, or None), train.log."""
    run_dir = root / rel
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"model": {"name": "m"}}))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (run_dir / "summary.json").write_text(text)
    (run_dir / "train.log").write_text("log\n")
    if age_s:
        old = time.time() - age_s
        for f in [*run_dir.iterdir(), *(run_dir / ".hydra").iterdir()]:
            os.utime(f, (old, old))
    return run_dir


def summary(status, member, experiment, score=None, model="faster_rcnn", fold=None, done=12, epochs=12):
    return {"status": status, "member": member, "experiment": experiment, "model": model, "data": "trash",
            "fold": fold, "monitor": "bbox_mAP_50", "best_score": score, "best_epoch": 3 if score else None,
            "epochs_done": done, "epochs": epochs, "seed": 42, "started": "2026-11-20 10:00:00",
            "git": {"commit": "abc123", "dirty": False}, "overrides": []}


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs"
    make_run(root, "alice/faster_rcnn_trash/2026-11-20_10-00-00",
             summary("finished", "alice", "faster_rcnn_trash", 0.51234))
    make_run(root, "alice/faster_rcnn_trash/2026-11-21_10-00-00",
             summary("failed", "alice", "faster_rcnn_trash", done=0))
    make_run(root, "alice/retina_trash/2026-11-22_10-00-00",
             summary("running", "alice", "retina_trash", 0.3, model="retinanet", done=4))
    make_run(root, "bob/member_a/cascade_bifpn_lr/2026-11-20_09-00-00",
             summary("running", "bob", "member_a/cascade_bifpn_lr", 0.6, model="cascade_rcnn", done=5),
             age_s=2 * HOUR)
    make_run(root, "bob/cascade_trash/multirun_2026-11-19_08-00-00/1",
             summary("finished", "bob", "cascade_trash", 0.7, model="cascade_rcnn", fold=1))
    return root


def table_lines(root, *args):
    out = io.StringIO()
    with redirect_stdout(out):
        assert runs.main(["--root", str(root), *args]) == 0
    return out.getvalue().splitlines()


def line_of(lines, rel):
    return next(line for line in lines if line.rstrip().endswith(rel))


def test_table_lists_every_run_with_status_and_score(outputs):
    lines = table_lines(outputs)
    assert lines[0].split()[:8] == ["member", "experiment", "model", "data", "fold", "status", "epochs", "best"]
    assert "best bbox_mAP_50" in lines[0]
    assert len(lines) == 2 + 5
    finished = line_of(lines, "alice/faster_rcnn_trash/2026-11-20_10-00-00").split()
    assert finished[:8] == ["alice", "faster_rcnn_trash", "faster_rcnn", "trash", "-", "finished", "12/12", "0.5123"]
    assert " failed " in line_of(lines, "alice/faster_rcnn_trash/2026-11-21_10-00-00")
    assert " running " in line_of(lines, "alice/retina_trash/2026-11-22_10-00-00")
    stale = line_of(lines, "bob/member_a/cascade_bifpn_lr/2026-11-20_09-00-00").split()
    assert stale[:8] == ["bob", "member_a/cascade_bifpn_lr", "cascade_rcnn", "trash", "-", "stale", "5/12", "0.6000"]
    job = line_of(lines, "bob/cascade_trash/multirun_2026-11-19_08-00-00/1").split()
    assert job[4:8] == ["1", "finished", "12/12", "0.7000"]


def test_stale_minutes_decides_between_running_and_stale(outputs):
    def status(stale_minutes, rel):
        return {r["rel"]: r["status"] for r in leaderboard.read_runs(outputs, stale_minutes)}[rel]

    two_hours_old, fresh = "bob/member_a/cascade_bifpn_lr/2026-11-20_09-00-00", "alice/retina_trash/2026-11-22_10-00-00"
    assert status(3 * 60, two_hours_old) == "running"
    assert status(60, two_hours_old) == "stale"
    time.sleep(0.1)
    assert status(0.001, fresh) == "stale"  # 60 ms without a write
    assert status(0.001, "alice/faster_rcnn_trash/2026-11-20_10-00-00") == "finished"  # only 'running' can go stale


def test_default_sort_is_best_score_first_without_score_last_and_sort_reverse(outputs):
    lines = table_lines(outputs)[2:]
    assert [line.split()[7] for line in lines] == ["0.7000", "0.6000", "0.5123", "0.3000", "-"]
    lines = table_lines(outputs, "--reverse")[2:]
    assert [line.split()[7] for line in lines] == ["0.3000", "0.5123", "0.6000", "0.7000", "-"]
    lines = table_lines(outputs, "--sort", "fold")[2:]
    assert [line.split()[4] for line in lines] == ["1", "-", "-", "-", "-"]
    lines = table_lines(outputs, "--sort", "member", "--reverse")[2:]
    assert [line.split()[0] for line in lines] == ["bob", "bob", "alice", "alice", "alice"]


def test_filters_by_member_experiment_glob_and_status(outputs):
    assert {line.split()[0] for line in table_lines(outputs, "--member", "bob")[2:]} == {"bob"}
    lines = table_lines(outputs, "--experiment", "member_a/*")[2:]
    assert len(lines) == 1 and "cascade_bifpn_lr" in lines[0]
    lines = table_lines(outputs, "--experiment", "faster_rcnn_trash", "--status", "failed")[2:]
    assert len(lines) == 1 and " failed " in lines[0]
    assert table_lines(outputs, "--member", "carol") == [f"No run matches the filters (5 runs under {outputs})."]


def test_csv_has_one_row_per_run_with_absolute_dirs(outputs):
    out = io.StringIO()
    with redirect_stdout(out):
        runs.main(["--root", str(outputs), "--csv", "--member", "alice"])
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == leaderboard.CSV_COLUMNS
    assert [(r["status"], r["best_score"]) for r in rows] == [("finished", "0.51234"), ("running", "0.3"),
                                                              ("failed", "")]
    assert rows[0]["run_dir"] == str(outputs.resolve() / "alice/faster_rcnn_trash/2026-11-20_10-00-00")
    assert rows[0]["git_commit"] == "abc123" and rows[0]["epochs_done"] == "12"


def test_corrupt_summary_and_missing_summary_are_listed_not_fatal(outputs):
    make_run(outputs, "carol/x/2026-11-23_10-00-00", summary='{"status": "runn')
    make_run(outputs, "carol/z/2026-11-23_12-00-00", summary="[1, 2]")
    make_run(outputs, "carol/y/2026-11-23_11-00-00", summary=None,
             config={"model": {"name": "fcos"}, "data": {"name": "trash", "fold": 2}, "schedule": {"epochs": 24}})
    lines = table_lines(outputs, "--member", "carol")[2:]
    bad = line_of(lines, "carol/x/2026-11-23_10-00-00").split()
    assert bad[:2] == ["carol", "x"] and "unreadable" in bad
    died = line_of(lines, "carol/y/2026-11-23_11-00-00").split()
    assert died[:7] == ["carol", "y", "fcos", "trash", "2", "no-summary", "-/24"]
    assert " unreadable " in line_of(lines, "carol/z/2026-11-23_12-00-00")
    assert len(lines) == 3


def test_detect_test_result_folders_are_not_runs(outputs):
    test_cfg = {"run": None, "checkpoint": "x.pth", "mode": "eval"}
    make_run(outputs, "alice/test/eval_2026-11-23_10-00-00", config=test_cfg)  # a loose .pth's test
    make_run(outputs, "alice/faster_rcnn_trash/2026-11-20_10-00-00/test/eval_2026-11-23_10-00-00", config=test_cfg)
    assert len(table_lines(outputs)) == 2 + 5


def test_empty_and_missing_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert runs.main(["--root", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.strip().startswith("No runs under")
    assert runs.main(["--root", str(tmp_path / "missing")]) == 1  # a folder that is not there: exit 1
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_diff_prints_exactly_the_changed_keys_and_the_overrides(tmp_path, capsys):
    base = {"model": {"name": "faster_rcnn", "neck": {"out_channels": 256, "extra": "max_pool"}},
            "schedule": {"lr": 0.02, "milestones": [8, 11], "amp": 1}, "data": {"name": "trash", "root": "/d"}}
    other = {"model": {"name": "faster_rcnn", "neck": {"out_channels": 128}},
             "schedule": {"lr": 0.01, "milestones": [8, 11], "amp": True, "grad_clip": 35},
             "data": {"name": "trash", "root": "/d"}}
    a = make_run(tmp_path, "a", config=base, overrides=["schedule.lr=0.02"])
    b = make_run(tmp_path, "b", config=other, overrides=["schedule.lr=0.01", "model.neck.out_channels=128"])
    assert runs.main(["--diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    changed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert changed == ["model.neck.extra: max_pool -> (absent)", "model.neck.out_channels: 256 -> 128",
                       "schedule.amp: 1 -> true", "schedule.grad_clip: (absent) -> 35", "schedule.lr: 0.02 -> 0.01"]
    assert "overrides A: schedule.lr=0.02" in out
    assert "overrides B: schedule.lr=0.01 model.neck.out_channels=128" in out
    assert "milestones" not in out and "data." not in out

    (tmp_path / "not_a_run").mkdir()
    assert runs.main(["--diff", str(a), str(tmp_path / "not_a_run")]) == 1
    assert "not_a_run" in capsys.readouterr().err


def test_cli_starts_without_torch(outputs):
    check = "import detect.runs, sys; assert 'torch' not in sys.modules and 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], cwd=REPO, check=True, timeout=60)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "detect.runs", "--root", str(outputs)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0.7000" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "omegaconf" not in imported and "hydra" not in imported


def test_leaderboard_of_a_real_run(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "outputs" / "tester" / "demo" / "2026-01-01_00-00-00"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.max_iters_per_epoch=1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    score = json.loads((run_dir / "summary.json").read_text())["best_score"]
    proc = subprocess.run([sys.executable, "-m", "detect.runs", "--root", str(tmp_path / "outputs")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[2].split()
    assert row[:2] == ["tester", "faster_rcnn_r18_demo_demo"]
    assert row[5:9] == ["finished", "1/1", f"{score:.4f}", "1"]
    assert row[-1] == str(run_dir)  # as it can be pasted into detect.test run=... (the root as given, joined)


def test_detect_browse_folders_are_not_runs(tmp_path):
    outputs = tmp_path / "outputs"
    browse = make_run(outputs, "alice/browse/demo_2026-11-20_10-00-00", config={"schedule": {"epochs": 1}})
    (browse / "browse.log").write_text("drawn\n")
    make_run(outputs, "alice/demo/2026-11-20_10-00-00", config={"schedule": {"epochs": 1}})
    assert [r["rel"] for r in leaderboard.read_runs(outputs)] == ["alice/demo/2026-11-20_10-00-00"]
