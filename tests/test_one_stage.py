"""RetinaNet and FCOS speak our labels (1..num_classes) although torchvision's heads count from 0."""

from __future__ import annotations

import torch

from detect.models.one_stage import OneBasedLabels


class TorchvisionLike:
    """Stands in for torchvision's RetinaNet/FCOS: records the labels its loss sees, detects class 0."""

    def compute_loss(self, targets, *args):
        self.loss_labels = [t["labels"].tolist() for t in targets]
        return {"classification": torch.tensor(1.0), "bbox_regression": torch.tensor(2.0)}

    def postprocess_detections(self, *args):
        return [{"boxes": torch.zeros(2, 4), "scores": torch.ones(2), "labels": torch.tensor([0, 9])}]


class Shifted(OneBasedLabels, TorchvisionLike):
    pass


def test_labels_shift_down_for_the_loss_and_up_for_the_detections():
    model = Shifted()
    targets = [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 10])}]
    losses = model.compute_loss(targets, None)
    assert model.loss_labels == [[0, 9]] and targets[0]["labels"].tolist() == [1, 10]  # the caller's dict untouched
    assert set(losses) == {"loss_classification", "loss_bbox_regression"}
    assert model.postprocess_detections()[0]["labels"].tolist() == [1, 10]
