"""runtime.compile: torch.compile of the parts of a detector whose input shapes stay fixed.

The backbone + neck sees one training batch shape when data.pad_to fixes it, so it compiles once; the RPN
head and the box heads see fixed shapes in training (a fixed number of sampled RoIs per image) and
compile with dynamic shapes where the number of proposals varies (evaluation). The parts in between
(anchor matching, NMS, sampling: data-dependent shapes) stay eager. Modules are compiled in place
(`nn.Module.compile`), so parameter names, checkpoints and EMA are unchanged.

Compilation happens at the first forward; a model that cannot compile fails there with one message
(`compile_errors`) instead of a page of compiler traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import torch
from torch import nn

from detect.errors import ConfigError
from detect.models.parts import round_up

log = logging.getLogger("detect")

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Dotted names of the submodules compiled when a model has them, in the order they run.
COMPILED_PARTS = (
    "backbone",  # torchvision-style detectors: backbone + neck (BackboneWithNeck)
    "rpn.head",  # RPN convolutions over every level
    "roi_heads.box_head",  # Faster R-CNN's shared box layers
    "head",  # RetinaNet / FCOS: the dense heads over every level
    "detector.model.backbone",  # transformers DETRs: the convolutional / ViT backbone
)

# The parts whose inputs data.pad_to fixes (all but the batch size).
STATIC_PARTS = ("backbone", "rpn.head", "head", "detector.model.backbone")


def compile_mode(value) -> str | None:
    """runtime.compile -> a torch.compile mode, or None when off."""
    if value in (None, False, "false", "none"):
        return None
    mode = "default" if value is True or value == "true" else str(value)
    if mode not in MODES:
        raise ConfigError(f"runtime.compile={value} is not a setting: use false, true or one of {', '.join(MODES)}.")
    return mode


def compiled_part_names(model: nn.Module) -> list[str]:
    """The submodules of `model` that runtime.compile compiles: those of COMPILED_PARTS it has, plus
    each cascade stage's box head."""
    names = [name for name in COMPILED_PARTS if _get(model, name) is not None]
    stages = _get(model, "roi_heads.stages")
    if isinstance(stages, nn.ModuleList):
        names += [f"roi_heads.stages.{i}.head" for i in range(len(stages))]
    return names


def compile_model(model: nn.Module, value, device: torch.device) -> list[str]:
    """Compile the model's parts in place as runtime.compile says; returns their names ([] when off).
    data.pad_to is read from the model's transform (detect.models.parts.set_pad_to put it there)."""
    mode = compile_mode(value)
    if mode is None:
        return []
    names = compiled_part_names(model)
    if not names:
        raise ConfigError(f"runtime.compile={value}: {type(model).__name__} has none of the parts detect compiles "
                          f"({', '.join(COMPILED_PARTS)}); use runtime.compile=false.")
    if mode in ("reduce-overhead", "max-autotune") and device.type != "cuda":
        log.info("runtime.compile=%s uses CUDA graphs, which %s has not: compiling with mode default", mode, device)
        mode = "default"
    transform = getattr(model, "transform", None)
    pad_to = getattr(transform, "pad_to", None)
    for name in names:
        # With data.pad_to the backbone and the dense heads see one training shape: static graphs (one more
        # for the epoch's short last batch; evaluation, unpadded as in detect.test, adds one per batch shape:
        # one for 1024x1024 data; torch keeps up to 8 per part, then runs new shapes eagerly).
        # The box heads' RoI counts, and every shape without pad_to, become dynamic after their first change.
        static = pad_to is not None and name in STATIC_PARTS
        _get(model, name).compile(mode=mode, dynamic=False if static else None)
    log.info("runtime.compile: torch.compile (mode %s) of %s; the first training and evaluation steps compile "
             "(minutes), later ones run the compiled code", mode, ", ".join(names))
    if pad_to is None and not getattr(transform, "square", False):
        divisor = int(getattr(transform, "size_divisible", 32))
        side = round_up(int(getattr(transform, "max_size", 1024)), divisor)
        log.info("runtime.compile without data.pad_to: each new batch shape compiles the backbone again (a fixed "
                 "shape, e.g. data.pad_to=%d, compiles once)", side)
    return names


@contextlib.contextmanager
def compile_errors(model_name: str):
    """A compiler failure (torch._dynamo / inductor) becomes one message that names runtime.compile."""
    try:
        yield
    except Exception as err:
        dynamo = sys.modules.get("torch._dynamo.exc")
        if dynamo is None or not isinstance(err, dynamo.TorchDynamoException):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"runtime.compile: torch.compile could not compile model {model_name}: "
                          f"{type(err).__name__}: {first[:500]}. Train without it (runtime.compile=false) or try "
                          "another mode (runtime.compile=max-autotune-no-cudagraphs).") from err


def _get(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return model.get_submodule(dotted)
    except AttributeError:  # the model has no such part
        return None
