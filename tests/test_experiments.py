"""Every shipped experiment trains; the scaffold writes experiments that compose and never overwrites one."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from detect.data.kfold import write_splits
from detect.new_experiment import main as new_experiment
from tests.conftest import CONF, REPO, TINY, compose_train

EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_trash_root(tiny_demo_root, tmp_path_factory):
    """The tiny demo set (10 trash classes) with 5-fold files, laid out like the competition folder."""
    root = tmp_path_factory.mktemp("trash") / "trash"
    shutil.copytree(tiny_demo_root, root)
    write_splits(root / "train.json", num_folds=5, seed=411)
    return root


def tiny_overrides(experiment: str, root) -> list[str]:
    """Point the experiment at the tiny set, at tiny sizes, for one iteration without downloads."""
    cfg = compose_train([f"experiment={experiment}", f"data.root={root}"])
    overrides = [f"experiment={experiment}", f"data.root={root}", "schedule.epochs=1",
                 "runtime.max_iters_per_epoch=1", "runtime.threads=1"]
    overrides += [o for o in TINY if not o.startswith("data.demo.") or "demo" in cfg.data]
    if OmegaConf.select(cfg, "model.backbone.weights"):
        overrides.append("model.backbone.weights=null")  # no internet here; the real path is tested elsewhere
    if OmegaConf.select(cfg, "runtime.load_from"):
        overrides.append("runtime.load_from=null")  # a COCO start: tested offline in tests/test_pretrained.py
    return overrides


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_one_iteration(experiment, tiny_trash_root, tmp_path):
    from detect.engine.fit import fit

    cfg = compose_train(tiny_overrides(experiment, tiny_trash_root))
    with open_dict(cfg):
        del cfg["hydra"]
    run_dir = tmp_path / "run"
    best = fit(cfg, run_dir)
    summary = (run_dir / "summary.json").read_text()
    assert '"status": "finished"' in summary and (run_dir / "checkpoints" / "last.pth").is_file()
    if cfg.data.get("fold") is not None or cfg.data.val_ann:
        assert best is not None  # evaluated on its val split


def test_the_shipped_members_each_have_a_few_experiments():
    members = {name.split("/")[0] for name in EXPERIMENTS if name.startswith("member_")}
    assert members >= {"member_a", "member_b"}
    for member in members:
        assert sum(name.startswith(member + "/") for name in EXPERIMENTS) >= 2


@pytest.fixture
def conf_copy(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    return conf


def compose_from(conf_dir, overrides):
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_scaffold_writes_an_experiment_that_composes(conf_copy, capsys):
    code = new_experiment(["member=member_c", "name=r101_fold2", "model=cascade_rcnn_r101", "data=trash", "fold=2",
                           f"conf_dir={conf_copy}"])
    assert code == 0
    path = conf_copy / "experiment" / "member_c" / "r101_fold2.yaml"
    assert f"Wrote {path}" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# @package _global_", "# python -m detect.train experiment=member_c/r101_fold2"]
    cfg = compose_from(conf_copy, ["experiment=member_c/r101_fold2"])
    assert (cfg.member, cfg.run_name, cfg.model.name, cfg.data.name, cfg.data.fold) == (
        "member_c", "r101_fold2", "cascade_rcnn_r101", "trash", 2)
    assert cfg.schedule.name == "1x"


def test_scaffold_refuses_to_overwrite(conf_copy, capsys):
    args = ["member=member_c", "name=first", f"conf_dir={conf_copy}"]
    assert new_experiment(args) == 0
    path = conf_copy / "experiment" / "member_c" / "first.yaml"
    path.write_text(path.read_text() + "schedule:  # my edits\n  lr: 0.001  # tuned\n")
    edited = path.read_text()
    assert new_experiment(args) == 2
    assert "already exists; it is not replaced" in capsys.readouterr().err
    assert path.read_text() == edited


@pytest.mark.parametrize("args, message", [
    (["member=member_c", "name=x", "model=cascade_rcnnn"], "model=cascade_rcnnn is not an option of conf/model/"),
    (["member=member_c", "name=x", "data=trsh"], "Valid: coco, demo, member_b/trash_800, trash"),
    (["member=../evil", "name=x"], "member='../evil' must be one folder name"),
    (["name=x"], "member=... is required"),
    (["member=a", "name=x", "lr=0.1"], "Unknown key 'lr'. Valid keys:"),
    (["member=a", "name=x", "fold=one"], "fold='one' must be a whole number"),
])
def test_scaffold_names_the_wrong_input(args, message, conf_copy, capsys):
    assert new_experiment([*args, f"conf_dir={conf_copy}"]) == 2
    assert message in capsys.readouterr().err
    assert not (conf_copy / "experiment" / "member_c").exists()


def test_scaffold_cli_does_not_import_torch():
    code = "import sys, detect.new_experiment; assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
