"""What every detector builder shares: backbone + neck as one module, anchors per level, RPN."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detect.errors import ConfigError
from detect.models.necks import level_name


class BackboneWithNeck(nn.Module):
    """backbone -> neck, with the `out_channels` (int) torchvision's detectors read, and `strides`.

    forward: normalized images (B, 3, H, W) -> {"p2": (B, out_channels, H/4, W/4), ...}, each level
    named "p<log2 stride>" (the RoI heads pick their levels by these names).
    """

    def __init__(self, backbone: nn.Module, neck: Callable[..., nn.Module]):
        super().__init__()
        for attr in ("out_channels", "strides"):
            if not hasattr(backbone, attr):
                raise ConfigError(
                    f"model.backbone ({type(backbone).__name__}) has no '{attr}' attribute; a backbone must say the "
                    "channels and strides of its feature maps (see detect/models/backbones.py)")
        if not callable(neck):
            raise ConfigError("model.neck must be a partial (_partial_: true) so the builder can pass the backbone's "
                              "channels and strides")
        self.body = backbone
        try:
            self.neck = neck(in_channels=list(backbone.out_channels), in_strides=list(backbone.strides))
        except TypeError as err:  # usually a key left over from the neck a config started from
            name = getattr(getattr(neck, "func", neck), "__name__", str(neck))
            raise ConfigError(
                f"model.neck ({name}) does not take its arguments: {err}. A key left over from another neck "
                f"(e.g. model=retinanet model/neck=bifpn keeps RetinaNet's neck.extra) can be removed on the command "
                f"line: '~model.neck.<key>'.") from err
        self.out_channels = int(self.neck.out_channels)
        self.strides = list(self.neck.strides)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.neck(self.body(images)).values()
        # Named here by stride, so a neck only has to return its levels finest first.
        return OrderedDict((level_name(stride), x) for stride, x in zip(self.strides, levels))


def anchor_generator(strides: Sequence[int], octave_base_scale: float, ratios: Sequence[float],
                     scales_per_octave: int = 1) -> AnchorGenerator:
    """Anchors per level as MMDetection sizes them: `octave_base_scale` x the level's stride, times
    2**(k / scales_per_octave) for k < scales_per_octave. Scale 8 on strides 4..64 gives 32..512 px
    (the RPN default); scale 4 with 3 scales per octave on strides 8..128 is RetinaNet's."""
    sizes = tuple(tuple(octave_base_scale * stride * 2 ** (k / scales_per_octave) for k in range(scales_per_octave))
                  for stride in strides)
    return AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(ratios),) * len(sizes))


def roi_feature_names(body: BackboneWithNeck, max_stride: int = 32) -> list[str]:
    """Levels a RoI head pools from: strides up to 32 (P2-P5 for an FPN with start_level 0), as MMDetection's
    RoI extractors; the extra P6 level serves the RPN only."""
    names = [level_name(s) for s in body.strides if s <= max_stride]
    if not names:
        raise ConfigError(f"The neck's levels (strides {body.strides}) include none with stride <= {max_stride} "
                          "for the RoI head to pool from; lower model.neck.start_level")
    return names


def region_proposal_network(body: BackboneWithNeck, rpn: dict) -> RegionProposalNetwork:
    """torchvision's RPN with anchors from `rpn.anchor_scale`/`anchor_ratios` over every neck level.
    Proposal counts: `pre_nms_top_n_*` per level, `post_nms_top_n_*` per image. `rpn.conv_depth`
    3x3 convolutions before the two outputs (1; torchvision's v2 Faster R-CNN has 2)."""
    anchors = anchor_generator(body.strides, rpn["anchor_scale"], rpn["anchor_ratios"])
    return RegionProposalNetwork(
        anchors,
        RPNHead(body.out_channels, anchors.num_anchors_per_location()[0], conv_depth=rpn.get("conv_depth", 1)),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=rpn["batch_size_per_image"],
        positive_fraction=rpn["positive_fraction"],
        pre_nms_top_n={"training": rpn["pre_nms_top_n_train"], "testing": rpn["pre_nms_top_n_test"]},
        post_nms_top_n={"training": rpn["post_nms_top_n_train"], "testing": rpn["post_nms_top_n_test"]},
        nms_thresh=rpn["nms_thresh"],
    )


BOX_HEADS = ("two_fc", "conv_fc")
# torchvision's norm layers with its defaults, as its v2 COCO heads were trained with.
BOX_HEAD_NORMS = {None: None, "none": None, "batch": nn.BatchNorm2d, "group": partial(nn.GroupNorm, 32)}


def box_head(in_channels: int, roi: dict) -> nn.Module:
    """The shared layers of the RoI box head on 7x7 pooled features; `roi.box_head` picks them:
    "two_fc": two FC layers of `representation_size` (torchvision v1, MMDetection's Shared2FCBBoxHead);
    "conv_fc": `head_convs` 3x3 convolutions of `head_conv_channels` with `head_norm` (batch, group or
    none) then one FC layer (torchvision's v2 head with 4 convs and BatchNorm; MMDetection's
    Shared4Conv1FCBBoxHead uses GroupNorm). Older configs without the key get "two_fc"."""
    kind = roi.get("box_head", "two_fc")
    if kind == "two_fc":
        return TwoMLPHead(in_channels * 7 * 7, roi["representation_size"])
    if kind != "conv_fc":
        raise ConfigError(f"model.roi.box_head={kind!r} is not one of {BOX_HEADS}")
    norm = roi.get("head_norm")
    if norm not in BOX_HEAD_NORMS:
        raise ConfigError(f"model.roi.head_norm={norm!r} is not one of 'batch', 'group', 'none'")
    convs = [roi.get("head_conv_channels", 256)] * roi.get("head_convs", 4)
    return FastRCNNConvFCHead((in_channels, 7, 7), convs, [roi["representation_size"]],
                              norm_layer=BOX_HEAD_NORMS[norm])


class DetectorImageTransform(GeneralizedRCNNTransform):
    """torchvision's transform with two switches:
    - `skip_train_resize` (the data pipeline sized the training images: data/aug=multiscale, lsj,
      strong) leaves training images at their size; they are still normalized and padded. Evaluation
      always resizes, so its boxes come back in original pixels. (torchvision has the same switch as
      a private `_skip_resize` keyword: not ours to rely on.)
    - `pad_to` (height, width) pads every training batch to that one shape instead of the batch's
      largest image rounded up to `size_divisible` (data.pad_to): static shapes for torch.compile and
      cudnn.benchmark. Images are padded at the bottom and right and their own sizes are kept, so
      boxes are unchanged. Evaluation pads as detect.test does (to the batch's largest image), so the
      scores logged in training are the ones detect.test gives the checkpoint."""

    square = False  # every image resized to one square (SquareImageTransform): a fixed shape already

    def __init__(self, *args, skip_train_resize: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_train_resize = skip_train_resize
        self.pad_to: tuple[int, int] | None = None

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if self.training and self.skip_train_resize:
            return image, target
        return super().resize(image, target)

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        if self.pad_to is None or not self.training or torch.jit.is_tracing():  # an export traces the general path
            return super().batch_images(images, size_divisible)
        height, width = self.pad_to
        tallest, widest = max(img.shape[-2] for img in images), max(img.shape[-1] for img in images)
        if tallest > height or widest > width:
            square = round_up(int(self.max_size), size_divisible)
            raise ConfigError(
                f"data.pad_to={list(self.pad_to)} (height, width) is smaller than a resized training image of "
                f"{tallest}x{widest} (height x width): set data.pad_to to at least the resized size "
                f"(data.pad_to={square} fits any image under data.max_size={int(self.max_size)}), or "
                "data.pad_to=null.")
        batched = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        for image, slot in zip(images, batched):
            slot[:, :image.shape[-2], :image.shape[-1]].copy_(image)
        return batched


def round_up(side: int, divisor: int) -> int:
    """The smallest multiple of `divisor` that is >= `side`."""
    return -(-side // divisor) * divisor


def parse_pad_to(value) -> tuple[int, int] | None:
    """data.pad_to: null, one side (a square) or [height, width] -> (height, width) or None."""
    if value is None:
        return None
    sides = list(value) if hasattr(value, "__len__") else [value, value]  # a list (ListConfig) or one number
    if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        raise ConfigError(f"data.pad_to={value} must be null, one size in pixels (e.g. 1024) or [height, width].")
    return int(sides[0]), int(sides[1])


def set_pad_to(model: nn.Module, value) -> tuple[int, int] | None:
    """Give the model's transform a fixed batch shape (data.pad_to); returns it (None: off)."""
    pad_to = parse_pad_to(value)
    if pad_to is None:
        return None
    key, transform = "data.pad_to", getattr(model, "transform", None)
    if not isinstance(transform, DetectorImageTransform):
        raise ConfigError(f"{key}={value}: the model {type(model).__name__} has no detect image transform to pad "
                          f"with; use {key}=null.")
    if transform.square:
        raise ConfigError(f"{key}={value}: {type(model).__name__} resizes every image to one square already "
                          f"(model.min_size): its batches have one shape without padding; use {key}=null.")
    divisor = int(transform.size_divisible)
    if any(side % divisor for side in pad_to):
        raise ConfigError(f"{key}={value} must be a multiple of the model's size_divisible ({divisor}, "
                          f"data.pad_divisor): the feature levels' strides need it, e.g. "
                          f"{[round_up(side, divisor) for side in pad_to]}.")
    transform.pad_to = pad_to
    return pad_to


def image_transform(min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                    size_divisible: int, skip_train_resize: bool = False) -> DetectorImageTransform:
    """Resize so the shorter side is `min_size` unless the longer would pass `max_size` (in training
    not when `skip_train_resize`), normalize, pad the batch to a multiple of `size_divisible`;
    detections are mapped back to the original pixels. The sizes come from the data config, never
    torchvision's 800/1333 defaults."""
    return DetectorImageTransform(min_size, max_size, list(image_mean), list(image_std),
                                  size_divisible=size_divisible, skip_train_resize=skip_train_resize)
