"""Detectors of the `transformers` library (RT-DETRv2, D-FINE, RF-DETR, LW-DETR, Deformable DETR) under
detect's model contract, so every command (training, evaluation, TTA, ensembles, browse) treats them as
it treats Faster R-CNN:

- training: `model(images, targets)` takes float images in [0, 1] (CxHxW, any size) and targets with
  xyxy boxes in pixels and labels 1..C, and returns a dict of `loss_*` terms whose sum is the library's
  own weighted total (its auxiliary-layer, encoder and denoising terms included, grouped as `loss_aux`
  and `loss_dn` so the log stays readable);
- evaluation: `model(images)` returns per image xyxy boxes in original pixels, labels 1..C and scores.

The library's models see normalised cxcywh boxes and labels 0..C-1; `transformers` does its own Hungarian
matching and losses. Images are resized by `transform` (detect's torchvision-style transform, so TTA and
`data.aug` pipelines that size images work unchanged): `resize: square` stretches every image to
`min_size` x `min_size` as RT-DETR's and D-FINE's image processors do, `keep_ratio` is the torchvision /
DETR resize (shorter side `min_size`, longer at most `max_size`) with a pixel mask over the padding.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from detect.errors import ConfigError, WeightsUnavailableError
from detect.models.parts import DetectorImageTransform

log = logging.getLogger("detect")


@dataclass(frozen=True)
class Family:
    """How one `transformers` model type differs in what the adapter must do."""

    pixel_mask: bool  # the model reads a pixel mask: boxes are relative to each image's unpadded area
    weighted_loss_dict: bool  # the library's loss_dict already carries the loss weights (else: its coefficients)
    unused_parameters: bool = False  # some parameters get no gradient (RF-DETR: DINOv2 layers after the last output)


# transformers model_type -> what the adapter needs to know. Every one scores classes with sigmoids.
FAMILIES = {
    "rt_detr_v2": Family(pixel_mask=False, weighted_loss_dict=True),
    "rt_detr": Family(pixel_mask=False, weighted_loss_dict=True),
    "d_fine": Family(pixel_mask=False, weighted_loss_dict=True),
    "deformable_detr": Family(pixel_mask=True, weighted_loss_dict=False),
    "lw_detr": Family(pixel_mask=False, weighted_loss_dict=False, unused_parameters=True),
    "rf_detr": Family(pixel_mask=False, weighted_loss_dict=False, unused_parameters=True),
}
RESIZES = ("square", "keep_ratio")


def xyxy_to_normalized_cxcywh(boxes: Tensor, height: int, width: int) -> Tensor:
    """Pixel corners -> (centre x, centre y, width, height) as fractions of the image: the library's targets."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / (2 * width), (y0 + y1) / (2 * height), (x1 - x0) / width, (y1 - y0) / height],
                       dim=-1)


def normalized_cxcywh_to_xyxy(boxes: Tensor, height: int, width: int) -> Tensor:
    """The inverse of xyxy_to_normalized_cxcywh: the library's predictions -> pixel corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
                       dim=-1)


def loss_group(key: str) -> str:
    """The logged name a library loss term adds into: denoising terms into loss_dn, the other decoder
    layers' and the encoder's (aux_i, _i, _enc, _pre) into loss_aux, the last layer's under their own name."""
    if "_dn" in key:
        return "loss_dn"
    if re.search(r"_(aux_)?\d+$|_enc|_pre$", key):
        return "loss_aux"
    return key


def loss_weight(key: str, config) -> float:
    """The weight the library gives an unweighted loss_dict term (loss_ce, loss_bbox, loss_giou and their
    per-layer copies; other entries, such as cardinality_error, are reported but not optimised)."""
    base = re.sub(r"(_aux)?(_\d+)?(_enc)?$", "", key)
    coefficients = {"loss_ce": getattr(config, "class_loss_coefficient", 1.0),
                    "loss_bbox": config.bbox_loss_coefficient, "loss_giou": config.giou_loss_coefficient}
    return float(coefficients.get(base, 0.0))


class SquareImageTransform(DetectorImageTransform):
    """Every image stretched to `min_size` x `min_size` (RT-DETR's and D-FINE's image processors: no
    aspect ratio kept, no padding); detections are stretched back to the original pixels by
    `postprocess` per axis. TTA's scales set `min_size` as for the other detectors."""

    square = True

    def resize(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict | None]:
        if self.training and self.skip_train_resize:
            return image, target
        side = int(self.min_size[-1])
        height, width = image.shape[-2:]
        image = F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)[0]
        if target is not None and "boxes" in target:
            target = {**target, "boxes": resize_boxes(target["boxes"], (height, width), (side, side))}
        return image, target


def hf_image_transform(resize: str, min_size: int, max_size: int, image_mean: Sequence[float],
                       image_std: Sequence[float], size_divisible: int,
                       skip_train_resize: bool = False) -> DetectorImageTransform:
    if resize not in RESIZES:
        raise ConfigError(f"model.resize={resize!r} is not one of {RESIZES}")
    kind = SquareImageTransform if resize == "square" else DetectorImageTransform
    return kind(min_size, max_size, list(image_mean), list(image_std), size_divisible=size_divisible,
                skip_train_resize=skip_train_resize)


class HFDetector(nn.Module):
    """A `transformers` *ForObjectDetection model (`detector`) with detect's inputs and outputs."""

    backbone_prefix = "detector.model.backbone."  # schedule.paramwise.backbone_lr_mult applies to these

    def __init__(self, detector: nn.Module, transform: DetectorImageTransform, num_classes: int,
                 score_thresh: float, topk_candidates: int, detections_per_img: int):
        super().__init__()
        model_type = detector.config.model_type
        if model_type not in FAMILIES:
            raise ConfigError(f"transformers model type {model_type!r} is not one detect adapts; "
                              f"these are: {', '.join(FAMILIES)}")
        self.detector = detector
        self.transform = transform
        self.family = FAMILIES[model_type]
        # DistributedDataParallel must then look for parameters without gradients at every step (engine/build.py).
        self.has_unused_parameters = self.family.unused_parameters
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.detections_per_img = detections_per_img

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(images, targets)
        pixels = batch.tensors
        frames = self.box_frames(batch.image_sizes, pixels.shape[-2:])
        mask = self.pixel_mask(batch.image_sizes, pixels) if self.family.pixel_mask else None
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            labels = [{"class_labels": target["labels"] - 1,
                       "boxes": xyxy_to_normalized_cxcywh(target["boxes"], *frame)}
                      for target, frame in zip(targets, frames)]
            out = self.run_detector(pixels, mask, labels)
            return self.loss_terms(out.loss_dict)
        out = self.run_detector(pixels, mask)
        detections = self.decode(out.logits, out.pred_boxes, frames, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def run_detector(self, pixels: Tensor, mask: Tensor | None, labels: list[dict] | None = None):
        try:
            return self.detector(pixel_values=pixels, pixel_mask=mask, labels=labels)
        except RuntimeError as err:
            if "selected index k out of range" not in str(err):
                raise
            # The two-stage DETRs pick their queries among the encoder's positions: too small an input has
            # fewer positions than queries.
            queries = getattr(self.detector.config, "num_queries", "?")
            raise ConfigError(
                f"an input of {pixels.shape[-2]}x{pixels.shape[-1]} px has fewer feature positions than the model's "
                f"{queries} queries ({self.detector.config.model_type}): raise model.min_size (RF-DETR needs about "
                f"14 x sqrt(queries) px, RT-DETR and D-FINE 8 x sqrt(queries)) or lower "
                f"model.architecture.num_queries (with pretrained: null)") from err

    def box_frames(self, image_sizes: list[tuple[int, int]], padded: Sequence[int]) -> list[tuple[int, int]]:
        """The (height, width) the library's normalised boxes are fractions of, per image: the image's own
        area for models that read a pixel mask, the padded batch for the others (which see the padding)."""
        if self.family.pixel_mask:
            return [tuple(size) for size in image_sizes]
        return [(int(padded[0]), int(padded[1]))] * len(image_sizes)

    @staticmethod
    def pixel_mask(image_sizes: list[tuple[int, int]], pixels: Tensor) -> Tensor:
        mask = torch.zeros((pixels.shape[0], *pixels.shape[-2:]), dtype=torch.long, device=pixels.device)
        for i, (height, width) in enumerate(image_sizes):
            mask[i, :height, :width] = 1
        return mask

    def loss_terms(self, loss_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """The library's terms, weighted as the library weights them and grouped by loss_group: their sum
        is the library's total loss."""
        config = self.detector.config
        terms: dict[str, Tensor] = {}
        for key, value in loss_dict.items():
            weight = (1.0 if key.startswith("loss_") else 0.0) if self.family.weighted_loss_dict \
                else loss_weight(key, config)
            if weight:
                group = loss_group(key)
                terms[group] = terms[group] + value * weight if group in terms else value * weight
        return terms

    def decode(self, logits: Tensor, boxes: Tensor, frames: list[tuple[int, int]],
               image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """The `topk_candidates` best (query, class) pairs by sigmoid score, as RT-DETR's and Deformable
        DETR's post-processing do; then those under `score_thresh` dropped and at most
        `detections_per_img` kept. Boxes in pixels of the resized image, clipped to it."""
        scores = logits.float().sigmoid().flatten(1)  # (B, queries x classes)
        k = min(self.topk_candidates, scores.shape[1])
        top_scores, index = scores.topk(k, dim=1)
        classes = logits.shape[-1]
        query = torch.div(index, classes, rounding_mode="floor")
        detections = []
        for i, (frame, size) in enumerate(zip(frames, image_sizes)):
            keep = top_scores[i] >= self.score_thresh
            keep[self.detections_per_img:] = False  # topk sorted the scores: the first ones are the best
            chosen = normalized_cxcywh_to_xyxy(boxes[i, query[i][keep]].float(), *frame)
            chosen[:, 0::2] = chosen[:, 0::2].clamp(0, size[1])
            chosen[:, 1::2] = chosen[:, 1::2].clamp(0, size[0])
            detections.append({"boxes": chosen, "scores": top_scores[i][keep],
                               "labels": index[i][keep] % classes + 1})
        return detections


def load_hf_detector(pretrained: str, num_classes: int) -> nn.Module:
    """COCO weights from the Hugging Face hub (or a local folder of config.json + weights), with the class
    layers re-sized for the data's classes and started fresh. One clear message when they cannot be had."""
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE
    from transformers import AutoModelForObjectDetection

    try:
        return AutoModelForObjectDetection.from_pretrained(pretrained, num_labels=num_classes,
                                                           ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:  # no internet, unknown hub id, missing files in a local folder
        raise WeightsUnavailableError(
            f"model.pretrained={pretrained}: the weights could not be loaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). They come from the Hugging Face hub into its "
            f"cache ({HF_HUB_CACHE}; HF_HUB_OFFLINE={int(bool(HF_HUB_OFFLINE))}): run `python -m "
            f"detect.fetch_weights model=...` on a machine with internet and set HF_HUB_OFFLINE=1 on the "
            f"training nodes, point model.pretrained at a local folder holding config.json and "
            f"model.safetensors, or set model.pretrained=null to train from random init.") from err


def download_hf_detector(pretrained: str) -> Path:
    """Fetch a hub id's files (config, weights, image processor settings) into the Hugging Face cache, for
    detect.fetch_weights; returns the snapshot folder. WeightsUnavailableError when it cannot."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(pretrained, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # huggingface_hub raises many kinds: offline, unknown repo, gated, disk
        raise WeightsUnavailableError(
            f"model.pretrained={pretrained}: cannot download it into {HF_HUB_CACHE} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Check the hub id and the internet connection.") from err


def build_hf_detector(num_classes: int, pretrained: str | None, architecture: dict, resize: str, min_size: int,
                      max_size: int, image_mean: Sequence[float], image_std: Sequence[float], size_divisible: int,
                      score_thresh: float, topk_candidates: int, detections_per_img: int, name: str = "hf_detr",
                      skip_train_resize: bool = False) -> HFDetector:
    """`pretrained`: a hub id or local folder (its config.json gives the architecture; `architecture` is
    not used), or null: the model built from `architecture` (a transformers config: `model_type` and the
    keys that differ from that type's defaults), random init."""
    from huggingface_hub.errors import StrictDataclassError  # transformers' configs check their field types
    from transformers import AutoConfig, AutoModelForObjectDetection

    if pretrained:
        detector = load_hf_detector(str(pretrained), num_classes)
        log.info("%s: weights %s (class layers re-sized for %d classes and started fresh); model.architecture "
                 "is not used, the architecture is the weights' own config.json", name, pretrained, num_classes)
    else:
        settings = dict(architecture)
        model_type = settings.pop("model_type", None)
        if model_type not in FAMILIES:
            raise ConfigError(f"model.architecture.model_type={model_type!r} is not one of {', '.join(FAMILIES)}")
        try:
            config = AutoConfig.for_model(model_type, num_labels=num_classes, **settings)
            detector = AutoModelForObjectDetection.from_config(config)
        except (TypeError, ValueError, StrictDataclassError) as err:
            detail = " ".join(str(err).split())
            raise ConfigError(f"model.architecture of {name} ({model_type}) is not a valid transformers config: "
                              f"{detail}") from err
    transform = hf_image_transform(resize, min_size, max_size, image_mean, image_std, size_divisible,
                                   skip_train_resize)
    return HFDetector(detector, transform, num_classes, score_thresh, topk_candidates, detections_per_img)
