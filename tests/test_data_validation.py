"""Data validation before training: every bad input gives an error naming the file, the id and the
fix, or a counted repair in one log line; nothing on disk is changed either way."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from detect.data.build import build_dataset, build_loader
from detect.errors import DataConfigError
from tests.conftest import CONF, SHARED_DATA, run_cli, tiny_train_args

SIZES = {1: (40, 30), 2: (50, 40), 3: (30, 30)}  # image id -> (width, height) in pixels
BASE = {
    "images": [{"id": i, "file_name": f"images/{i}.jpg", "width": w, "height": h} for i, (w, h) in SIZES.items()],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 11, "image_id": 2, "category_id": 9, "bbox": [20, 10, 8, 8], "area": 64, "iscrowd": 0},
        {"id": 12, "image_id": 3, "category_id": 5, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0},
    ],
    "categories": [{"id": 5, "name": "dog"}, {"id": 9, "name": "cat"}],
}


def write_root(root, coco: dict | str = BASE):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image_id, size in SIZES.items():
        Image.new("RGB", size, (10 * image_id, 20, 30)).save(root / "images" / f"{image_id}.jpg")
    text = coco if isinstance(coco, str) else json.dumps(coco)
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(text)
    return root


def digest(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def data_cfg(root, *overrides: str):
    cfg = OmegaConf.load(CONF / "data" / "coco.yaml")
    cfg.root = str(root)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))


def changed(**edits):
    """A copy of BASE with annotations/images edited: `ann={id: {key: value}}`, `add_ann=[...]`, ..."""
    coco = copy.deepcopy(BASE)
    for ann in coco["annotations"]:
        ann.update(edits.get("ann", {}).get(ann["id"], {}))
    coco["annotations"] += edits.get("add_ann", [])
    coco["images"] += edits.get("add_images", [])
    return coco


def ann(ann_id, image_id=1, category_id=5, bbox=(1, 1, 4, 4)):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox), "iscrowd": 0}


# ------------------------------------------------------------------------------------------ errors
# (case id, json content or None for BASE, files to delete, config overrides, split, texts the message holds)
ERRORS = [
    ("missing root", None, [], ["root=/nonexistent/data"], "train",
     ["/nonexistent/data", "does not exist", "data.root=/path/to/dataset"]),
    ("missing json", None, [], ["train_ann=nope.json"], "train", ["nope.json does not exist", "data.train_ann"]),
    ("malformed json", '{"images": [{"id": 1,', [], [], "train",
     ["train.json is not valid JSON", "line 1, column 22", "Fix the file"]),
    ("not a COCO file", "[1, 2]", [], [], "train", ["train.json", "not a COCO object"]),
    ("no images list", {"annotations": []}, [], [], "train", ["train.json has no 'images' list"]),
    ("missing image file", None, ["images/2.jpg"], [], "val",
     ["val.json: 1 of 3 image files", "images/2.jpg (image id 2)", "Check data.root"]),
    ("many missing image files",
     changed(add_images=[{"id": 100 + i, "file_name": f"gone/{i}.jpg", "width": 9, "height": 9} for i in range(8)]),
     [], [], "train", ["8 of 11 image files", "gone/0.jpg (image id 100)", "gone/4.jpg (image id 104) and 3 more."]),
    ("class count", None, [], ["classes=[cat,dog,bird]"], "train",
     ["3 configured, 2 in the json", "only configured: ['bird']", "['dog', 'cat']", "data.classes=null"]),
    ("class names", None, [], ["classes=[cat,Dog]"], "train",
     ["2 configured, 2 in the json", "Dog *", "dog *", "only configured: ['Dog']; only in the json: ['dog']"]),
    ("duplicate category id", {**BASE, "categories": [{"id": 5, "name": "dog"}, {"id": 5, "name": "cat"}]}, [], [],
     "train", ["train.json: duplicate category ids 5"]),
    ("duplicate image id", changed(add_images=[{"id": 2, "file_name": "images/3.jpg", "width": 30, "height": 30}]),
     [], [], "train", ["train.json: duplicate image ids 2", "images/2.jpg", "images/3.jpg", "renumber the images"]),
    ("duplicate file_name", changed(add_images=[{"id": 4, "file_name": "images/3.jpg", "width": 30, "height": 30}]),
     [], [], "val", ["val.json: 1 file_name(s) listed more than once", "'images/3.jpg' (image ids [3, 4])"]),
    ("declared size differs from the file",
     {**BASE, "images": [{**BASE["images"][0], "width": 1000, "height": 1000}, *BASE["images"][1:]]}, [], [], "train",
     ["train.json: 1 of 3 images have a width/height that differs from the image file",
      "images/1.jpg (image id 1): json 1000x1000, file 40x30", "EXIF rotation"]),
    ("duplicate annotation id", changed(add_ann=[ann(11), ann(12)]), [], [], "train",
     ["train.json: duplicate annotation ids 11, 12", "renumber the annotations"]),
    ("annotation of a missing image", changed(add_ann=[ann(13, image_id=99)]), [], [], "val",
     ["val.json: 1 annotations point at image ids", "annotation 13 -> image_id 99", "Add the images or remove"]),
    ("unknown category", changed(add_ann=[ann(13, category_id=42)]), [], [], "train",
     ["annotation 13 -> category_id 42", "categories [5, 9]", "add the category"]),
    ("annotation without bbox", changed(add_ann=[{"id": 13, "image_id": 1, "category_id": 5}]), [], [], "train",
     ["annotations[3] (id 13) has no 'bbox'", "[x, y, width, height] in pixels"]),
    ("strict: zero width", changed(ann={11: {"bbox": [20, 10, 0, 8]}}), [], ["strict=true"], "train",
     ["train.json: 1 boxes cannot be used", "zero or negative width or height: annotation 11",
      "data.strict=false"]),
    ("strict: not finite and malformed", changed(ann={10: {"bbox": [2, math.nan, 10, 5]}, 11: {"bbox": [1, 2, 3]},
                                                      12: {"bbox": [1, 1, "4", 4]}}),
     [], ["strict=true"], "val", ["3 not 4 finite numbers: annotation 11, 12, 10"]),
    ("strict: outside the image", changed(ann={10: {"bbox": [45, 3, 10, 5]}}), [], ["strict=true"], "train",
     ["entirely outside the image: annotation 10"]),
    ("no usable training image", changed(ann={i: {"bbox": [0, 0, -1, 5]} for i in (10, 11, 12)}), [], [], "train",
     ["train.json has no usable images for train", "3 dropped", "data.train_keep_empty=true"]),
]


@pytest.mark.parametrize("name,coco,delete,overrides,split,expected", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_stops_with_the_file_the_ids_and_the_fix(tmp_path, name, coco, delete, overrides, split,
                                                           expected):
    root = write_root(tmp_path / "data", BASE if coco is None else coco)
    for path in delete:
        (root / path).unlink()
    before = digest(root)
    with pytest.raises(DataConfigError) as err:
        build_dataset(data_cfg(root, *overrides), split, train=split == "train")
    for text in expected:
        assert text in str(err.value), str(err.value)
    assert digest(root) == before  # nothing written, nothing deleted


# ----------------------------------------------------------------------------- repaired and counted
# (case id, json, config overrides, split, texts of the one log line, WARNING?, {image id: target boxes xyxy})
REPAIRS = [
    ("clean file", BASE, [], "train", ["train.json: 3 boxes on 3 images: all usable."], False,
     {1: [[2, 3, 12, 8]]}),
    ("zero and negative size dropped", changed(ann={11: {"bbox": [20, 10, 0, 8]}, 12: {"bbox": [1, 1, 4, -2]}}),
     ["train_keep_empty=true"], "train",
     ["2 dropped (2 zero or negative width or height, e.g. annotation 11)", "data.strict=true makes"], True,
     {2: [], 3: [], 1: [[2, 3, 12, 8]]}),
    ("non-finite and malformed dropped", changed(ann={10: {"bbox": [2, math.inf, 10, 5]}, 11: {"bbox": None}}),
     [], "val", ["2 dropped (2 not 4 finite numbers, e.g. annotation 11)"], True, {1: [], 2: []}),
    ("partly outside clipped", changed(ann={10: {"bbox": [-5, 20, 20, 20]}}), [], "train",
     ["1 partly outside the image clipped to it (1 by more than 1 px), e.g. annotation 10"], True,
     {1: [[0, 20, 15, 30]]}),
    ("sub-pixel overshoot clipped quietly", changed(ann={10: {"bbox": [30, 20, 10.4, 10]}}), [], "train",
     ["clipped to it (all by less than 1 px)"], False, {1: [[30, 20, 40, 30]]}),
    ("entirely outside dropped", changed(ann={12: {"bbox": [31, 0, 5, 5]}}), ["train_keep_empty=true"], "train",
     ["1 dropped (1 entirely outside the image, e.g. annotation 12)"], True, {3: []}),
    ("empty image left out of training", changed(ann={12: {"bbox": [31, 0, 5, 5]}}), [], "train",
     ["1 images without boxes left out of training (data.train_keep_empty=true keeps them)"], True, {3: None}),
    ("empty image kept for val", changed(ann={12: {"iscrowd": 1}}), [], "val",
     ["1 images without boxes kept"], False, {3: []}),
]


@pytest.mark.parametrize("name,coco,overrides,split,expected,warning,targets", REPAIRS, ids=[r[0] for r in REPAIRS])
def test_fixable_boxes_are_dropped_or_clipped_and_counted_in_one_log_line(tmp_path, caplog, name, coco, overrides,
                                                                          split, expected, warning, targets):
    root = write_root(tmp_path / "data", coco)
    before = digest(root)
    with caplog.at_level(logging.INFO, logger="detect"):
        dataset = build_dataset(data_cfg(root, *overrides), split, train=split == "train")
    lines = [r for r in caplog.records if "Data check:" in r.getMessage()]
    assert len(lines) == 1 and (lines[0].levelno == logging.WARNING) == warning
    for text in expected:
        assert text in lines[0].getMessage(), lines[0].getMessage()
    ids = [img["id"] for img in dataset.images]
    for image_id, boxes in targets.items():
        if boxes is None:
            assert image_id not in ids
        else:
            assert dataset.target(ids.index(image_id))["boxes"].tolist() == boxes
    assert dataset.coco == json.loads((root / f"{split}.json").read_text())  # evaluation keeps the json's boxes
    assert digest(root) == before


# ------------------------------------------------------------------------------- unreadable images
@pytest.fixture()
def corrupt_root(tmp_path):
    root = write_root(tmp_path / "data")
    (root / "images" / "2.jpg").write_bytes(b"not a jpeg")
    return root


def test_an_unreadable_image_is_an_error_naming_the_file_and_the_switch(corrupt_root):
    dataset = build_dataset(data_cfg(corrupt_root), "train", train=True)
    with pytest.raises(DataConfigError) as err:
        dataset[1]
    assert "images/2.jpg (image id 2 of train.json)" in str(err.value)
    assert "data.skip_bad_images=true" in str(err.value)


def test_skipping_in_training_puts_the_next_image_in_its_place_and_warns_once(corrupt_root, caplog):
    before = digest(corrupt_root)
    dataset = build_dataset(data_cfg(corrupt_root, "skip_bad_images=true", "hflip_prob=0"), "train", train=True)
    with caplog.at_level(logging.WARNING, logger="detect"):
        images = [dataset[i] for i in (1, 1, 0)]
        loader = build_loader(dataset, batch_size=2, train=True, workers=0, seed=0)
        seen = [t["image_id"] for _, targets in loader for t in targets]
    assert images[0][1]["image_id"] == 3 and images[0][0].shape == (3, 30, 30)  # image 3 stands in for 2
    assert len(seen) == len(dataset) == 3 and 2 not in seen  # the epoch keeps its length
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "images/2.jpg (image id 2 of train.json)" in warnings[0]
    assert "next readable image" in warnings[0]
    assert digest(corrupt_root) == before


def test_skipping_in_evaluation_keeps_the_image_id_with_a_black_image(corrupt_root, caplog):
    dataset = build_dataset(data_cfg(corrupt_root, "skip_bad_images=true"), "val", train=False)
    with caplog.at_level(logging.WARNING, logger="detect"):
        image, target = dataset[1]
    assert target["image_id"] == 2 and image.shape == (3, 40, 50) and float(image.abs().sum()) == 0
    assert target["boxes"].tolist() == [[20, 10, 28, 18]]
    assert any("its boxes count as missed" in r.getMessage() for r in caplog.records)


def test_skipping_stops_with_an_error_when_no_image_can_be_read(corrupt_root):
    for image in (corrupt_root / "images").glob("*.jpg"):
        image.write_bytes(b"")
    dataset = build_dataset(data_cfg(corrupt_root, "skip_bad_images=true"), "train", train=True)
    with pytest.raises(DataConfigError, match="None of the 3 images of .*train.json can be read"):
        dataset[0]


# ------------------------------------------------------------------------------ the CLI, real data
def test_the_cli_exits_1_naming_the_missing_image_before_training(tiny_demo_root, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(tiny_demo_root, root)
    first = json.loads((root / "train.json").read_text())["images"][0]
    (root / first["file_name"]).unlink()
    before = digest(root)
    proc = run_cli(tiny_train_args(root, tmp_path / "run"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert f"{first['file_name']} (image id {first['id']})" in output and "Check data.root" in output
    assert digest(root) == before
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "medical_waste").is_dir(), reason="../shared/data/medical_waste is absent")
def test_the_real_data_set_passes_with_only_sub_pixel_clipping(caplog):
    cfg = data_cfg(SHARED_DATA / "medical_waste")
    with caplog.at_level(logging.INFO, logger="detect"):
        train = build_dataset(cfg, "train", train=True)
        build_dataset(cfg, "val", train=False, classes=train.classes)
    lines = [r for r in caplog.records if "Data check:" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)
    assert all("dropped" not in r.getMessage() for r in lines)
    assert isinstance(train.target(0)["boxes"], torch.Tensor)


def test_val_category_names_that_differ_from_the_training_files_are_named(tmp_path):
    root = write_root(tmp_path / "data")
    val = copy.deepcopy(BASE)
    val["categories"] = [{"id": 5, "name": "dog"}, {"id": 9, "name": "kitty"}]
    (root / "val.json").write_text(json.dumps(val))
    train = build_dataset(data_cfg(root), "train", train=True)
    with pytest.raises(DataConfigError) as err:
        build_dataset(data_cfg(root), "val", train=False, classes=train.classes,
                      classes_source=f"the training file {root / 'train.json'}")
    text = str(err.value)
    assert "do not match the classes of the training file" in text and "only in the json: ['kitty']" in text
    assert "Give val.json the same category names as the training file" in text


def test_a_16_bit_png_is_read_as_8_bit(tmp_path):
    import numpy as np

    from detect.data.coco import CocoDetection

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    ramp = (np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80)  # 0 .. 61,360 of 65,535
    Image.fromarray(ramp).save(root / "images" / "deep.png")
    coco = {"images": [{"id": 1, "file_name": "images/deep.png", "width": 32, "height": 24}],
            "annotations": [ann(1)], "categories": [{"id": 5, "name": "dog"}]}
    (root / "train.json").write_text(json.dumps(coco))
    image = CocoDetection(root, root / "train.json").read_image(0)
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 32)
    assert int(image.max()) == 61_360 >> 8 and int(image[0, 0, 0]) == 0  # scaled, not clipped to white
