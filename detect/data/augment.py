"""Augmentation steps torchvision.transforms.v2 does not have: mosaic, mixup, a multi-scale resize
sized from the data config, and the box rule. They work on what the data set yields before the
conversion to float: a uint8 `tv_tensors.Image` (3xHxW) and a target dict with `boxes` as
`tv_tensors.BoundingBoxes` (xyxy, pixels) and `labels` (N,) int64 in step with them.

Every random draw is on torch's global RNG (as v2's own transforms draw), which the data set seeds
per image (detect/data/coco.py), so an image is augmented the same after a resume and whatever the
number of loader workers.

Mosaic and MixUp need other images: they are `MixingStep`s, called by the pipeline
(detect/data/pipeline.py) with `draw(n)`, which returns n other images of the data set (drawn on
the same RNG) after the pipeline's steps before this one. Both are switched off from
`data.aug.close_at_epoch` on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

Sample = tuple[tv_tensors.Image, dict]
# ImageNet's mean colour in 0..255: padding in it becomes ~0 after the detector's normalization,
# like the detector's own batch padding.
MEAN_FILL = (124, 116, 104)


def keep_boxes(target: dict, boxes: torch.Tensor, keep: torch.Tensor, canvas_size: tuple[int, int]) -> dict:
    """A copy of `target` with the boxes `boxes[keep]` (xyxy pixels on `canvas_size`, (H, W)) and their labels."""
    return {**target, "boxes": tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=canvas_size),
            "labels": target["labels"][keep]}


def clip_and_drop(boxes: torch.Tensor, canvas_size: tuple[int, int],
                  min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The box rule: boxes (N, 4) xyxy clipped to the image (H, W), and a mask of those kept: width and
    height both >= `min_size` pixels after clipping (a box cut to a sliver, or scaled below a pixel, is dropped)."""
    height, width = canvas_size
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    return clipped, keep


class BoxRule(torch.nn.Module):
    """Clip the boxes to the image and drop those narrower or lower than `min_size` pixels, with their
    labels. The pipeline applies it after its steps (data.aug.min_box_size; null: not applied)."""

    def __init__(self, min_size: float = 1.0):
        super().__init__()
        self.min_size = min_size

    def forward(self, image: tv_tensors.Image, target: dict) -> Sample:
        boxes = target["boxes"]
        clipped, keep = clip_and_drop(boxes.as_subclass(torch.Tensor), tuple(boxes.canvas_size), self.min_size)
        return image, keep_boxes(target, clipped, keep, tuple(boxes.canvas_size))


def random_short_side(min_size: int, max_size: int, low: float = 0.6, high: float = 1.0,
                      step: int = 32) -> v2.RandomShortestSize:
    """MMDetection's multi-scale training from the data's sizes: the short side drawn from the list
    low x min_size, + step, ..., high x min_size (pixels), the long side at most `max_size`
    (torchvision's RandomShortestSize, which moves the boxes with the image). With min_size 800, low
    0.6: 480, 512, ..., 800 as MMDetection's classic multi-scale config."""
    if not 0 < low <= high:
        raise ValueError(f"low={low} and high={high} must satisfy 0 < low <= high")
    first, last = round(low * min_size), round(high * min_size)
    sides = list(range(first, last + 1, step))
    if sides[-1] != last:
        sides.append(last)  # the data's own size is always one of the choices
    return v2.RandomShortestSize(min_size=sides, max_size=max_size, antialias=True)


class MixingStep(torch.nn.Module):
    """A step that needs other images of the data set: called as step(image, target, draw), where
    draw(n) returns n other samples. The pipeline skips it from close_at_epoch on."""

    def forward(self, image: tv_tensors.Image, target: dict, draw: Callable[[int], list[Sample]]) -> Sample:
        raise NotImplementedError


def fit_into(image: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize (3, H, W) keeping its ratio so its longer side is `size`; boxes (N, 4) xyxy scaled with it."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.resize(image.as_subclass(torch.Tensor), [new_h, new_w], antialias=True)
    factors = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
    return resized, boxes * factors


class Mosaic(MixingStep):
    """YOLOX's / Ultralytics' mosaic: this image and 3 others, each fitted into size x size (longer side
    = size), placed around a random centre (x, y uniform in [size/2, 3 size/2]) of a 2 size x 2 size
    canvas filled with `fill` (the first image's bottom-right corner at the centre, then top-right,
    bottom-left, bottom-right); the output is the canvas's middle size x size window, which always
    holds the centre. Boxes move with their image, are clipped to the part of it that was pasted and
    to the window, and the box rule drops those under `min_box_size` px. Output: (3, size, size)."""

    def __init__(self, size: int, p: float = 1.0, fill: Sequence[int] = MEAN_FILL, min_box_size: float = 1.0):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p={p} must be in [0, 1]")
        self.size, self.p, self.fill, self.min_box_size = int(size), p, list(fill), min_box_size

    def forward(self, image: tv_tensors.Image, target: dict, draw: Callable[[int], list[Sample]]) -> Sample:
        if float(torch.rand(())) >= self.p:
            return image, target
        samples = [(image, target), *draw(3)]
        size = self.size
        centre_x, centre_y = (int(v) for v in torch.randint(size // 2, 3 * size // 2 + 1, (2,)))
        canvas = torch.tensor(self.fill, dtype=image.dtype).view(3, 1, 1).repeat(1, 2 * size, 2 * size)
        all_boxes, all_labels = [], []
        for corner, (piece, piece_target) in enumerate(samples):
            pixels, boxes = fit_into(piece, piece_target["boxes"].as_subclass(torch.Tensor).float(), size)
            height, width = pixels.shape[-2:]
            # Where the piece goes on the canvas (x1, y1, x2, y2), cut at the canvas's edges.
            left = centre_x - width if corner in (0, 2) else centre_x
            top = centre_y - height if corner in (0, 1) else centre_y
            x1, y1 = max(left, 0), max(top, 0)
            x2, y2 = min(left + width, 2 * size), min(top + height, 2 * size)
            canvas[:, y1:y2, x1:x2] = pixels[:, y1 - top:y2 - top, x1 - left:x2 - left]
            shifted = boxes + torch.tensor([left, top, left, top], dtype=boxes.dtype)
            shifted[:, 0::2] = shifted[:, 0::2].clamp(x1, x2)  # only the pasted part of the piece shows
            shifted[:, 1::2] = shifted[:, 1::2].clamp(y1, y2)
            all_boxes.append(shifted)
            all_labels.append(piece_target["labels"])
        offset = size // 2  # the window [offset, offset + size) in both directions
        window = canvas[:, offset:offset + size, offset:offset + size]
        boxes, keep = clip_and_drop(torch.cat(all_boxes) - offset, (size, size), self.min_box_size)
        merged = {**target, "labels": torch.cat(all_labels)}
        return tv_tensors.Image(window), keep_boxes(merged, boxes, keep, (size, size))


class MixUp(MixingStep):
    """YOLOX's / Ultralytics' mixup: with probability `p`, blend this image with another sample (after
    the steps before this one: a mosaic in data/aug=strong) as r x this + (1 - r) x other, r drawn from
    Beta(alpha, alpha) (32: r close to 0.5, Ultralytics'); the boxes and labels of both are kept. The
    other sample is resized to this one's size first (boxes scaled with it) when the two differ."""

    def __init__(self, p: float = 0.15, alpha: float = 32.0):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p={p} must be in [0, 1]")
        if alpha <= 0:
            raise ValueError(f"alpha={alpha} must be > 0")
        self.p, self.alpha = p, float(alpha)

    def forward(self, image: tv_tensors.Image, target: dict, draw: Callable[[int], list[Sample]]) -> Sample:
        if float(torch.rand(())) >= self.p:
            return image, target
        (other, other_target), = draw(1)
        height, width = image.shape[-2:]
        other_boxes = other_target["boxes"].as_subclass(torch.Tensor).float()
        if tuple(other.shape[-2:]) != (height, width):
            factors = torch.tensor([width / other.shape[-1], height / other.shape[-2]] * 2)
            other = F.resize(other.as_subclass(torch.Tensor), [height, width], antialias=True)
            other_boxes = other_boxes * factors
        ratio = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        mixed = image.float() * ratio + other.float() * (1 - ratio)
        boxes = torch.cat([target["boxes"].as_subclass(torch.Tensor).float(), other_boxes])
        merged = {**target, "labels": torch.cat([target["labels"], other_target["labels"]])}
        keep = torch.ones(len(boxes), dtype=torch.bool)
        return (tv_tensors.Image(mixed.round().clamp(0, 255).to(image.dtype)),
                keep_boxes(merged, boxes, keep, (height, width)))
