"""Training-time augmentation on tensors. Resizing, normalization and padding happen inside the
detector (torchvision's GeneralizedRCNNTransform, sized from the data config), so predicted boxes
come back in pixels of the original image."""

from __future__ import annotations

import torch


class RandomHorizontalFlip:
    """Flip image (3xHxW) and xyxy boxes left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        if self.p > 0 and torch.rand(1).item() < self.p:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target = {**target, "boxes": boxes}
        return image, target
