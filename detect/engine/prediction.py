"""Predict with a trained model on files that have no annotation json: a folder, a glob, one image or a
video (detect/predict.py is the command). Images are read with PIL, videos with PyAV (FFmpeg's
bindings: torchvision no longer reads video). Detections come back in original pixels, drawn with the
class colours of detect.browse, and are written as one results file; files that cannot be read are
listed and skipped."""

from __future__ import annotations

import glob
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from detect.errors import ConfigError

log = logging.getLogger("detect")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class Sources:
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)


def find_sources(source: str) -> Sources:
    """The image and video files `source` names: a folder (its files, not its subfolders), a glob
    (`photos/*.jpg`, `**` recursive) or one file. Other files in a folder are ignored; a named file of
    an unknown kind is tried as an image (and listed as unreadable if it is not one)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise ConfigError(f"source={source}: no image or video there (a folder, a glob such as 'photos/*.jpg', "
                          f"or one file; image types {sorted(IMAGE_SUFFIXES)}, videos {sorted(VIDEO_SUFFIXES)})")
    found = Sources()
    for file in files:
        (found.videos if file.suffix.lower() in VIDEO_SUFFIXES else found.images).append(file)
    return found


def read_image(path: Path) -> torch.Tensor:
    """uint8 RGB, CxHxW. Raises OSError/UnidentifiedImageError/ValueError for a file that is not an image."""
    with Image.open(path) as image:
        image.load()
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def image_batches(paths: list[Path], batch_size: int,
                  unreadable: list[dict]) -> Iterator[list[tuple[Path, torch.Tensor]]]:
    """Readable images in batches; the others are appended to `unreadable` with the reason."""
    batch = []
    for path in paths:
        try:
            batch.append((path, read_image(path)))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            unreadable.append({"file": str(path), "error": f"{type(err).__name__}: {err}"})
            log.warning("Skipped %s: not a readable image (%s)", path, type(err).__name__)
            continue
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def video_frames(path: Path, every: int = 1) -> tuple[Iterator[tuple[int, float, torch.Tensor]], float]:
    """(frame index, time in seconds, uint8 RGB CxHxW) of every `every`-th frame, and the frame rate."""
    import av

    container = av.open(str(path))
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 25)

    def frames() -> Iterator[tuple[int, float, torch.Tensor]]:
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    seconds = float(frame.time) if frame.time is not None else index / fps
                    yield index, seconds, torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        finally:
            container.close()

    return frames(), fps


class VideoWriter:
    """A drawn video, MPEG-4 part 2 in an .mp4 (an encoder every FFmpeg build has)."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        from fractions import Fraction

        import av

        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height = width - width % 2, height - height % 2  # the encoder wants even sides
        self.stream.pix_fmt = "yuv420p"
        self.stream.bit_rate = 4_000_000

    def write(self, image: torch.Tensor) -> None:
        import av

        array = image[:, :self.stream.height, :self.stream.width].permute(1, 2, 0).contiguous().numpy()
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


@torch.no_grad()
def detect_batch(model: torch.nn.Module, images: list[torch.Tensor], device: torch.device,
                 tta: dict | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections of uint8 images, boxes xyxy in original pixels, on the CPU. `tta`: the scales, flip,
    merge and iou of detect.engine.tta (the same fusion detect.test uses)."""
    floats = [image.to(device).float() / 255 for image in images]
    if not tta:
        return [{k: v.cpu() for k, v in out.items()} for out in model(floats)]
    from detect.engine.tta import predict_tta

    labels = {label: label for label in range(1, tta["num_classes"] + 1)}  # results keep the model's labels
    batch = [(floats, [{"image_id": i} for i in range(len(floats))])]
    results = predict_tta(model, batch, device, labels, tta["scales"], tta["flip"], tta["merge"], tta["iou_thr"],
                          tta["max_detections"], tta["score_thr"])
    outputs = []
    for i in range(len(floats)):
        mine = [r for r in results if r["image_id"] == i]
        boxes = torch.tensor([r["bbox"] for r in mine], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        outputs.append({"boxes": boxes, "scores": torch.tensor([r["score"] for r in mine]),
                        "labels": torch.tensor([r["category_id"] for r in mine], dtype=torch.int64)})
    return outputs


def keep(detections: dict[str, torch.Tensor], score_threshold: float, max_detections: int) -> dict[str, torch.Tensor]:
    chosen = (detections["scores"] >= score_threshold).nonzero().flatten()
    chosen = chosen[detections["scores"][chosen].argsort(descending=True)][:max_detections]
    return {k: v[chosen] for k, v in detections.items()}


def as_records(detections: dict[str, torch.Tensor], classes: list[str]) -> list[dict]:
    """JSON-ready: box [x0, y0, x1, y1] in original pixels, the class name and label (1..C), the score."""
    return [{"box": [round(v, 2) for v in box], "class": classes[label - 1], "label": label, "score": round(score, 5)}
            for box, label, score in zip(detections["boxes"].tolist(), detections["labels"].tolist(),
                                         detections["scores"].tolist())]


def draw(image: torch.Tensor, detections: dict[str, torch.Tensor], classes: list[str],
         colors: list[tuple[int, int, int]]) -> torch.Tensor:
    """The image with its boxes in their class colours, labelled `name score`."""
    from torchvision.utils import draw_bounding_boxes

    if not len(detections["boxes"]):
        return image
    labels = [f"{classes[label - 1]} {score:.2f}" for label, score in
              zip(detections["labels"].tolist(), detections["scores"].tolist())]
    width = max(1, round(max(image.shape[-2:]) / 400))
    # Names on a box-coloured patch stay readable on any image (torchvision >= 0.23; older ones draw text only).
    fill = {"fill_labels": True} if "fill_labels" in inspect.signature(draw_bounding_boxes).parameters else {}
    return draw_bounding_boxes(image, detections["boxes"], labels=labels,
                               colors=[colors[label - 1] for label in detections["labels"].tolist()], width=width,
                               **fill)


def save_image(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=92)
