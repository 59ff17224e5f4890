"""Test-time augmentation: views are undone exactly (flip, scale) and the model is left as it was."""

from __future__ import annotations

import torch

from detect.engine.tta import predict_tta, views


class BoxAtFixedPlace(torch.nn.Module):
    """A stand-in detector: one box at x 10..30, y 20..40 of whatever image it is given, and it
    records the sizes its transform was set to."""

    def __init__(self):
        super().__init__()
        self.transform = type("T", (), {"min_size": (100,), "max_size": 200})()
        self.seen_sizes = []

    def forward(self, images):
        self.seen_sizes.append((self.transform.min_size, self.transform.max_size))
        return [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


def test_views_are_every_scale_with_and_without_flip():
    assert views([80, 100], True) == [(80, False), (80, True), (100, False), (100, True)]
    assert views([100], False) == [(100, False)]


def test_flipped_views_are_flipped_back_and_the_transform_is_restored():
    model = BoxAtFixedPlace()
    image = torch.zeros(3, 50, 120)  # width 120
    loader = [([image], [{"image_id": 5}])]
    results = predict_tta(model, loader, torch.device("cpu"), {1: 7}, scales=[80, 120], flip=True, merge="nms",
                          iou_thr=0.99)
    boxes = sorted(tuple(r["bbox"]) for r in results)
    # unflipped view: x 10..30; flipped view: the model saw x 10..30 of the mirror = x 90..110 here
    assert boxes == [(10.0, 20.0, 20.0, 20.0), (90.0, 20.0, 20.0, 20.0)]
    assert {r["category_id"] for r in results} == {7} and {r["image_id"] for r in results} == {5}
    assert model.seen_sizes == [((80,), 160), ((80,), 160), ((120,), 240), ((120,), 240)]
    assert (model.transform.min_size, model.transform.max_size) == ((100,), 200)


def test_wbf_of_views_that_agree_returns_the_box_with_its_score():
    model = BoxAtFixedPlace()
    loader = [([torch.zeros(3, 50, 40)], [{"image_id": 1}])]  # width 40: the flipped box is x 10..30 again
    results = predict_tta(model, loader, torch.device("cpu"), {1: 1}, scales=[100], flip=True, merge="wbf")
    assert [(r["bbox"], r["score"]) for r in results] == [([10.0, 20.0, 20.0, 20.0], 0.9)]
