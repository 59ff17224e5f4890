"""The quick commands (`--help`, `--cfg job`, `detect.runs`) import neither torch nor torchvision, and
`--help` (detect/config/help.py) still lists what users pick: groups, options, launchers, the config.
No timings are asserted (machines are noisy); benchmarks/scale.py and the issue give the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detect.config.help import help_text, print_help_and_exit
from tests.conftest import REPO

# Runs a module as `python -m` would, then reports its exit status and the heavy imports as the last line.
WRAPPER = """
import json, runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
sys.stdout.flush()
print("\\n" + json.dumps({"exit": code, "heavy": sorted({"torch", "torchvision"} & set(sys.modules))}))
"""


def run_module(module: str, *args: str) -> tuple[int, list[str], str]:
    """(exit status, heavy modules imported, stdout without the report line) of `python -m module args`."""
    env = {**os.environ, "DETECT_MEMBER": "tester", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", WRAPPER, module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out, _, report = proc.stdout.rstrip().rpartition("\n")
    result = json.loads(report)
    return result["exit"], result["heavy"], out


@pytest.mark.parametrize("command", [
    ["detect.train", "--help"],
    ["detect.train", "--cfg", "job"],
    ["detect.test", "--help"],
    ["detect.test", "--cfg", "job"],  # the schemas (detect/config/schemas.py) import no torch either
    ["detect.browse", "--cfg", "job"],
    ["detect.runs", "--root", "{tmp}"],
])
def test_quick_commands_exit_0_without_torch(command, tmp_path):
    module, *args = command
    code, heavy, out = run_module(module, *(a.format(tmp=tmp_path) for a in args))
    assert code == 0, out[-2000:]
    assert heavy == [], f"python -m {' '.join(command)} imported {heavy}"


def lines_of(text: str) -> dict[str, str]:
    """{'model': 'cascade_rcnn, ...'} for the `group: options` lines of the help."""
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in text.splitlines() if ": " in line}


def test_train_help_lists_groups_options_launchers_and_the_config():
    code, _, out = run_module("detect.train", "--help")
    assert code == 0
    assert out.startswith("python -m detect.train [group=option ...]")  # header of conf/train.yaml
    assert "Print the composed config with --cfg job." in out  # footer
    groups = lines_of(out.split("== Config ==")[0])
    assert "cascade_rcnn" in groups["model"].split(", ") and "faster_rcnn_r18_demo" in groups["model"].split(", ")
    for group in ("model/backbone", "model/neck", "model/member_a", "data", "data/member_b", "schedule", "runtime",
                  "experiment/member_a", "experiment/member_b", "hparams_search"):
        assert groups.get(group), f"{group} is not listed"
    assert "resnet101" in groups["model/backbone"] and "bifpn" in groups["model/neck"]
    launchers = groups["hydra/launcher"].split(", ")
    assert {"basic", "local_parallel", "local_submitit", "slurm"} <= set(launchers)  # Hydra's and conf/'s
    assert "hydra/job_logging" not in groups  # Hydra's other groups stay in --hydra-help
    config = out.split("== Config ==")[1]
    assert "  name: faster_rcnn_r18_demo" in config and "run_name: ${model.name}_${data.name}" in config
    assert "\nhydra:" not in config  # the job's config, as Hydra's help shows it


def test_help_applies_the_overrides_to_the_config():
    text = help_text(["--help", "model=cascade_rcnn", "schedule.lr=0.123"], "train")
    config = text.split("== Config ==")[1]
    assert "  name: cascade_rcnn\n" in config and "detect.models.cascade_rcnn" in config
    assert "  lr: 0.123\n" in config
    resolved = help_text(["-h", "--resolve", "data=demo"], "train").split("== Config ==")[1]
    assert "run_name: faster_rcnn_r18_demo_demo" in resolved


def test_test_help_shows_its_own_header_config_and_the_launchers():
    code, _, out = run_module("detect.test", "--help")
    assert code == 0
    assert out.startswith("python -m detect.test run=RUN_DIR")
    assert "score_threshold: 0.05" in out and "Results go to RUN_DIR/test/MODE_TIME/" in out
    groups = lines_of(out.split("== Config ==")[0])
    assert "slurm" in groups["hydra/launcher"]
    assert "model" not in groups  # the checkpoint decides the model: no training groups here


@pytest.mark.parametrize("argv", [
    ["--hydra-help"], ["--help", "-m"], ["--help", "--config-dir", "/x"], ["--cfg", "job"], ["model=cascade_rcnn"], [],
])
def test_other_command_lines_go_to_hydra(argv):
    assert help_text(argv, "train") is None


def test_an_unknown_option_prints_hydras_message_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit:
        print_help_and_exit(["--help", "model=cascade_rcnnn"], "train")
    assert exit.value.code == 2  # a config error, as in a run (detect/cli.py)
    err = capsys.readouterr().err
    assert "Could not find 'model/cascade_rcnnn'" in err and "cascade_rcnn" in err
