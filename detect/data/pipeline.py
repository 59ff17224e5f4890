"""The training augmentation pipeline of `data.aug` (conf/data/aug/*.yaml): its steps in order, the
box rule, then the conversion the detector takes.

A pipeline is a list of `_target_` transforms on tv_tensors (torchvision.transforms.v2 or
detect/data/augment.py), built with Hydra's instantiate. Steps that need other images (Mosaic,
MixUp: `MixingStep`) are given `draw(n)`, which picks n other images of the data set on torch's
RNG and runs them through the steps before this one (so MixUp's partner is itself a mosaic).
From `close_at_epoch` on (1-based, as the log counts epochs: close_at_epoch=12 trains epochs 12, 13,
... without them) the mixing steps are skipped. The data set calls the pipeline inside a
`fork_rng` seeded with the image's augmentation seed (detect/data/coco.py), with the epoch of the
sampler's key: the result depends on (index, seed, epoch) only.

After the steps, the box rule (`data.aug.min_box_size`, detect.data.augment.BoxRule) clips the boxes
to the image and drops those narrower or lower than that many pixels, with their labels; null skips
it (data/aug=flip: a flip keeps every box inside the image at its size, so today's runs stay as they were).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import hydra.errors
import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision import tv_tensors

from detect.data.augment import BoxRule, MixingStep, Sample
from detect.data.transforms import detection_transforms
from detect.errors import ConfigError

SHIPPED = "flip, multiscale, lsj, photometric, strong"


class SampleSource(Protocol):
    """What mixing steps read: the data set's images before any transform."""

    def __len__(self) -> int: ...

    def load_sample(self, index: int) -> Sample: ...


class AugmentPipeline:
    """(uint8 Image, target with BoundingBoxes) -> (plain tensor 3xHxW, float in [0, 1] or uint8 with
    float_output=False; target with plain xyxy boxes in pixels of the augmented image)."""

    def __init__(self, steps: Sequence, min_box_size: float | None = None, close_at_epoch: int | None = None,
                 float_output: bool = True, name: str = ""):
        self.steps = list(steps)
        self.box_rule = BoxRule(min_box_size) if min_box_size is not None else None
        self.close_at_epoch = close_at_epoch
        self.finish = detection_transforms(0.0, float_output=float_output)  # to float (or not), plain tensors
        self.name = name

    def mixing_on(self, epoch: int) -> bool:
        """Whether mosaic/mixup run in `epoch` (0-based, the sampler's): off from close_at_epoch (1-based) on."""
        return self.close_at_epoch is None or epoch + 1 < self.close_at_epoch

    def __call__(self, image: tv_tensors.Image, target: dict, source: SampleSource | None = None,
                 epoch: int = 0) -> tuple[torch.Tensor, dict]:
        image, target = self.augment(image, target, source, epoch)
        return self.finish(image, target)

    def augment(self, image: tv_tensors.Image, target: dict, source: SampleSource | None = None,
                epoch: int = 0) -> Sample:
        """The steps and the box rule, before the conversion: uint8 Image and BoundingBoxes."""
        image, target = self.run_steps(image, target, self.steps, source, epoch)
        return self.box_rule(image, target) if self.box_rule is not None else (image, target)

    def run_steps(self, image: tv_tensors.Image, target: dict, steps: list, source: SampleSource | None,
                  epoch: int) -> Sample:
        for position, step in enumerate(steps):
            if not isinstance(step, MixingStep):
                image, target = step(image, target)
            elif self.mixing_on(epoch):
                image, target = step(image, target, self.drawer(steps[:position], source, epoch))
        return image, target

    def drawer(self, before: list, source: SampleSource | None, epoch: int):
        """draw(n): n images of `source` picked on torch's RNG, each through the steps `before`."""
        def draw(count: int) -> list[Sample]:
            if source is None:
                raise ValueError("mosaic/mixup need the data set: call the pipeline with source=<data set>")
            picks = torch.randint(len(source), (count,)).tolist()
            return [self.run_steps(*source.load_sample(index), before, source, epoch) for index in picks]
        return draw

    def describe(self) -> str:
        """'Mosaic, MixUp, RandomPhotometricDistort, ... (mosaic/mixup off from epoch 12)' for the log."""
        names = [type(step).__name__ for step in self.steps] or ["no transform"]
        text = ", ".join(names)
        if self.box_rule is not None:
            text += f"; boxes clipped, those under {self.box_rule.min_size:g} px dropped"
        if self.close_at_epoch is not None and any(isinstance(s, MixingStep) for s in self.steps):
            text += f"; mosaic/mixup off from epoch {self.close_at_epoch}"
        return text


def build_train_pipeline(data: DictConfig, float_output: bool = True):
    """The training pipeline of `data.aug`; a config from before data.aug existed gets the horizontal
    flip of `data.hflip_prob` (as it trained). Raises ConfigError naming the step that cannot be built."""
    aug = data.get("aug")
    if aug is None:
        return detection_transforms(data.hflip_prob, float_output=float_output)
    name = aug.get("name", "?")
    steps = []
    for position, node in enumerate(aug.get("transforms") or []):
        key = f"data.aug.transforms[{position}]"
        steps.append(build_step(node, key, name))
    return AugmentPipeline(steps, min_box_size=aug.get("min_box_size"), close_at_epoch=aug.get("close_at_epoch"),
                           float_output=float_output, name=name)


def build_step(node, key: str, name: str):
    """One `_target_` node of the pipeline, or a ConfigError that names its key and the fix."""
    where = f"{key} of data/aug={name}"
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None:
        raise ConfigError(f"{where} is {OmegaConf.to_container(node) if isinstance(node, DictConfig) else node!r}, "
                          "not a transform: each step is a mapping with a _target_ (e.g. _target_: "
                          f"torchvision.transforms.v2.RandomHorizontalFlip). Shipped pipelines: data/aug={SHIPPED}.")
    try:
        step = hydra.utils.instantiate(node, _convert_="all")  # plain lists: v2 refuses a ListConfig fill
    except hydra.errors.InstantiationException as err:
        cause = " ".join(str(err.__cause__ if err.__cause__ is not None else err).split())  # one line
        cause += "" if cause.endswith((".", "?")) else "."
        raise ConfigError(
            f"{where} could not be built from _target_={target}: {cause} Give a full import path "
            "(torchvision.transforms.v2.<Name> or detect.data.augment.<Name>) and only arguments it takes, "
            f"in conf/data/aug/{name}.yaml, or pick a shipped pipeline: data/aug={SHIPPED}.") from None
    if not callable(step):
        raise ConfigError(f"{where}: _target_={target} built a {type(step).__name__}, which is not a transform. "
                          f"Shipped pipelines: data/aug={SHIPPED}.")
    return step
