"""The README's "Add a module" walkthrough works as written: its neck class and config, kept outside
the repository, train a Cascade R-CNN selected with model/neck=lateral."""

from __future__ import annotations

import json
import re

import torch

from tests.conftest import REPO, run_cli, tiny_train_args


def readme_block(first_line: str) -> str:
    """The fenced code block of README.md whose first line is `first_line`."""
    blocks = re.findall(r"```\w*\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    matching = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(matching) == 1, f"README.md has no single code block starting with {first_line!r}"
    return matching[0]


def test_the_readme_neck_plugs_in_by_its_target_alone(tmp_path, tiny_demo_root):
    (tmp_path / "my_modules").mkdir()
    (tmp_path / "my_modules" / "lateral_neck.py").write_text(readme_block("# my_modules/lateral_neck.py"))
    conf = tmp_path / "my_conf" / "model" / "neck"
    conf.mkdir(parents=True)
    (conf / "lateral.yaml").write_text(readme_block("# conf/model/neck/lateral.yaml"))

    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "model=cascade_rcnn", "model/neck=lateral",
                                   f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "model/backbone=resnet18",
                                   "model.neck.out_channels=32", "model.roi.representation_size=32",
                                   "model.rpn.post_nms_top_n_train=200", "schedule=demo", "schedule.epochs=1",
                                   "runtime.max_iters_per_epoch=2"),
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    state = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)["model"]
    assert "backbone.neck.lateral.3.weight" in state  # the user's neck, one projection per backbone level
    assert not any(key.startswith("backbone.neck.fpn") for key in state)
