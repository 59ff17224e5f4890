"""The command-line check of detect.train / detect.test: unknown keys, wrong types and missing values
are named before Hydra creates a run directory; valid command lines and Hydra's own errors pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from detect.config.check import find_problems
from tests.conftest import CONF, REPO, run_cli
from tests.test_config import options


def run_test_cli(args: list[str]):
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    return subprocess.run([sys.executable, "-m", "detect.test", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, expected", [
    (["schedule.lrr=0.1"],
     ["Unknown config key 'schedule.lrr' (in schedule=demo). Did you mean 'schedule.lr'?",
      # lr_scheduler: the torch schedulers; momentum: in every schedule since the schema lists it (null for AdamW)
      "Valid keys of schedule: accumulate, auto_scale_lr, ema, epochs, gamma, grad_clip, lr, lr_scheduler"]),
    (["model=cascade_rcnn", "model.neck.out_chanels=64"],
     ["Unknown config key 'model.neck.out_chanels' (in model=cascade_rcnn, model/neck=fpn).",
      "Did you mean 'model.neck.out_channels'?", "Valid keys of model.neck: ", "+model.neck.out_chanels=<value>"]),
    (["data.batch_sise=2"], ["Did you mean 'data.batch_size'?", "Valid keys of data: ", " min_size, "]),
    (["schedule.lr=abc"], ["schedule.lr='abc' must be a number > 0 (e.g. schedule.lr=0.005)."]),
    (["schedule.epochs=0"], ["schedule.epochs=0 must be a whole number >= 1 (e.g. schedule.epochs=12)."]),
    (["data.batch_size=two"], ["data.batch_size='two' must be a whole number >= 1 (e.g. data.batch_size=4)."]),
    (["data=coco"], ["data.root is required for data=coco: pass data.root=/path/to/dataset."]),
])
def test_a_bad_override_stops_with_one_message_and_no_run_dir(tmp_path, args, expected):
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'runs' / 'run'}"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one problem, one line
    assert not (tmp_path / "runs").exists()


def test_a_typo_in_one_key_of_a_sweep_stops_the_whole_sweep_before_it_starts(tmp_path):
    proc = run_cli(["-m", "data.fold=0,1", "schedule.lrr=0.01,0.02", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Unknown config key 'schedule.lrr'" in proc.stderr and "Did you mean 'schedule.lr'?" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_detect_test_names_its_own_keys():
    proc = run_test_cli(["score_thresold=0.1", "run=/no/such/run"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Unknown config key 'score_thresold'. Did you mean 'score_threshold'?" in proc.stderr
    assert "Valid top-level keys: " in proc.stderr and "max_detections" in proc.stderr


@pytest.mark.parametrize("args", [
    ["experiment=member_a/cascade_r50_fold0", "schedule.lr=0.01"],
    ["model=member_a/cascade_bifpn", "model.neck.num_repeats=2"],
    ["+schedule.new_key=1"],
    ["schedule=1x", "~schedule.optimizer.momentum", "schedule.optimizer._target_=torch.optim.Adam"],
    ["-m", "hydra/launcher=local_parallel", "schedule.lr=0.01,0.02"],
    ["hparams_search=demo_optuna"],
    ["-m", "hparams_search=demo_optuna", "schedule.lr=interval(0.001,0.01)"],
    ["model/backbone=resnet18", "model.backbone.frozen_stages=-1", "data=trash", "data.fold=0"],
    ["-m", "schedule.epochs=range(1,3)", "data.min_size=512,640", "runtime.seed=0"],
    ["data=coco", "data.root=/some/coco", "schedule.lr=1e-3", "schedule.milestones=[]", "runtime.threads=null"],
    ["runtime.amp=true", "runtime.pin_memory=false", "runtime.max_keep_ckpts=-1", f"hydra.run.dir={REPO}/x"],
])
def test_valid_command_lines_pass(args):
    assert find_problems(args, "train") == []


@pytest.mark.parametrize("args, expected", [
    (["-m", "schedule.epochs=2,0,abc"], ["schedule.epochs=0 must be a whole number >= 1",
                                         "schedule.epochs='abc' must be a whole number >= 1"]),
    (["schedule.milestones=8"], ["schedule.milestones=8 must be a list of whole numbers >= 1 "
                                 "(e.g. schedule.milestones=[8,11])."]),
    (["runtime.amp=yes"], ["runtime.amp='yes' must be one of false, true, 'fp16' or 'bf16'"]),
    (["runtime.pin_memory=sometimes"], ["runtime.pin_memory='sometimes' must be one of 'auto', true or false"]),
    (["data.fold=-1"], ["data.fold=-1 must be a whole number >= 0 or null (e.g. data.fold=0)."]),
    (["data.min_size=800.5"], ["data.min_size=800.5 must be a whole number >= 1"]),
    (["schedule.lr=nan"], ["schedule.lr=nan must be a number > 0"]),
    (["schedule.lr=null"], ["schedule.lr=null must be a number > 0"]),
    (["runtime.seed=-3", "runtime.workers=-1"], ["runtime.seed=-3 must be a whole number in [0, 4294967295]",
                                                 "runtime.workers=-1 must be auto or a whole number >= 0"]),
    (["runtime.eval_interval=often"], ["runtime.eval_interval='often' must be a whole number >= 1"]),
    # Where the right name sits in another section, or the typo is in the section's name.
    (["schedule.batch_size=2"], ["Did you mean 'data.batch_size'"]),
    (["schedul.lr=0.1"], ["Unknown config key 'schedul.lr'. Did you mean 'schedule.lr'? Valid top-level keys: data,"]),
    (["schedule.lr.value=0.1"], ["schedule.lr is a value (0.001), not a section"]),
    (["-m", "hparams_search=demo_optuna", "schedule.lrr=interval(0.001,0.01)"], ["Did you mean 'schedule.lr'?"]),
])
def test_wrong_values_and_keys_are_named(args, expected):
    problems = find_problems(args, "train")
    assert len(problems) == len(expected), problems
    for problem, text in zip(problems, expected):
        assert text in problem


def test_test_entry_point_values():
    assert find_problems(["-m", "checkpoint=best,last", "workers=-1", "batch_size=0"], "test") == [
        "workers=-1 must be a whole number >= 0 (e.g. workers=2).",
        "batch_size=0 must be a whole number >= 1 or null (e.g. batch_size=4).",
    ]
    assert find_problems(["run=outputs/x", "checkpoint=last", "data.root=/d", "tta=true"], "test") == []


def test_ranges_the_trainer_and_detect_test_check_again_are_named_before_any_run_dir():
    # Trainer.check_runtime and detect.test's check_test_options check them again (a call without check_cli).
    assert find_problems(["runtime.eval_interval=0"], "train") == [
        "runtime.eval_interval=0 must be a whole number >= 1 (e.g. runtime.eval_interval=1)."]
    assert find_problems(["score_threshold=2", "max_detections=0"], "test") == [
        "score_threshold=2 must be a number in [0, 1] (e.g. score_threshold=0.05).",
        "max_detections=0 must be a whole number >= 1 (e.g. max_detections=100).",
    ]
    # Their types and Enums are the schema's (detect/config/schemas.py), named here too.
    assert find_problems(["score_threshold=abc", "mode=submit"], "test") == [
        "score_threshold='abc' must be a number in [0, 1] (e.g. score_threshold=0.05).",
        "mode='submit' must be one of 'eval' or 'predict'.",
    ]


@pytest.mark.parametrize("args,hydras_words", [
    (["model=cascade_rcnnn"], "Could not find 'model/cascade_rcnnn'\n\nAvailable options in 'model':"),
    (["hydra.run.dirr=x"], "Could not override 'hydra.run.dirr'."),  # hydra.* keys are Hydra's
    (["~schedule.optimizer.momentumm"], "'schedule.optimizer.momentumm' does not exist"),  # a bad deletion
    (["schedule.lr=[1,"], "no viable alternative at input '[1,'"),  # a syntax error
])
def test_hydras_own_errors_keep_hydras_words_but_exit_2_like_the_others(args, hydras_words):
    problems = find_problems(args, "train")
    assert len(problems) == 1 and hydras_words in problems[0] and "Config search path" not in problems[0]


@pytest.mark.parametrize("args", [
    ["--help", "schedule.lrr=1"], ["-c", "job"], ["--info"], ["-sc", "install=bash"],
])
def test_hydras_flags_are_left_to_hydra(args):
    assert find_problems(args, "train") == []


def test_printing_the_config_is_checked_too_but_may_show_required_values():
    # Hydra would fail on these with its own multi-line message: --cfg gets the run's one line.
    assert find_problems(["--cfg", "job", "schedule.lrr=1"], "train")[0].startswith(
        "Unknown config key 'schedule.lrr'")
    assert find_problems(["-c", "hydra", "--resolve", "schedule.lr=abc"], "train") == [
        "schedule.lr='abc' must be a number > 0 (e.g. schedule.lr=0.005)."]
    # A config with a `???` is worth printing (to see what is missing): only a run needs the value.
    assert find_problems(["--cfg", "job", "data=coco"], "train") == []
    assert find_problems(["data=coco"], "train") == [
        "data.root is required for data=coco: pass data.root=/path/to/dataset."]


def test_an_unknown_group_option_keeps_hydras_list_of_options(tmp_path):
    proc = run_cli(["model=cascade_rcnnn", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and "Could not find 'model/cascade_rcnnn'" in proc.stderr  # a config error
    assert not (tmp_path / "run").exists()
    assert "Available options in 'model'" in proc.stderr and "cascade_rcnn" in proc.stderr


def test_unknown_keys_of_a_search_space_are_named(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "hparams_search" / "demo_optuna.yaml").read_text()
    (conf / "hparams_search" / "typo.yaml").write_text(text.replace("schedule.weight_decay:", "schedule.weight_decy:"))
    problems = find_problems(["hparams_search=typo"], "train", config_dir=conf)
    assert len(problems) == 1 and problems[0].startswith(
        "Unknown config key 'schedule.weight_decy' (in hydra.sweeper.params of hparams_search=typo). "
        "Did you mean 'schedule.weight_decay'?")


def test_every_shipped_option_passes_the_check():
    for group in ["model", "data", "schedule", "runtime", "experiment"]:
        for option in options(group):
            extra = ["data.root=/some/root"] if option == "coco" else []
            assert find_problems([f"{group}={option}", *extra], "train") == [], f"{group}={option}"


def test_the_check_does_not_import_torch():
    code = ("import sys; from detect.config.check import find_problems; "
            "assert find_problems(['model=cascade_rcnn', 'schedule.lr=abc'], 'train'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("option,listed", [
    ("member_a/typo", "Options of member_a: member_a/cascade_bifpn_fold0, member_a/cascade_demo"),
    ("member_a", "Options of member_a: member_a/cascade_bifpn_fold0"),  # a member's folder is not an experiment
])
def test_an_experiment_that_does_not_exist_is_an_error_listing_the_members_experiments(tmp_path, option, listed):
    # It used to be an `optional` default: the typo trained the default demo model and exited 0.
    problems = find_problems([f"experiment={option}"], "train")
    assert len(problems) == 1 and problems[0].startswith(f"experiment={option}: conf/experiment/{option}.yaml does "
                                                         "not exist.") and listed in problems[0]
    proc = run_cli([f"experiment={option}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and listed in proc.stderr and not (tmp_path / "run").exists()
