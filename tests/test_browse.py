"""`python -m detect.browse`: sample images with their boxes after the training transforms and the
model's resize, one PNG each and grid.png; bad values stop with one message; `--help` imports no torch."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image

from detect.plots.browse import GRID_SPACING, class_colors
from tests.conftest import REPO, TINY
from tests.test_cli_startup import run_module

MIN_SIZE, MAX_SIZE = 96, 128  # data.min_size / data.max_size of TINY


def run_browse(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    return subprocess.run([sys.executable, "-m", "detect.browse", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def shown_size(width: int, height: int) -> tuple[int, int]:
    """(height, width) after torchvision's GeneralizedRCNNTransform resize, worked out by hand."""
    scale = min(MIN_SIZE / min(width, height), MAX_SIZE / max(width, height))
    return math.floor(height * scale), math.floor(width * scale)


def images_by_stem(root: Path, split: str) -> tuple[dict[str, dict], dict[int, set[int]], list[str]]:
    """{file stem: image entry}, {image id: labels 1..K of its boxes}, class names of the split's json."""
    coco = json.loads((root / f"{split}.json").read_text())
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    labels: dict[int, set[int]] = {}
    for ann in coco["annotations"]:
        labels.setdefault(ann["image_id"], set()).add(label_of[ann["category_id"]])
    return {Path(i["file_name"]).stem: i for i in coco["images"]}, labels, [c["name"] for c in categories]


def pixels_of(image: torch.Tensor, color: tuple[int, int, int]) -> int:
    return int((image == torch.tensor(color, dtype=torch.uint8)[:, None, None]).all(dim=0).sum())


def test_train_split_writes_one_png_per_image_at_the_model_size_with_boxes_and_a_grid(tiny_demo_root, tmp_path):
    out = tmp_path / "browse"
    proc = run_browse([f"data.root={tiny_demo_root}", f"out={out}", *TINY, "num_images=5", "grid_columns=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(p for p in out.glob("*.png") if p.name != "grid.png")
    assert len(pngs) == 5 and (out / "grid.png").is_file()
    entries, labels_of_image, classes = images_by_stem(tiny_demo_root, "train")
    colors = class_colors(len(classes))
    sizes = []
    for place, png in enumerate(pngs):
        match = re.fullmatch(r"(\d+)_(.+)\.png", png.name)
        assert match and int(match[1]) == place, png.name  # NN_<file stem>.png, NN its place in the grid
        entry = entries[match[2]]
        picture = read_image(str(png))
        assert picture.shape[0] == 3
        assert tuple(picture.shape[-2:]) == shown_size(entry["width"], entry["height"]), png.name
        # Boxes are drawn, one colour per class: each of the image's classes has its outline (hundreds
        # of pixels of exactly its colour); the other classes' colours hardly occur (the noisy images
        # hold a few such pixels by chance).
        counts = {label: pixels_of(picture, color) for label, color in enumerate(colors, start=1)}
        present = labels_of_image[entry["id"]]
        assert all(counts[label] >= 100 for label in present), (png.name, present, counts)
        assert all(counts[label] < 50 for label in counts if label not in present), (png.name, present, counts)
        sizes.append(picture.shape[-2:])
    # grid.png: 4 columns, 2 rows of cells as large as the largest image, GRID_SPACING apart.
    cell_h, cell_w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    grid = read_image(str(out / "grid.png"))
    assert tuple(grid.shape[-2:]) == (2 * (cell_h + GRID_SPACING) + GRID_SPACING,
                                      4 * (cell_w + GRID_SPACING) + GRID_SPACING)
    log = (out / "browse.log").read_text()
    assert "training transforms (horizontal flip p=0.5)" in log
    assert f"shorter side {MIN_SIZE} px unless the longer would pass {MAX_SIZE} px" in log
    assert len(re.findall(r"\.png: train/.*shown \(\d+x\d+ loaded\), \d+ boxes .*flipped: (yes|no)", log)) == 5


def test_val_split_default_folder_and_all_images_when_fewer_than_asked(tiny_demo_root, tmp_path):
    proc = run_browse([f"data.root={tiny_demo_root}", *TINY, "split=val", "num_images=100"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = (tmp_path / "outputs" / "tester" / "browse").glob("demo_*")  # out=null: outputs/<member>/browse/...
    assert len([p for p in out.glob("*.png") if p.name != "grid.png"]) == 4  # the tiny val split holds 4
    assert (out / "grid.png").is_file() and (out / ".hydra" / "config.yaml").is_file()
    log = (out / "browse.log").read_text()
    assert "after the evaluation transforms" in log and "the split holds only 4 images" in log
    assert log.count("flipped: no") == 4


def test_the_same_seed_gives_the_same_images_and_flips(tiny_demo_root, tmp_path):
    proc = run_browse(["-m", f"data.root={tiny_demo_root}", f"out={tmp_path / 'sweep'}", *TINY, "num_images=3",
                       "seed=7,7"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    assert sorted(p.name for p in first.glob("*.png")) == sorted(p.name for p in second.glob("*.png"))
    assert (first / "grid.png").read_bytes() == (second / "grid.png").read_bytes()
    assert not (tmp_path / "sweep" / "sweep_summary.md").exists()  # training's sweep summary is off here


@pytest.mark.parametrize("arg, message", [
    ("num_images=0", "num_images=0 must be a whole number >= 1"),
    ("split=test", "split='test' must be one of 'train' or 'val'"),
    ("grid_columns=0", "grid_columns=0 must be a whole number >= 1"),
])
def test_a_bad_value_stops_with_one_message_naming_the_key(tiny_demo_root, tmp_path, arg, message):
    proc = run_browse([f"data.root={tiny_demo_root}", f"out={tmp_path / 'out'}", *TINY, arg])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_val_of_a_data_set_without_a_val_file_says_how_to_get_one(tiny_demo_root, tmp_path):
    proc = run_browse(["data=trash", f"data.root={tiny_demo_root}", f"out={tmp_path / 'out'}", "split=val"])
    assert proc.returncode == 2  # a config error: data.fold, data.val_ann or split=train fixes it
    output = proc.stdout + proc.stderr
    assert "split=val: data=trash has no val annotation file (data.val_ann=null)" in output
    assert "data.fold=k" in output and "Traceback" not in output


def test_help_is_browses_own_and_imports_no_torch():
    code, heavy, out = run_module("detect.browse", "--help")
    assert code == 0 and heavy == [], heavy
    assert out.startswith("python -m detect.browse")
    config = out.split("== Config ==")[1]
    assert "num_images: 16" in config and "split: train" in config and "seed: ${runtime.seed}" in config
    assert "  name: faster_rcnn_r18_demo" in config  # the training config comes with it


def test_cfg_job_composes_the_training_config_without_torch():
    code, heavy, out = run_module("detect.browse", "--cfg", "job", "experiment=member_a/cascade_demo")
    assert code == 0 and heavy == [], heavy
    assert "run_name: cascade_demo" in out and "name: cascade_rcnn_r18_demo" in out and "grid_columns: 4" in out
