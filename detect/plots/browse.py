"""The work of `python -m detect.browse`: training images drawn with their boxes as the detector
receives them (after the data set's transforms and the model's resize), one PNG each, a grid and a
log line per image. See detect/browse.py for the command and what it writes."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("detect")

# A set of clearly different colours (Tableau 10, with a brighter yellow-green and cyan), one per
# class in label order; more classes than colours take evenly spread hues (see class_colors).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
PAD_VALUE = 114  # grey around smaller images in grid.png, as YOLO pads: neither black nor white, so image edges show
GRID_SPACING = 4  # white pixels between the cells of grid.png



def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One RGB colour per class (index 0 is label 1), the same on every image and every run."""
    import colorsys

    if num_classes <= len(PALETTE):
        return PALETTE[:num_classes]
    # Hues spaced by the golden ratio stay apart however many classes there are.
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95))
            for i in range(num_classes)]


def check_options(cfg: DictConfig) -> None:
    """The keys of conf/browse.yaml, checked as the command line check does (detect.config.check),
    for what it cannot see: values a sweeper picks while it runs (an Optuna search), a script calling main."""
    from detect.config.check import BROWSE_RULES, value_problems
    from detect.errors import ConfigError

    problems = value_problems(cfg, BROWSE_RULES, [])
    if problems:
        raise ConfigError(" ".join(problems))


def browse(cfg: DictConfig) -> Path:
    """Write the images, the grid and the log lines into the run dir; returns the run dir."""
    # torch is imported here, not at module level, so `--help` and `--cfg job` stay instant.
    import torch
    from hydra.core.hydra_config import HydraConfig
    from torchvision.io import write_png
    from torchvision.utils import draw_bounding_boxes

    from detect.data.build import annotation_files, build_dataset
    from detect.data.demo import prepare_demo_data
    from detect.errors import ConfigError
    from detect.models.hf_detr import hf_image_transform
    from detect.models.parts import image_transform

    check_options(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if earlier := sorted(out_dir.glob("*.png")):  # out=DIR used before: say so, rather than delete a user's files
        log.warning("%s already holds %d PNG files (an earlier browse?): those of the same name are replaced, "
                    "the others stay.", out_dir, len(earlier))
    data, split = cfg.data, str(cfg.split)
    ann = annotation_files(data)[split]
    if ann is None:  # data=trash has no val file until a fold is chosen
        raise ConfigError(f"split={split}: data={data.name} has no {split} annotation file (data.{split}_ann=null). "
                          f"Set data.fold=k to use {str(data.fold_val_ann).format(fold='<k>')} of a k-fold split, "
                          f"data.{split}_ann=<file>, or browse split=train.")
    prepare_demo_data(data)  # data=demo: generated when missing
    dataset = build_dataset(data, split, train=split == "train", float_output=False)  # uint8: what PNGs hold

    # The detector's own transform, built by the function the model builders call, from the model
    # section's keys (which follow data.min_size/max_size unless a model config sets its own).
    model = cfg.model
    min_size, max_size = int(model.min_size), int(model.max_size)
    square = model.get("resize") == "square"  # transformers detectors (RT-DETR, D-FINE): stretched to a square
    resize = hf_image_transform("square", min_size, max_size, model.image_mean, model.image_std,
                                int(model.size_divisible)).eval() if square else \
        image_transform(min_size, max_size, model.image_mean, model.image_std, int(model.size_divisible)).eval()
    # A pipeline that sizes the training images itself (data/aug=multiscale, lsj, strong): the detector
    # leaves them as they are in training (model.skip_train_resize), so they are shown as they come.
    model_resizes = not (split == "train" and bool(model.get("skip_train_resize", False)))

    generator = torch.Generator().manual_seed(int(cfg.seed))
    count = min(int(cfg.num_images), len(dataset))
    indexes = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    aug_seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()  # as the training sampler draws them
    pipeline, flip_only = pipeline_description(data, dataset.transforms, split)
    sizes = (f"shown at the model's input size: stretched to {min_size} x {min_size} px" if model_resizes and square
             else f"shown at the model's input size: shorter side {min_size} px unless the longer would pass "
             f"{max_size} px" if model_resizes
             else "shown at the size the pipeline gives them (the model does not resize them)")
    log.info("Browsing %d of the %d images of %s (%s split, data=%s) after the %s, seed %d, epoch 1; %s.", count,
             len(dataset), dataset.ann_file, split, data.name, pipeline, int(cfg.seed), sizes)
    if count < int(cfg.num_images):
        log.info("num_images=%d: the split holds only %d images, all of them are shown.", cfg.num_images, count)

    colors = class_colors(len(dataset.classes))
    # Black names on a box-coloured patch stay readable on any image; torchvision < 0.23 draws the
    # names in the box colour only.
    fill_labels = "fill_labels" in inspect.signature(draw_bounding_boxes).parameters
    label_background = {"fill_labels": True} if fill_labels else {}
    info_of_id = {info["id"]: info for info in dataset.images}
    drawn = []
    for place, (index, aug_seed) in enumerate(zip(indexes, aug_seeds)):
        image, target = dataset[(index, aug_seed, 0)]  # epoch 0 (the first): mosaic is on unless close_at_epoch=1
        info = info_of_id[target["image_id"]]  # by id: a substituted unreadable image names its stand-in
        may_flip = split == "train" and float(data.hflip_prob) > 0
        flipped = (", flipped: " + (was_flipped(dataset, index, image) if may_flip else "no")) if flip_only else ""
        height, width = image.shape[-2:]
        if model_resizes:
            # The resize interpolates floats; values stay in 0..255, so rounding gives back a uint8 image.
            resized, resized_target = resize.resize(image.float(), {"boxes": target["boxes"].clone()})
            shown = resized.round().clamp(0, 255).to(torch.uint8)
        else:
            shown, resized_target = image, target
        labels = target["labels"].tolist()
        names = [dataset.classes[label - 1] for label in labels]
        line_width = max(2, round(max(shown.shape[-2:]) / 300))  # visible on a 1333 px image, not heavy on 256 px
        picture = draw_bounding_boxes(shown, resized_target["boxes"], labels=names,
                                      colors=[colors[label - 1] for label in labels], width=line_width,
                                      **label_background)
        name = f"{place:0{len(str(count - 1))}d}_{Path(info['file_name']).stem}.png"
        write_png(picture, str(out_dir / name))
        drawn.append(picture)
        log.info("%s: %s, %dx%d shown (%dx%d loaded), %d boxes%s%s", name, info["file_name"],
                 picture.shape[-1], picture.shape[-2], width, height, len(labels), class_counts(names), flipped)

    write_png(grid(drawn, int(cfg.grid_columns)), str(out_dir / "grid.png"))
    log.info("Wrote %d images and grid.png to %s", len(drawn), out_dir)
    return out_dir


def pipeline_description(data: DictConfig, transforms, split: str) -> tuple[str, bool]:
    """What the log says the images went through, and whether it is a flip at most (then each image's
    log line says whether it was flipped)."""
    from detect.data.pipeline import AugmentPipeline

    if split != "train":
        return "evaluation transforms", True
    if not isinstance(transforms, AugmentPipeline):  # a config from before data.aug: the flip
        return f"training transforms (horizontal flip p={float(data.hflip_prob):g})", True
    names = {type(step).__name__ for step in transforms.steps}
    if names <= {"RandomHorizontalFlip"}:
        return f"training transforms (horizontal flip p={float(data.hflip_prob):g})", True
    return f"training pipeline data/aug={transforms.name} ({transforms.describe()})", False


def was_flipped(dataset, index: int, image) -> str:
    """'yes' or 'no': whether the transforms mirrored the image, found by comparing it with the file
    as decoded (the flip draws from the transforms' own RNG, which is not ours to replay); '?' when
    neither matches (a substituted image) or the image is its own mirror."""
    import torch

    raw = dataset.read_image(index)
    if raw is None or raw.shape != image.shape:
        return "?"
    same, mirrored = torch.equal(raw, image), torch.equal(raw.flip(-1), image)
    return "?" if same == mirrored else "yes" if mirrored else "no"


def class_counts(names: list[str]) -> str:
    """' (Paper x2, Metal)': the classes of an image's boxes, in order of first appearance."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return (" (" + ", ".join(n if c == 1 else f"{n} x{c}" for n, c in counts.items()) + ")") if counts else ""


def grid(images: list, columns: int):
    """One uint8 image: the images in rows of `columns`, each padded (grey, bottom and right) to the
    largest height and width, cells GRID_SPACING white pixels apart."""
    import torch
    from torchvision.utils import make_grid

    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    cells = []
    for image in images:
        cell = torch.full((3, height, width), PAD_VALUE, dtype=torch.uint8)
        cell[:, :image.shape[-2], :image.shape[-1]] = image
        cells.append(cell)
    return make_grid(cells, nrow=columns, padding=GRID_SPACING, pad_value=255)
