"""Test-time augmentation: predict each image at several scales, with and without a horizontal
flip, and fuse the views' detections (weighted boxes fusion or NMS, detect/evaluation/fusion.py).

A scale is the shorter-side size the detector's own transform resizes to (its `min_size`; the
longer side limit grows in proportion), so every view's boxes come back in original-image pixels.
A flipped view's boxes are flipped back before fusing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from detect.engine.inference import move_to
from detect.evaluation.fusion import Detections, coco_results, fuse


def default_tta_scales(model_cfg) -> list[int]:
    """0.8x, 1x and 1.2x the model's own input size (data.min_size for the torchvision models, the
    square side for RT-DETR & co.), rounded to its size_divisible."""
    base, step = int(model_cfg.min_size), int(model_cfg.get("size_divisible", 32))
    return [round(base * f / step) * step for f in (0.8, 1.0, 1.2)]


def views(scales: list[int], flip: bool) -> list[tuple[int, bool]]:
    return [(scale, flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]


@torch.no_grad()
def predict_tta(model: torch.nn.Module, loader: DataLoader, device: torch.device, category_of_label: dict[int, int],
                scales: list[int], flip: bool = True, merge: str = "wbf", iou_thr: float = 0.55,
                max_detections: int = 100, score_thr: float = 0.0) -> list[dict]:
    """COCO results (bbox xywh, original pixels) of the fused views of every image of `loader`.
    Fusion can lower a score (WBF scales a box found by few views down): boxes then below
    `score_thr` are dropped, so the threshold holds for the fused result too."""
    model.eval()
    transform = model.transform  # torchvision's GeneralizedRCNNTransform (every detector here has one)
    base_min, base_max = transform.min_size, transform.max_size
    results = []
    try:
        for images, targets in loader:
            images, _ = move_to(images, [], device)
            per_image: list[list[Detections]] = [[] for _ in images]
            for scale, flipped in views(scales, flip):
                transform.min_size = (int(scale),)
                transform.max_size = int(round(base_max * scale / base_min[-1]))
                outputs = model([img.flip(-1) for img in images] if flipped else images)
                for i, (img, out) in enumerate(zip(images, outputs)):
                    boxes = out["boxes"].float().cpu().numpy()
                    if flipped:  # x -> width - x, and the corners swap
                        boxes = np.stack([img.shape[-1] - boxes[:, 2], boxes[:, 1],
                                          img.shape[-1] - boxes[:, 0], boxes[:, 3]], axis=1)
                    per_image[i].append(Detections(boxes, out["scores"].float().cpu().numpy(),
                                                   out["labels"].cpu().numpy()))
            for target, dets in zip(targets, per_image):
                fused = fuse(dets, merge, iou_thr=iou_thr)
                keep = fused.scores >= score_thr
                fused = Detections(fused.boxes[keep], fused.scores[keep], fused.labels[keep]).sorted(max_detections)
                results += coco_results({target["image_id"]: fused}, category_of_label)
    finally:
        transform.min_size, transform.max_size = base_min, base_max
    return results
