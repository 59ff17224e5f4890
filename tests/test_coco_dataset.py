"""The COCO data set: labels follow the configured class order, flips move boxes, errors name files."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from detect.data.coco import CocoDetection, collate
from detect.data.transforms import detection_transforms, to_float
from detect.errors import DataConfigError


@pytest.fixture()
def root(tmp_path):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "a.jpg")
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [20, 10, 8, 8], "area": 64, "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 9, "name": "cat"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path


def test_boxes_become_xyxy_and_labels_follow_the_configured_class_order(root):
    ds = CocoDetection(root, root / "ann.json", classes=["cat", "dog"])
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and 0 < float(image.max()) <= 1
    # For a GPU the loader hands over uint8 (4x fewer bytes); move_to converts after the copy.
    raw, _ = CocoDetection(root, root / "ann.json", transforms=detection_transforms(float_output=False))[0]
    assert raw.dtype == torch.uint8 and torch.equal(to_float(raw), image)
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 28, 18]]
    assert target["labels"].tolist() == [2, 1]  # dog is the 2nd configured class, cat the 1st
    assert ds.category_of_label == {1: 9, 2: 5} and target["image_id"] == 7
    assert CocoDetection(root, root / "ann.json").classes == ["dog", "cat"]  # json order by id


def test_mismatched_classes_show_both_lists(root):
    with pytest.raises(DataConfigError) as err:
        CocoDetection(root, root / "ann.json", classes=["cat", "dog", "bird"])
    assert "['dog', 'cat']" in str(err.value) and "['cat', 'dog', 'bird']" in str(err.value)


def test_flip_mirrors_boxes_in_pixels(root):
    ds = CocoDetection(root, root / "ann.json", transforms=detection_transforms(hflip_prob=1.0))
    image, target = ds[0]
    plain, _ = CocoDetection(root, root / "ann.json")[0]
    assert torch.equal(image, plain.flip(-1))
    assert target["boxes"].tolist() == [[28, 3, 38, 8], [12, 10, 20, 18]]
    assert type(image) is torch.Tensor and type(target["boxes"]) is torch.Tensor  # plain tensors to the model


def test_augmentation_follows_the_item_seed_not_the_process_rng(root):
    ds = CocoDetection(root, root / "ann.json", transforms=detection_transforms(hflip_prob=0.5))
    flips = [ds[(0, seed)][1]["boxes"][0, 0].item() == 28 for seed in range(40)]
    assert 5 < sum(flips) < 35  # both outcomes occur
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = [ds[(0, seed)][1]["boxes"][0, 0].item() == 28 for seed in range(40)]
    assert again == flips  # the same seed flips the same way, whatever the global RNG says
    assert torch.equal(torch.get_rng_state(), before)  # and the global RNG is left alone


def test_unreadable_image_and_bad_json_name_the_file(root):
    (root / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataConfigError, match="a.jpg"):
        CocoDetection(root, root / "ann.json")[0]
    (root / "broken.json").write_text('{"images": [')
    with pytest.raises(DataConfigError, match="broken.json is not valid JSON"):
        CocoDetection(root, root / "broken.json")


def test_collate_keeps_lists(root):
    images, targets = collate([CocoDetection(root, root / "ann.json")[0]] * 2)
    assert len(images) == 2 and len(targets) == 2
