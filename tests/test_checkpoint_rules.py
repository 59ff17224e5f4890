"""Best-checkpoint rule, pruning, atomic writes and safe loading."""

from __future__ import annotations

import math

import pytest
import torch

from detect.run.checkpoints import (
    CheckpointError,
    is_better,
    load_checkpoint,
    prune_epoch_checkpoints,
    save_checkpoint,
)


@pytest.mark.parametrize("new,best,expected", [
    (0.5, None, True), (0.6, 0.5, True), (0.5, 0.5, False), (0.4, 0.5, False),
    (math.nan, 0.5, False), (math.nan, None, False), (None, 0.5, False), (0.1, math.nan, True),
    (-1.0, None, False),  # COCO's "nothing to score" (a val split without boxes) is never a "New best"
])
def test_best_rule_better_replaces_equal_worse_or_nan_keep(new, best, expected):
    assert is_better(new, best) is expected


def test_pruning_keeps_the_newest_epochs_and_never_touches_best_or_last(tmp_path):
    for name in ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth", "epoch_10.pth", "best_bbox_mAP_50_epoch_1.pth",
                 "last.pth"]:
        (tmp_path / name).write_bytes(b"x")
    removed = prune_epoch_checkpoints(tmp_path, max_keep=2)
    assert sorted(p.name for p in removed) == ["epoch_1.pth", "epoch_2.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_bbox_mAP_50_epoch_1.pth", "epoch_10.pth",
                                                          "epoch_3.pth", "last.pth"]
    assert prune_epoch_checkpoints(tmp_path, max_keep=-1) == []


def test_save_is_atomic_and_load_refuses_broken_or_foreign_files(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1 and not list(tmp_path.glob("*.tmp"))
    assert load_checkpoint(tmp_path)["epoch"] == 1  # a folder means its last.pth

    path.write_bytes(path.read_bytes()[:50])  # truncated by a full disk
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    torch.save({"weights": 1}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a detect checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_a_val_split_without_boxes_keeps_no_best_and_says_why(tmp_path, caplog):
    from detect.run import RunDir
    from detect.run.checkpoints import CheckpointManager

    manager = CheckpointManager(RunDir(tmp_path), "bbox_mAP_50", 3)
    assert manager.save_best_if_better(lambda: {"epoch": 1}, 1, -1.0) is False
    assert "COCO found nothing to score (the val split has no ground-truth box" in caplog.text
    assert "New best" not in caplog.text and not list(tmp_path.rglob("*.pth"))


def test_a_run_whose_val_split_has_no_box_keeps_no_best(tiny_demo_root, tmp_path, caplog):
    import json
    import shutil

    from omegaconf import open_dict

    from detect.engine.fit import fit
    from tests.conftest import TINY, compose_train

    root = tmp_path / "data"
    shutil.copytree(tiny_demo_root, root)
    val = json.loads((root / "val.json").read_text())
    (root / "val.json").write_text(json.dumps({**val, "annotations": []}))
    cfg = compose_train([f"data.root={root}", *TINY, "runtime.max_iters_per_epoch=1", "schedule.epochs=1"])
    with open_dict(cfg):
        del cfg["hydra"]
    assert fit(cfg, tmp_path / "run") is None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_score"] is None
    assert "COCO found nothing to score" in caplog.text and "New best" not in caplog.text
