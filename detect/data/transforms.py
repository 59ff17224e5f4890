"""Image transforms on tensors (torchvision.transforms.v2), boxes carried as tv_tensors.

The data set decodes each JPEG/PNG to a uint8 tensor (torchvision.io) and hands the pipeline a
`tv_tensors.Image` with its boxes as `tv_tensors.BoundingBoxes` (xyxy pixels), so every geometric
transform moves image and boxes together. Where the conversion to float in [0, 1] happens depends
on the device: training on a GPU, images stay uint8 to the end of the loader (a quarter of the bytes
to pass from the worker processes and to copy to the GPU) and `to_float` converts them on the GPU
(detect.engine.inference.move_to); on a CPU the loader workers convert them, in parallel, because there
the main process is busy training (measured in benchmarks/data_throughput.py). Resizing,
normalization and padding happen inside the detector (torchvision's GeneralizedRCNNTransform, sized
from the data config), so predicted boxes come back in pixels of the original image; a training
pipeline of data.aug that sizes the images itself (detect/data/pipeline.py) switches the detector's
training resize off. The training pipelines are built in detect/data/pipeline.py from data.aug.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def detection_transforms(hflip_prob: float = 0.0, float_output: bool = True) -> v2.Compose:
    """Training (hflip_prob > 0) or evaluation (hflip_prob=0) pipeline: (Image uint8, target with
    BoundingBoxes) -> (plain tensor 3xHxW: float in [0, 1], or uint8 with float_output=False; target
    with plain xyxy float boxes in pixels)."""
    steps: list[v2.Transform] = []
    if hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip_prob))
    if float_output:
        steps.append(v2.ToDtype(torch.float32, scale=True))  # a bare dtype converts images only, not boxes
    steps.append(v2.ToPureTensor())  # the model takes plain tensors
    return v2.Compose(steps)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1 (what the detectors take); a float image is returned as it is."""
    # The same conversion as ToDtype(scale=True) in the loader: identical values on either path.
    return v2.functional.to_dtype(image, torch.float32, scale=True) if image.dtype == torch.uint8 else image
