"""Every `python -m detect.<command>` of the README under the same rules (detect/cli.py):

- a usage or config error exits 2 before any work: no run folder, no output file;
- a failure during the work (a file it reads is missing or damaged) exits 1;
- either way the user reads one message line and no traceback;
- Ctrl-C exits 130 with one line.

Each case runs the real command in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detect.cli import EXIT_INTERRUPTED, run_command
from tests.conftest import REPO

COCO = {
    "images": [{"id": 1, "file_name": "val/1.jpg", "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "Paper"}, {"id": 2, "name": "Metal"}],
}
SUBMISSION = "PredictionString,image_id\n0 0.9 1 1 11 11,val/1.jpg\n"


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    """A tiny val.json, a submission CSV predicting it, a damaged json and a folder that is not a run."""
    (tmp_path / "val.json").write_text(json.dumps(COCO))
    (tmp_path / "sub.csv").write_text(SUBMISSION)
    (tmp_path / "broken.json").write_text('{"images": [')
    (tmp_path / "not_a_run").mkdir()
    return tmp_path


def run(command: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", f"detect.{command}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines that report the error: `error: ...` of the plain commands, `[ERROR]` log lines of the
    Hydra commands, or the config check's lines (it prints only problems)."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    marked = [line for line in lines if line.startswith("error: ") or "[ERROR]" in line]
    return marked or [line for line in proc.stderr.splitlines() if line.strip()]


def assert_one_message(proc: subprocess.CompletedProcess, code: int, words: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and words in lines[0], lines


# (command, arguments given the `files` folder, the words the message must hold)
USAGE_ERRORS = [
    ("train", lambda d: [f"hydra.run.dir={d / 'run'}", "schedule.lrr=0.01"], "Unknown config key 'schedule.lrr'"),
    ("test", lambda d: [f"hydra.run.dir={d / 'run'}", "checkpoint=best"], "checkpoint=best needs run=<run dir>"),
    ("browse", lambda d: [f"hydra.run.dir={d / 'run'}", "num_images=0"], "num_images=0 must be a whole number >= 1"),
    ("report", lambda d: [f"run={d / 'run'}", "confusion_iou_thr=2"], "confusion_iou_thr=2.0 is out of range"),
    ("runs", lambda d: ["--root", str(d), "--sort", "nope"], "argument --sort: invalid choice: 'nope'"),
    ("sweep", lambda d: [], "give one sweep folder"),
    ("ensemble", lambda d: [str(d / "sub.csv"), "--val", str(d / "val.json"), "--iou-thr", "0",
                            "--out", str(d / "run")], "--iou-thr 0.0 must be in (0, 1]"),
    ("error_analysis", lambda d: [str(d / "sub.csv"), "--gt", str(d / "val.json"), "--worst", "0",
                                  "--out", str(d / "run")], "--worst 0 must be at least 1"),
    ("pseudo_labels", lambda d: [str(d / "sub.csv"), str(d / "val.json"), "--score-thr", "2",
                                 "--out", str(d / "run")], "--score-thr 2.0 must be in [0, 1]"),
    ("check_submission", lambda d: [str(d / "sub.csv")], "the following arguments are required: test_json"),
    ("new_experiment", lambda d: ["member=me", "name=x", "model=nope", f"conf_dir={d / 'run'}"],
     "has no train.yaml"),
    ("fetch_weights", lambda d: ["model=faster_rcnn", "schedule.lrr=1"], "Unknown config key 'schedule.lrr'"),
    ("profile", lambda d: [f"run={d / 'run'}", "model=fcos"], "run=... is measured as it was trained: leave out"),
    ("predict", lambda d: [f"run={d / 'run'}", "source=x", "every=0"], "every and max_detections must be at least 1"),
    ("export", lambda d: [f"run={d / 'run'}", "format=tflite"], "format=tflite is not one of onnx, torchscript"),
]

FAILURES = [  # the command line is fine; a file it names is missing or damaged
    ("train", lambda d: [f"hydra.run.dir={d / 'run'}", "data=coco", f"data.root={d / 'no_data'}"], "no_data"),
    ("test", lambda d: [f"hydra.run.dir={d / 'run'}", f"run={d / 'not_a_run'}"], "has no checkpoints/ folder"),
    ("browse", lambda d: [f"hydra.run.dir={d / 'run'}", "data=coco", f"data.root={d / 'no_data'}"], "no_data"),
    ("report", lambda d: [f"run={d / 'not_a_run'}"], "is not a run directory"),
    ("runs", lambda d: ["--root", str(d / "no_outputs")], "no such folder"),
    ("sweep", lambda d: [str(d / "no_sweep")], "is not a folder"),
    ("ensemble", lambda d: [str(d / "sub.csv"), "--val", str(d / "broken.json"), "--out", str(d / "run.csv")],
     "broken.json is not valid JSON"),
    ("error_analysis", lambda d: [str(d / "sub.csv"), "--gt", str(d / "broken.json"), "--out", str(d / "run")],
     "--gt"),
    ("pseudo_labels", lambda d: [str(d / "sub.csv"), str(d / "missing.json"), "--out", str(d / "run.json")],
     "missing.json does not exist"),
    ("check_submission", lambda d: [str(d / "sub.csv"), str(d / "broken.json")], "is not valid JSON"),
    ("profile", lambda d: [f"run={d / 'not_a_run'}"], "has no checkpoints/ folder"),
    ("predict", lambda d: [f"run={d / 'not_a_run'}", f"source={d / 'sub.csv'}"], "has no checkpoints/ folder"),
    ("export", lambda d: [f"run={d / 'not_a_run'}"], "has no checkpoints/ folder"),
]


@pytest.mark.parametrize("command,args,words", USAGE_ERRORS, ids=[c for c, _, _ in USAGE_ERRORS])
def test_a_usage_error_exits_2_with_one_line_before_any_output(files, command, args, words):
    proc = run(command, *args(files))
    assert_one_message(proc, 2, words)
    assert not (files / "run").exists()  # no run folder, no output file


@pytest.mark.parametrize("command,args,words", FAILURES, ids=[c for c, _, _ in FAILURES])
def test_a_failure_during_the_work_exits_1_with_one_line(files, command, args, words):
    proc = run(command, *args(files))
    assert_one_message(proc, 1, words)
    assert not list(files.glob("run.*"))  # the file commands wrote nothing


def test_new_experiment_refuses_an_existing_file_as_a_usage_error(tmp_path):
    conf = tmp_path / "conf"
    (conf / "experiment" / "me").mkdir(parents=True)
    (conf / "train.yaml").write_text("defaults: []\n")
    (conf / "experiment" / "me" / "x.yaml").write_text("# mine\n")
    proc = run("new_experiment", "member=me", "name=x", "model=faster_rcnn", "data=trash", f"conf_dir={conf}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (conf / "experiment" / "me" / "x.yaml").read_text() == "# mine\n"


def test_ctrl_c_in_a_command_exits_130_with_one_line(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_command(interrupted, []) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "Interrupted.\n"


def test_every_command_of_the_readme_is_covered():
    readme = (REPO / "README.md").read_text()
    import re

    commands = set(re.findall(r"python -m detect\.(\w+)", readme))
    covered = {c for c, _, _ in USAGE_ERRORS}
    assert commands - covered == set(), f"add the new commands to {__file__}"
