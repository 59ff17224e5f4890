"""RetinaNet and FCOS: torchvision's one-stage detectors over our backbone and neck groups.

Both score each class with its own sigmoid (focal loss) and have no background class, while our
labels are 1..num_classes (0 is the two-stage models' background). The subclasses below shift the
labels by one on the way in (loss) and out (detections), so outputs carry the same labels as Faster
and Cascade R-CNN and evaluation does not care which model ran; their losses are named `loss_<term>`
like every other model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

from detect.errors import ConfigError
from detect.models.parts import BOX_HEAD_NORMS, BackboneWithNeck, anchor_generator, image_transform

# torchvision's RetinaNet box losses (its regression head's _loss_type): l1 in v1, giou in v2.
RETINANET_BOX_LOSSES = ("l1", "smooth_l1", "giou", "ciou", "diou")


class OneBasedLabels:
    """Mixin for torchvision's RetinaNet / FCOS: head class k is label k + 1."""

    def compute_loss(self, targets: list[dict[str, Tensor]], *args) -> dict[str, Tensor]:
        shifted = [{**target, "labels": target["labels"] - 1} for target in targets]
        return {f"loss_{name}": value for name, value in super().compute_loss(shifted, *args).items()}

    def postprocess_detections(self, *args) -> list[dict[str, Tensor]]:
        return [{**det, "labels": det["labels"] + 1} for det in super().postprocess_detections(*args)]


class OneBasedRetinaNet(OneBasedLabels, RetinaNet):
    pass


class OneBasedFCOS(OneBasedLabels, FCOS):
    pass


def _shared_arguments(num_classes: int, head: dict, min_size: int, max_size: int, image_mean: Sequence[float],
                      image_std: Sequence[float], size_divisible: int) -> dict:
    """Arguments torchvision's RetinaNet and FCOS share: classes, image transform, test-time filtering."""
    return {"num_classes": num_classes, "min_size": min_size, "max_size": max_size, "image_mean": list(image_mean),
            "image_std": list(image_std), "size_divisible": size_divisible, "score_thresh": head["score_thresh"],
            "nms_thresh": head["nms_thresh"], "detections_per_img": head["detections_per_img"],
            "topk_candidates": head["topk_candidates"]}


def with_our_transform(model: OneBasedRetinaNet | OneBasedFCOS, skip_train_resize: bool):
    """Replace the GeneralizedRCNNTransform torchvision's RetinaNet/FCOS built for itself by ours, with the
    same sizes, so `skip_train_resize` (data.aug.resizes: the data pipeline sized the training images)
    works as in the two-stage models."""
    old = model.transform
    model.transform = image_transform(old.min_size, old.max_size, old.image_mean, old.image_std,
                                      old.size_divisible, skip_train_resize)
    return model


def build_retinanet(num_classes: int, backbone: nn.Module, neck: Callable[..., nn.Module], anchors: dict,
                    head: dict, min_size: int, max_size: int, image_mean: Sequence[float],
                    image_std: Sequence[float], size_divisible: int, name: str = "retinanet",
                    skip_train_resize: bool = False) -> OneBasedRetinaNet:
    """RetinaNet (Lin et al. 2017): anchors `anchors.octave_base_scale` x stride at
    `anchors.scales_per_octave` scales and `anchors.ratios` on every neck level; focal loss; anchors
    with IoU >= `head.fg_iou_thresh` are positive, < `head.bg_iou_thresh` negative. `head.norm`
    (null, group, batch) after each of the subnets' 4 convolutions and `head.box_loss` (l1, giou, ...):
    null + l1 is the paper's and torchvision's v1, group + giou torchvision's v2."""
    body = BackboneWithNeck(backbone, neck)
    anchor_boxes = anchor_generator(body.strides, anchors["octave_base_scale"], anchors["ratios"],
                                    anchors["scales_per_octave"])
    norm, box_loss = head.get("norm"), head.get("box_loss", "l1")
    if norm not in BOX_HEAD_NORMS:
        raise ConfigError(f"model.head.norm={norm!r} is not one of null, 'group', 'batch'")
    if box_loss not in RETINANET_BOX_LOSSES:
        raise ConfigError(f"model.head.box_loss={box_loss!r} is not one of {RETINANET_BOX_LOSSES}")
    subnets = RetinaNetHead(body.out_channels, anchor_boxes.num_anchors_per_location()[0], num_classes,
                            norm_layer=BOX_HEAD_NORMS[norm])
    subnets.regression_head._loss_type = box_loss  # torchvision's own switch (its v2 builder sets it so)
    model = OneBasedRetinaNet(
        body, anchor_generator=anchor_boxes, head=subnets,
        fg_iou_thresh=head["fg_iou_thresh"], bg_iou_thresh=head["bg_iou_thresh"],
        **_shared_arguments(num_classes, head, min_size, max_size, image_mean, image_std, size_divisible))
    return with_our_transform(model, skip_train_resize)


def build_fcos(num_classes: int, backbone: nn.Module, neck: Callable[..., nn.Module], head: dict,
               min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
               size_divisible: int, name: str = "fcos", skip_train_resize: bool = False) -> OneBasedFCOS:
    """FCOS (Tian et al. 2019): anchor-free, one point per feature-map cell of every neck level, with
    centre sampling (`head.center_sampling_radius` strides) and a centerness branch."""
    body = BackboneWithNeck(backbone, neck)
    # torchvision's FCOS reads only the centre and size of a single square "anchor" per cell: its stride.
    points = anchor_generator(body.strides, octave_base_scale=1, ratios=[1.0])
    model = OneBasedFCOS(
        body, anchor_generator=points, center_sampling_radius=head["center_sampling_radius"],
        **_shared_arguments(num_classes, head, min_size, max_size, image_mean, image_std, size_divisible))
    return with_our_transform(model, skip_train_resize)
