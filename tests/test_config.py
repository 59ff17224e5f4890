"""The config tree composes, names the keys users' scripts rely on, and documents every key."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from detect.config.schemas import register_schemas
from detect.new_experiment import SUB_GROUPS  # model/backbone=..., data/aug=...: not options of their group
from tests.conftest import CONF, compose_train

register_schemas()  # conf/ names its schemas (/schema/...); detect.config.register_resolvers will do it too

GROUPS = ["model", "data", "schedule", "runtime"]




def options(group: str) -> list[str]:
    """Options of a group, a member's own (model=member_a/cascade_bifpn) included, its sub-groups excluded."""
    paths = [p.relative_to(CONF / group) for p in (CONF / group).rglob("*.yaml")]
    return sorted(p.with_suffix("").as_posix() for p in paths if p.parts[0] not in SUB_GROUPS.get(group, set()))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_resolves(group):
    for option in options(group):
        cfg = compose_train([f"{group}={option}", "data.root=/some/coco/root"] if group == "data"
                            else [f"{group}={option}"])
        # Every interpolation of the job config resolves (the hydra node needs a live run).
        resolved = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in [*GROUPS]}
        assert resolved[group]["name" if group != "runtime" else "seed"] is not None
        assert cfg.member and cfg.run_name


def test_keys_users_scripts_rely_on_exist():
    cfg = compose_train()
    for key in ["runtime.seed", "runtime.resume_from", "runtime.load_from", "runtime.max_keep_ckpts",
                "schedule.epochs", "schedule.lr", "data.root", "data.fold", "data.batch_size"]:
        assert OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>") != "<absent>", key


def test_default_run_is_the_demo_with_its_own_schedule_and_real_runs_get_1x():
    demo = compose_train()
    assert (demo.model.name, demo.data.name, demo.schedule.name) == ("faster_rcnn_r18_demo", "demo", "demo")
    headline = compose_train(["model=faster_rcnn", "data=trash"])
    assert headline.schedule.name == "1x"
    assert headline.model.backbone.depth == 50
    # A schedule named on the command line wins over the one a model config picks.
    assert compose_train(["schedule=2x"]).schedule.epochs == 24


def test_1x_schedule_has_mmdetection_semantics():
    s = compose_train(["model=faster_rcnn"]).schedule
    assert (s.lr, s.momentum, s.weight_decay, s.warmup_iters, s.warmup_ratio) == (0.02, 0.9, 1e-4, 500, 0.001)
    assert list(s.milestones) == [8, 11] and s.epochs == 12 and s.gamma == 0.1
    assert s.optimizer.lr == 0.02 and compose_train(["schedule.lr=0.01"]).schedule.optimizer.lr == 0.01


def test_trash_data_layout_and_image_size_flow_into_the_model():
    cfg = compose_train(["model=faster_rcnn", "data=trash"])
    assert list(cfg.data.classes) == ["General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic",
                                      "Styrofoam", "Plastic bag", "Battery", "Clothing"]
    assert (cfg.data.min_size, cfg.data.max_size, cfg.data.batch_size, cfg.data.hflip_prob) == (1024, 1024, 4, 0.5)
    # torchvision's 800/1333 must not apply silently: the model takes the data's sizes.
    assert (cfg.model.min_size, cfg.model.max_size, cfg.model.size_divisible) == (1024, 1024, 32)
    assert list(cfg.model.image_mean) == [0.485, 0.456, 0.406]


def test_trash_root_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRASH_DATA_ROOT", "/datasets/trash")
    assert compose_train(["data=trash"]).data.root == "/datasets/trash"


def test_number_of_classes_is_never_written_in_the_config():
    for path in CONF.rglob("*.yaml"):
        keys = [line.split("#")[0] for line in path.read_text().splitlines()]
        assert not any("num_classes" in key for key in keys), f"{path} repeats the number of classes"


def test_member_and_run_dir_layout(monkeypatch):
    monkeypatch.setenv("DETECT_MEMBER", "alice")
    cfg = compose_train()
    assert cfg.member == "alice"
    assert cfg.hydra.run.dir.startswith("outputs/alice/faster_rcnn_r18_demo_demo/")


KEY_LINE = re.compile(r"^\s*(- )?[A-Za-z_][\w.@/]*:( |$)")


def test_every_key_has_a_comment():
    missing = []
    for path in sorted(CONF.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KEY_LINE.match(line) and "#" not in line and not line.strip().startswith(("defaults:", "- _self_")):
                missing.append(f"{path.relative_to(CONF)}:{number}: {line.strip()}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


def test_every_experiment_composes_and_names_its_command_first():
    experiments = options("experiment")
    assert experiments, "ship at least one example experiment"
    for name in experiments:
        cfg = compose_train([f"experiment={name}"])
        {key: OmegaConf.to_container(cfg[key], resolve=True) for key in GROUPS}
        lines = (CONF / "experiment" / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_"
        assert lines[1].startswith("# python -m detect.train ") and f" experiment={name}" in lines[1], lines[1]
        if name.split("/")[0].startswith("member_"):  # a member's experiment files its runs under that member
            assert cfg.member == name.split("/")[0] and cfg.run_name == name.split("/", 1)[1]
