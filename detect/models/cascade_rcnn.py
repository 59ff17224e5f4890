"""Cascade R-CNN (Cai & Vasconcelos 2018) from torchvision parts; torchvision has none.

The RPN, RoIAlign, BoxCoder, Matcher and sampler are torchvision's; what is ours is the stage loop
(`CascadeRoIHeads`) with class-agnostic box regression, whose loss and post-processing torchvision's
`fastrcnn_loss` / `postprocess_detections` cannot do (they expect one box per class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from detect.errors import ConfigError
from detect.models.parts import (
    BackboneWithNeck,
    box_head,
    image_transform,
    region_proposal_network,
    roi_feature_names,
)


class CascadeStage(nn.Module):
    """One stage's box head: the shared layers `roi.box_head` names (two FC layers by default), then
    class logits (num_classes + 1, background = 0) and one class-agnostic box delta (4 numbers) per RoI.

    forward: RoI features (R, C, 7, 7) -> logits (R, num_classes + 1), deltas (R, 4).
    """

    def __init__(self, in_channels: int, roi: dict, num_classes: int):
        super().__init__()
        representation_size = roi["representation_size"]
        self.head = box_head(in_channels, roi)
        self.cls_score = nn.Linear(representation_size, num_classes + 1)
        self.bbox_pred = nn.Linear(representation_size, 4)
        # MMDetection's initialisation: Xavier-uniform shared FC layers, small normal predictors, zero biases.
        for fc in (m for m in self.head.modules() if isinstance(m, nn.Linear)):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, roi_features: Tensor) -> tuple[Tensor, Tensor]:
        x = self.head(roi_features)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(nn.Module):
    """The three (or N) stages of Cascade R-CNN, with the interface of torchvision's RoIHeads:
    `forward(features, proposals, image_shapes, targets) -> (detections, losses)`.

    Training, stage t (IoU threshold u_t, BoxCoder weights w_t, loss weight l_t):
      1. the ground-truth boxes are added to the stage's proposals;
      2. each proposal is matched to the ground truth with IoU >= u_t (else background), and
         `batch_size_per_image` of them are sampled with at most `positive_fraction` positives;
         every stage re-samples (as MMDetection's cascade does), from the boxes the stage before refined;
      3. losses: cross-entropy over the sampled RoIs, smooth L1 (beta `smooth_l1_beta`) on the
         positives' class-agnostic deltas encoded with w_t, summed and divided by the number sampled;
         both times l_t, reported as `loss_cls_s{t}` / `loss_bbox_s{t}`;
      4. the sampled RoIs (the added ground-truth boxes excepted) are decoded with the stage's deltas,
         clipped to the image and detached: they are the next stage's proposals, so no gradient flows
         from one stage into the boxes of the one before.
    Test: the proposals run through every stage, each refining the boxes of the one before; the class
    scores are the softmax of the stages' logits averaged (MMDetection averages logits; detectron2
    averages probabilities), the boxes those of the last stage. Then per class: score > `score_thresh`,
    NMS at `nms_thresh`, the best `detections_per_img` kept. Labels are 1..num_classes.

    Differences from MMDetection left in place: torchvision's MultiScaleRoIAlign samples with
    `aligned=False` (MMDetection: True, a half-pixel shift), and RoIs are mapped to pyramid levels by
    torchvision's rule (the same thresholds as MMDetection's finest_scale=56 for P2-P5).
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, stages: Sequence[CascadeStage],
                 iou_thresholds: Sequence[float], box_coder_weights: Sequence[Sequence[float]],
                 loss_weights: Sequence[float], batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 smooth_l1_beta: float = 1.0):
        super().__init__()
        if not len(stages) == len(iou_thresholds) == len(box_coder_weights) == len(loss_weights):
            raise ConfigError(
                f"Cascade R-CNN needs one value per stage in model.stages: got {len(iou_thresholds)} iou_thresholds, "
                f"{len(box_coder_weights)} box_coder_weights and {len(loss_weights)} loss_weights")
        self.box_roi_pool = box_roi_pool
        self.stages = nn.ModuleList(stages)
        self.iou_thresholds = list(iou_thresholds)
        self.box_coders = [BoxCoder(tuple(w)) for w in box_coder_weights]
        self.matchers = [Matcher(u, u, allow_low_quality_matches=False) for u in iou_thresholds]
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.loss_weights = list(loss_weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("CascadeRoIHeads needs targets in training mode")
            return [], self.losses(features, proposals, image_shapes, targets)
        return self.detect(features, proposals, image_shapes), {}

    # ------------------------------------------------------------------ training
    def assign(self, stage: int, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Labels (P,) (0 = background) and the matched ground-truth box (P, 4) of each proposal."""
        if gt_boxes.numel() == 0:  # all background; "matched" to themselves so box targets stay finite
            return torch.zeros(len(proposals), dtype=torch.int64, device=proposals.device), proposals.clone()
        matched = self.matchers[stage](box_iou(gt_boxes, proposals))
        labels = gt_labels[matched.clamp(min=0)].to(torch.int64)
        labels[matched < 0] = 0  # below the stage's IoU threshold: background
        return labels, gt_boxes[matched.clamp(min=0)]

    def losses(self, features, proposals, image_shapes, targets) -> dict[str, Tensor]:
        losses = {}
        # Boxes stay float32 throughout: under autocast the RPN hands over fp16 boxes, whose rounding
        # (about 0.5 px at 1000 px) is as large as the residuals the 0.7-IoU stage learns.
        proposals = [p.detach().float() for p in proposals]
        for t, stage in enumerate(self.stages):
            rois, labels, regression_targets, is_gt = [], [], [], []
            for props, target in zip(proposals, targets):
                gt_boxes = target["boxes"].float()
                candidates = torch.cat([props, gt_boxes])
                gt_flag = torch.cat([torch.zeros(len(props), dtype=torch.bool, device=props.device),
                                     torch.ones(len(gt_boxes), dtype=torch.bool, device=props.device)])
                stage_labels, matched_boxes = self.assign(t, candidates, gt_boxes, target["labels"])
                positive, negative = self.sampler([stage_labels])
                keep = torch.where(positive[0] | negative[0])[0]
                rois.append(candidates[keep])
                labels.append(stage_labels[keep])
                regression_targets.append(self.box_coders[t].encode_single(matched_boxes[keep], candidates[keep]))
                is_gt.append(gt_flag[keep])
            logits, deltas = stage(self.box_roi_pool(features, rois, image_shapes))
            loss_cls, loss_bbox = self.stage_loss(logits, deltas, torch.cat(labels), torch.cat(regression_targets))
            losses[f"loss_cls_s{t}"] = self.loss_weights[t] * loss_cls
            losses[f"loss_bbox_s{t}"] = self.loss_weights[t] * loss_bbox
            if t + 1 < len(self.stages):
                refined = self.refine(t, deltas.detach(), rois, image_shapes)
                proposals = [boxes[~gt] for boxes, gt in zip(refined, is_gt)]
        return losses

    def stage_loss(self, logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor):
        """Cross-entropy over all sampled RoIs; class-agnostic smooth L1 over the positives, divided by
        the number of sampled RoIs (as torchvision's fastrcnn_loss and MMDetection's bbox head do)."""
        if labels.numel() == 0:  # no proposals and no ground truth in the whole batch: nothing to learn
            return logits.sum() * 0, deltas.sum() * 0
        loss_cls = F.cross_entropy(logits, labels)
        positive = labels > 0
        loss_bbox = F.smooth_l1_loss(deltas[positive], regression_targets[positive], beta=self.smooth_l1_beta,
                                     reduction="sum") / max(labels.numel(), 1)
        return loss_cls, loss_bbox

    def refine(self, stage: int, deltas: Tensor, rois: list[Tensor], image_shapes) -> list[Tensor]:
        """Decode a stage's (R, 4) deltas onto its RoIs with the stage's weights; clipped, split per image."""
        boxes = self.box_coders[stage].decode_single(deltas.float(), torch.cat(rois).float())
        per_image = boxes.split([len(r) for r in rois])
        return [clip_boxes_to_image(b, shape) for b, shape in zip(per_image, image_shapes)]

    # ------------------------------------------------------------------ test
    def detect(self, features, proposals, image_shapes) -> list[dict[str, Tensor]]:
        boxes = proposals
        stage_logits = []
        for t, stage in enumerate(self.stages):
            logits, deltas = stage(self.box_roi_pool(features, boxes, image_shapes))
            stage_logits.append(logits)
            boxes = self.refine(t, deltas, boxes, image_shapes)
        scores = F.softmax(torch.stack(stage_logits).mean(dim=0), dim=-1)
        counts = [len(b) for b in boxes]
        return [self.postprocess(b, s) for b, s in zip(boxes, scores.split(counts))]

    def postprocess(self, boxes: Tensor, scores: Tensor) -> dict[str, Tensor]:
        """One image: boxes (R, 4) shared by every class, scores (R, num_classes + 1) -> torchvision's
        detection dict, per-class NMS."""
        num_classes = scores.shape[1] - 1
        scores = scores[:, 1:]  # drop the background column
        labels = torch.arange(1, num_classes + 1, device=scores.device).expand_as(scores).reshape(-1)
        boxes = boxes[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
        scores = scores.reshape(-1)
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class CascadeRCNN(GeneralizedRCNN):
    """torchvision's two-stage skeleton (transform, backbone + neck, RPN, RoI heads) with CascadeRoIHeads."""


def build_cascade_rcnn(num_classes: int, backbone: nn.Module, neck: Callable[..., nn.Module], rpn: dict, roi: dict,
                       stages: dict, min_size: int, max_size: int, image_mean: Sequence[float],
                       image_std: Sequence[float], size_divisible: int, name: str = "cascade_rcnn",
                       skip_train_resize: bool = False) -> CascadeRCNN:
    """Cascade R-CNN with the backbone, neck and RPN of Faster R-CNN and `len(stages.iou_thresholds)` box
    stages sharing one RoIAlign (7x7 over the neck levels of stride <= 32). Same input and output as
    `build_faster_rcnn`: labels 1..num_classes, boxes xyxy in pixels of the original image."""
    body = BackboneWithNeck(backbone, neck)
    roi_pool = MultiScaleRoIAlign(roi_feature_names(body), output_size=7, sampling_ratio=roi["sampling_ratio"])
    heads = CascadeRoIHeads(
        roi_pool,
        [CascadeStage(body.out_channels, roi, num_classes) for _ in stages["iou_thresholds"]],
        iou_thresholds=stages["iou_thresholds"],
        box_coder_weights=stages["box_coder_weights"],
        loss_weights=stages["loss_weights"],
        batch_size_per_image=roi["batch_size_per_image"],
        positive_fraction=roi["positive_fraction"],
        score_thresh=roi["score_thresh"],
        nms_thresh=roi["nms_thresh"],
        detections_per_img=roi["detections_per_img"],
        smooth_l1_beta=stages["smooth_l1_beta"],
    )
    transform = image_transform(min_size, max_size, image_mean, image_std, size_divisible, skip_train_resize)
    return CascadeRCNN(body, region_proposal_network(body, rpn), heads, transform)
