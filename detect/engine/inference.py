"""Inference over a loader: predictions as COCO results, and COCO evaluation (sharded under torchrun)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader

from detect.data.transforms import to_float
from detect.engine.compile import compile_errors
from detect.engine.distributed import SINGLE_PROCESS, Dist, gather_lists
from detect.evaluation.coco_metrics import evaluate_boxes


def move_to(images: list[torch.Tensor], targets: list[dict], device: torch.device, non_blocking: bool = False):
    """Images and targets to `device`. uint8 images (the loader's output for GPU training) become
    float in [0, 1] after the copy: a quarter of the bytes to transfer, the conversion on the GPU."""
    images = [to_float(img.to(device, non_blocking=non_blocking)) for img in images]
    targets = [{k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            category_of_label: dict[int, int], image_ids: list[int] | None = None,
            show: Callable[[Iterable], Iterable] = lambda batches: batches,
            amp_dtype: torch.dtype | None = None) -> list[dict]:
    """Run the detector over `loader`; return COCO results (bbox xywh in original-image pixels).
    `image_ids`, if given, receives the id of every image predicted (also those without boxes).
    `show` wraps the batches (a progress bar). `amp_dtype`: autocast to it (runtime.amp on CUDA)."""
    model.eval()
    results = []
    for images, targets in show(loader):
        images, _ = move_to(images, [], device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None), \
                compile_errors(type(model).__name__):
            outputs = model(images)
        for target, output in zip(targets, outputs):
            if image_ids is not None:
                image_ids.append(target["image_id"])
            boxes = output["boxes"].float().cpu()
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            for box, score, label in zip(boxes.tolist(), output["scores"].float().tolist(), output["labels"].tolist()):
                results.append({
                    "image_id": target["image_id"],
                    "category_id": category_of_label[int(label)],
                    "bbox": [round(v, 2) for v in box],
                    "score": round(float(score), 5),
                })
    return results


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             place: Dist = SINGLE_PROCESS,
             show: Callable[[Iterable], Iterable] = lambda batches: batches,
             amp_dtype: torch.dtype | None = None) -> tuple[dict, list[dict]] | None:
    """COCO metrics of the model on the loader's data set (see detect.evaluation.coco_metrics), plus
    `images`: how many images were predicted; and the detections scored (COCO results). Under
    torchrun each process predicts its share of the images and rank 0 scores them all; the other
    ranks get None."""
    dataset = loader.dataset
    seen: list[int] = []
    detections = gather_lists(predict(model, loader, device, dataset.category_of_label, seen, show, amp_dtype), place)
    seen = gather_lists(seen, place)
    if detections is None:
        return None
    if sorted(seen) != sorted(info["id"] for info in dataset.images):  # each image once, none left out
        raise RuntimeError(f"Evaluation predicted {len(seen)} images ({len(set(seen))} distinct) of the "
                           f"{len(dataset.images)} in {dataset.ann_file}: the loaders' sharding is broken.")
    # Label i (1-based) is class_names[i - 1]; the evaluation speaks the json's category ids.
    category_ids = [dataset.category_of_label[label] for label in range(1, len(dataset.classes) + 1)]
    metrics = {**evaluate_boxes(dataset.coco, detections, dataset.classes, category_ids), "images": len(seen)}
    return metrics, detections
