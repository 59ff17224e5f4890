"""k-fold split: every image in exactly one val fold, no leak between train and val, classes spread
evenly, deterministic for a seed, existing folds never silently replaced, and the folds train."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from detect.data.demo import ensure_demo_data
from detect.data.kfold import split_files, write_splits
from detect.errors import DataConfigError
from tests.conftest import REPO, SHARED_DATA, run_cli, tiny_train_args

# Stated tolerance: a class with at least 100 boxes has 1/k +- 0.03 of them in every val fold.
SHARE_TOLERANCE = 0.03


def check_folds(coco: dict, num_folds: int, seed: int) -> None:
    files = split_files(coco, num_folds, seed)
    all_ids = {img["id"] for img in coco["images"]}
    val_sets = [{img["id"] for img in files[f"val{k}.json"]["images"]} for k in range(num_folds)]
    assert sorted(i for s in val_sets for i in s) == sorted(all_ids)  # each image in exactly one val fold
    cats = sorted(c["id"] for c in coco["categories"])
    totals = np.array([sum(a["category_id"] == c for a in coco["annotations"]) for c in cats])
    for k, val_ids in enumerate(val_sets):
        train, val = files[f"train{k}.json"], files[f"val{k}.json"]
        train_ids = {img["id"] for img in train["images"]}
        assert not train_ids & val_ids and train_ids | val_ids == all_ids
        assert all(a["image_id"] in val_ids for a in val["annotations"])
        assert len(train["annotations"]) + len(val["annotations"]) == len(coco["annotations"])
        assert train["categories"] == val["categories"] == coco["categories"]
        counts = np.array([sum(a["category_id"] == c for a in val["annotations"]) for c in cats])
        shares = counts / np.maximum(totals, 1)
        big = totals >= 100
        assert np.all(np.abs(shares[big] - 1 / num_folds) <= SHARE_TOLERANCE), (k, shares)


def test_folds_of_the_demo_data_are_disjoint_complete_and_stratified(tmp_path):
    root = ensure_demo_data(tmp_path / "demo", seed=3, num_train=120, num_val=1, min_px=64, max_px=80)
    check_folds(json.loads((root / "train.json").read_text()), 5, 411)


@pytest.mark.skipif(not (SHARED_DATA / "medical_waste").is_dir(), reason="../shared/data/medical_waste is absent")
def test_folds_of_real_photos_are_disjoint_complete_and_stratified():
    coco = json.loads((SHARED_DATA / "medical_waste" / "train.json").read_text())
    check_folds(coco, 5, 411)
    check_folds(coco, 3, 0)


def test_same_seed_same_bytes_and_existing_folds_are_not_replaced(tmp_path, tiny_demo_root):
    ann = tiny_demo_root / "train.json"
    first, report = write_splits(ann, 4, 411, tmp_path / "a")
    again, _ = write_splits(ann, 4, 411, tmp_path / "b")
    assert sorted(first) == [f"{s}{k}.json" for s in ("train", "val") for k in range(4)]
    assert all(first[n].read_bytes() == again[n].read_bytes() for n in first)
    assert "share of each class's boxes" in report
    write_splits(ann, 4, 411, tmp_path / "a")  # identical content: rewriting is harmless
    with pytest.raises(DataConfigError, match="--overwrite"):
        write_splits(ann, 4, 7, tmp_path / "a")
    write_splits(ann, 4, 7, tmp_path / "a", overwrite=True)
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "b" / n).read_bytes() for n in first)


def test_bad_input_is_named():
    coco = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    with pytest.raises(DataConfigError, match="1 images cannot fill 5 folds"):
        split_files(coco, 5, 0)
    with pytest.raises(DataConfigError, match="at least 2 folds"):
        split_files(coco, 1, 0)
    coco["images"].append({"id": 2})
    coco["annotations"].append({"id": 9, "image_id": 3, "category_id": 1})
    with pytest.raises(DataConfigError, match="Annotation 9 refers to image 3"):
        split_files(coco, 2, 0)


def test_the_script_writes_folds_that_train(tmp_path, tiny_demo_root):
    root = tmp_path / "data"
    shutil.copytree(tiny_demo_root, root)
    proc = subprocess.run([sys.executable, "scripts/kfold_split.py", str(root / "train.json"), "--folds", "2"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 files" in proc.stdout
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(root, run_dir, "data.fold=1", "schedule.epochs=1", "runtime.max_iters_per_epoch=1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert "from train1.json" in log and "from val1.json" in log
    again = subprocess.run([sys.executable, "scripts/kfold_split.py", str(root / "train.json"), "--folds", "2",
                            "--seed", "5"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
