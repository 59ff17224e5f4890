"""Faster R-CNN from torchvision parts, configured from `conf/model/faster_rcnn.yaml`."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator

from detect.models.backbones import resnet_fpn


def fpn_anchor_generator(scale: float, ratios: Sequence[float], start_level: int = 0) -> AnchorGenerator:
    """One anchor size per FPN level: `scale` x the level's stride (MMDetection's octave scale).
    With scale 8 on strides 4..64 the sizes are 32..512, MMDetection's RPN default."""
    strides = (4, 8, 16, 32, 64)[start_level:]
    sizes = tuple((int(scale * stride),) for stride in strides)
    return AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(ratios),) * len(sizes))


def build_faster_rcnn(num_classes: int, backbone: dict, neck: dict, rpn: dict, roi: dict,
                      min_size: int, max_size: int, image_mean: Sequence[float],
                      image_std: Sequence[float], size_divisible: int, name: str = "faster_rcnn") -> FasterRCNN:
    """Build the detector. `num_classes` counts the foreground classes (the data's class list);
    torchvision's background class 0 is added here, so predicted labels are 1..num_classes.

    Input images: float tensors in [0, 1], CxHxW, any size; they are resized so the shorter side
    is `min_size` unless the longer would exceed `max_size`, normalized and padded to a multiple
    of `size_divisible`. Output boxes are xyxy in pixels of the original image.
    """
    body = resnet_fpn(out_channels=neck["out_channels"], start_level=neck["start_level"], **backbone)
    box_head = TwoMLPHead(body.out_channels * 7 * 7, roi["representation_size"])
    return FasterRCNN(
        body,
        num_classes=None,  # the predictor below fixes the classes
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        size_divisible=size_divisible,
        rpn_anchor_generator=fpn_anchor_generator(rpn["anchor_scale"], rpn["anchor_ratios"], neck["start_level"]),
        rpn_pre_nms_top_n_train=rpn["pre_nms_top_n_train"],
        rpn_post_nms_top_n_train=rpn["post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=rpn["pre_nms_top_n_test"],
        rpn_post_nms_top_n_test=rpn["post_nms_top_n_test"],
        rpn_nms_thresh=rpn["nms_thresh"],
        rpn_batch_size_per_image=rpn["batch_size_per_image"],
        rpn_positive_fraction=rpn["positive_fraction"],
        box_head=box_head,
        box_predictor=FastRCNNPredictor(roi["representation_size"], num_classes + 1),
        box_batch_size_per_image=roi["batch_size_per_image"],
        box_positive_fraction=roi["positive_fraction"],
        box_score_thresh=roi["score_thresh"],
        box_nms_thresh=roi["nms_thresh"],
        box_detections_per_img=roi["detections_per_img"],
    )
