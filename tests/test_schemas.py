"""The structured-config schemas (detect/config/schemas.py): OmegaConf rejects a wrong type, a value outside an
Enum and a missing required value with the key named; the commands turn that into one line and exit 2
before any run folder exists; the Enum fields read back as plain strings."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from detect.config.check import find_problems
from detect.config.schemas import MONITOR_METRICS, SCHEMAS, register_schemas
from tests.conftest import CONF, REPO, compose_train
from tests.test_cli_startup import run_module

register_schemas()  # conf/ names its schemas (/schema/...); detect.config.register_resolvers will do it too


def compose_config(name: str, overrides: list[str], config_dir=CONF):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def run_command(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_register_schemas_is_idempotent_and_the_sections_are_typed():
    register_schemas()
    register_schemas()
    assert {f"{name}.yaml" for name in SCHEMAS} <= set(ConfigStore.instance().list("schema"))
    cfg = compose_train(["data=member_b/trash_800"])
    types = {key: OmegaConf.get_type(cfg, key).__name__ for key in ("runtime", "data", "schedule")}
    assert types == {"runtime": "RuntimeSchema", "data": "DataSchema", "schedule": "ScheduleSchema"}
    assert OmegaConf.get_type(compose_train(), "data").__name__ == "DemoDataSchema"  # data.demo: the generator's
    assert OmegaConf.get_type(compose_config("test", [])).__name__ == "DetectTestSchema"


@pytest.mark.parametrize(("name", "override", "key", "words"), [
    ("train", "schedule.lr=abc", "schedule.lr", "could not be converted to Float"),  # a wrong type
    ("train", "data.batch_size=two", "data.batch_size", "could not be converted to Integer"),
    ("train", "data.demo.num_train=many", "data.demo.num_train", "could not be converted to Integer"),
    ("test", "mode=submit", "mode", "Invalid value 'submit', expected one of [eval, predict]"),  # outside the Enum
    ("test", "tta_merge=max", "tta_merge", "expected one of [wbf, nms]"),
    ("browse", "split=test", "split", "expected one of [train, val]"),
    ("train", "schedule.lrr=0.1", "schedule.lrr", "Key 'lrr' not in 'ScheduleSchema'"),  # a key the schema lacks
])
def test_omegaconf_rejects_what_the_schema_does_not_allow_naming_the_key(name, override, key, words):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(name, [override])
    cause = str(info.value.__cause__)
    assert f"full_key: {key}" in cause and words in cause, cause


def test_a_missing_required_value_is_named():
    cfg = compose_config("train", ["data=coco"])  # data.root: ??? in conf/data/coco.yaml
    with pytest.raises(MissingMandatoryValue, match="full_key: data.root"):
        _ = cfg.data.root
    assert find_problems(["data=coco"], "train") == ["data.root is required for data=coco: pass "
                                                     "data.root=/path/to/dataset."]


def test_a_config_file_that_leaves_out_a_schema_key_is_named(tmp_path):
    # A member's data option that does not start from coco.yaml: every key its schema requires is named.
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    coco = (conf / "data" / "coco.yaml").read_text()
    (conf / "data" / "bare.yaml").write_text(coco.replace("batch_size: 2", "").replace("hflip_prob: 0.5", ""))
    problems = find_problems(["data=bare", "data.root=/x"], "train", config_dir=conf)
    assert problems == ["data.hflip_prob is required for data=bare: pass data.hflip_prob=<value>.",
                        "data.batch_size is required for data=bare: pass data.batch_size=<value>."]


def test_a_config_file_with_a_wrong_type_or_key_gets_one_line(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\ndata:\n  batch_sise: 2\n")
    (conf / "experiment" / "wrong.yaml").write_text("# @package _global_\nschedule:\n  epochs: twelve\n")
    assert find_problems(["experiment=typo"], "train", config_dir=conf) == [
        "Unknown config key 'data.batch_sise' in conf/experiment/typo.yaml. Did you mean 'data.batch_size'? "
        "Valid keys of data: aug, batch_size, classes, demo, fold, fold_train_ann, fold_val_ann, hflip_prob, max_size, "
        "mean, min_size, name, pad_divisor, pad_to, root, root_env, sampler, skip_bad_images, std, strict, test_ann, "
        "train_ann, train_keep_empty, val_ann."]
    assert find_problems(["experiment=wrong"], "train", config_dir=conf) == [
        "conf/experiment/wrong.yaml sets schedule.epochs to a value its schema rejects: Value 'twelve' of type "
        "'str' could not be converted to Integer."]


@pytest.mark.parametrize(("module", "args", "message"), [
    ("detect.train", ["schedule.lr=abc"], "schedule.lr='abc' must be a number > 0 (e.g. schedule.lr=0.005)."),
    ("detect.train", ["runtime.progress=fast"],
     "runtime.progress='fast' must be one of 'auto', 'bar' or 'lines' (e.g. runtime.progress=lines)."),
    ("detect.train", ["data.batch_size=two"],
     "data.batch_size='two' must be a whole number >= 1 (e.g. data.batch_size=4)."),
    ("detect.train", ["data=coco"], "data.root is required for data=coco: pass data.root=/path/to/dataset."),
    ("detect.train", ["runtime.monitor=mAP"], "runtime.monitor='mAP' must be one of 'bbox_mAP', 'bbox_mAP_50', "
                                              "'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m' or 'bbox_mAP_l'"),
    ("detect.test", ["run=/no/such/run", "mode=submit"], "mode='submit' must be one of 'eval' or 'predict'."),
    ("detect.browse", ["split=test"], "split='test' must be one of 'train' or 'val'."),
])
def test_the_commands_exit_2_with_one_line_and_no_run_folder(module, args, message, tmp_path):
    folder = "out=" if module == "detect.browse" else "hydra.run.dir="
    proc = run_command(module, *args, f"{folder}{tmp_path / 'runs' / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == message or proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("module", "args", "message"), [
    ("detect.train", ["schedule.lr=abc"], "schedule.lr='abc' must be a number > 0 (e.g. schedule.lr=0.005)."),
    ("detect.test", ["mode=submit"], "mode='submit' must be one of 'eval' or 'predict'."),
    ("detect.browse", ["split=test"], "split='test' must be one of 'train' or 'val'."),
])
def test_cfg_job_says_the_same_line(module, args, message):
    proc = run_command(module, "--cfg", "job", *args)
    assert (proc.returncode, proc.stderr.strip(), proc.stdout) == (2, message, "")


def test_cfg_job_prints_a_config_with_a_required_value_left_open():
    proc = run_command("detect.train", "--cfg", "job", "data=coco")
    assert proc.returncode == 0 and "  root: ???\n" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", [
    ["detect.test", "--cfg", "job", "mode=predict"],
    ["detect.browse", "--cfg", "job", "split=val"],
    ["detect.train", "--cfg", "job", "schedule=1x", "runtime.progress=lines"],
])
def test_cfg_job_works_without_torch(command):
    code, heavy, out = run_module(*command)
    assert (code, heavy) == (0, []), out[-2000:]
    assert "\nmode: predict\n" in out or "\nsplit: val\n" in out or "  progress: lines\n" in out


def test_enum_fields_read_back_as_plain_strings():
    cfg = compose_config("test", ["mode=predict", "tta_merge=nms"])
    assert "/predict_" in cfg.hydra.run.dir  # ${mode} in a string: the value, not Mode.predict
    with open_dict(cfg):
        del cfg["hydra"]  # the job's config, as a run sees it
    for key, text in [("mode", "predict"), ("tta_merge", "nms")]:
        value = cfg[key]
        assert value == text and f"{value}" == text and str(value) == text and f"{value:>8}" == text.rjust(8)
        assert isinstance(value, str) and {text: 1}[value] == 1 and json.dumps(value) == f'"{text}"'
        container = OmegaConf.to_container(cfg, resolve=True)[key]
        assert container == text and f"{container}" == text and isinstance(container, str)
    assert "\nmode: predict\n" in OmegaConf.to_yaml(cfg)  # what .hydra/config.yaml holds
    assert f"{compose_config('browse', ['split=val']).split}" == "val"


def test_the_training_config_in_a_checkpoint_is_plain_and_loads_with_weights_only():
    # runtime.monitor/progress are str fields (not Enums): the composed config that goes into a checkpoint
    # (OmegaConf.to_container) holds only builtins, so torch.load(weights_only=True) reads it back.
    cfg = compose_train(["runtime.monitor=bbox_mAP_75", "runtime.progress=lines"])
    with open_dict(cfg):
        del cfg["hydra"]
    container = OmegaConf.to_container(cfg, resolve=True)

    def kinds(value):
        if isinstance(value, dict):
            return set().union(*(kinds(v) for v in value.values()), {dict})
        if isinstance(value, list):
            return set().union(*(kinds(v) for v in value), {list})
        return {type(value)}

    assert kinds(container) <= {dict, list, str, int, float, bool, type(None)}
    assert f"best_{container['runtime']['monitor']}_epoch_3.pth" == "best_bbox_mAP_75_epoch_3.pth"
    buffer = io.BytesIO()
    torch.save({"config": container}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["config"] == container


def test_the_monitor_choices_are_the_metric_names():
    from detect.evaluation.coco_metrics import SUMMARY_KEYS

    assert list(MONITOR_METRICS) == list(SUMMARY_KEYS)


def test_open_sections_still_take_new_keys():
    cfg = compose_train(["+model.new_key=1", "+schedule.optimizer.betas=[0.8,0.9]",
                         "+schedule.lr_scheduler.main.verbose=false"])
    assert cfg.model.new_key == 1 and list(cfg.schedule.optimizer.betas) == [0.8, 0.9]
    assert find_problems(["+model.new_key=1", "schedule=1x", "~schedule.optimizer.momentum"], "train") == []
