"""Faster R-CNN from torchvision parts, configured from `conf/model/faster_rcnn.yaml`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign

from detect.models.parts import (
    BackboneWithNeck,
    box_head,
    image_transform,
    region_proposal_network,
    roi_feature_names,
)


class FasterRCNN(GeneralizedRCNN):
    """torchvision's two-stage skeleton (transform, backbone + neck, RPN, RoIHeads) built from our parts;
    torchvision's own FasterRCNN class would build its backbone, anchors and RoI levels itself."""


def build_faster_rcnn(num_classes: int, backbone: nn.Module, neck: Callable[..., nn.Module], rpn: dict, roi: dict,
                      min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                      size_divisible: int, name: str = "faster_rcnn",
                      skip_train_resize: bool = False) -> FasterRCNN:
    """Build the detector. `num_classes` counts the foreground classes (the data's class list);
    torchvision's background class 0 is added here, so predicted labels are 1..num_classes.

    Input: float images in [0, 1], CxHxW, any size. Output (eval): per image {"boxes": (N, 4) xyxy in
    pixels of the original image, "labels": (N,) int64, "scores": (N,)}; (train): a dict of losses.
    `skip_train_resize` (data.aug.resizes): training images come sized by the data pipeline and are
    not resized again; evaluation images are.
    """
    body = BackboneWithNeck(backbone, neck)
    roi_pool = MultiScaleRoIAlign(roi_feature_names(body), output_size=7, sampling_ratio=roi["sampling_ratio"])
    roi_heads = RoIHeads(
        roi_pool,
        box_head(body.out_channels, roi),
        FastRCNNPredictor(roi["representation_size"], num_classes + 1),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=roi["batch_size_per_image"],
        positive_fraction=roi["positive_fraction"],
        bbox_reg_weights=None,  # (10, 10, 5, 5): MMDetection's target stds 0.1/0.2
        score_thresh=roi["score_thresh"],
        nms_thresh=roi["nms_thresh"],
        detections_per_img=roi["detections_per_img"],
    )
    transform = image_transform(min_size, max_size, image_mean, image_std, size_divisible, skip_train_resize)
    return FasterRCNN(body, region_proposal_network(body, rpn), roi_heads, transform)
