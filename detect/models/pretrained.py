"""Starting a detect model from torchvision's COCO detection weights: `runtime.load_from=<weights name>`,
e.g. `runtime.load_from=FasterRCNN_ResNet50_FPN_Weights.COCO_V1`.

detect builds its detectors from torchvision's parts, so most tensors have torchvision's names; the
backbone and the FPN sit one level deeper (`backbone.body.body.*`, `backbone.neck.fpn.*`). KEY_MAP
says so explicitly. Tensors whose shape differs are left at their fresh initialisation and listed:
the class-dependent layers (torchvision's 91 COCO categories against the data's classes) and any
layer where the architectures differ (RetinaNet v1 computes P6 from P5, detect's `retinanet` from C5
as MMDetection: that convolution starts fresh unless `model.neck.extra=p6p7_p5`). The `_v2` configs
build torchvision's v2 architectures, so their weights fit exactly. The log lists what was loaded,
what was re-initialised (with both shapes) and what was left out.

Offline, the download fails with one message naming the URL and the cache file to copy it to
(torch.hub's cache, `$TORCH_HOME/hub/checkpoints/`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from detect.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger("detect")

# detect's model.name -> torchvision's COCO weights of the same architecture (box AP as torchvision publishes it).
COCO_WEIGHTS = {
    "faster_rcnn": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",  # 37.0 box AP
    "faster_rcnn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",  # 46.7 box AP
    "retinanet": "RetinaNet_ResNet50_FPN_Weights.COCO_V1",  # 36.4 box AP (P6 fits with model.neck.extra=p6p7_p5)
    "retinanet_v2": "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",  # 41.5 box AP
    "fcos": "FCOS_ResNet50_FPN_Weights.COCO_V1",  # 39.2 box AP
    # Cascade R-CNN (not in torchvision) starts from COCO Faster R-CNN: see cascade_from_faster_rcnn.
    "cascade_rcnn": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    "cascade_rcnn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
}
FASTER_RCNN_BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's RoIHeads default, its COCO weights' scale
# torchvision's prefix -> detect's: the only renames (everything else has the same name).
KEY_MAP = (("backbone.body.", "backbone.body.body."), ("backbone.fpn.", "backbone.neck.fpn."))
_WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9]+(_[A-Za-z0-9]+)*_Weights\.[A-Z0-9_]+$")


def is_torchvision_weights(name: object) -> bool:
    """`FasterRCNN_ResNet50_FPN_Weights.COCO_V1`-shaped text (not a path to a file)."""
    return isinstance(name, str) and bool(_WEIGHTS_NAME.match(name)) and not Path(name).exists()


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, ours, theirs)
    left_out: list[str] = field(default_factory=list)  # theirs, no place in this model
    not_in_weights: list[str] = field(default_factory=list)  # ours, absent from the weights


def detect_key(torchvision_key: str, key_map: tuple = KEY_MAP) -> str:
    for theirs, ours in key_map:
        if torchvision_key.startswith(theirs):
            return ours + torchvision_key[len(theirs):]
    return torchvision_key


def load_mapped_state_dict(model: nn.Module, state: dict[str, torch.Tensor], key_map: tuple = KEY_MAP) -> LoadReport:
    """Load a state dict into `model` through `key_map` (torchvision's names by default; `()` for a
    detect checkpoint); tensors of another shape stay as the model initialised them. BatchNorm's
    `num_batches_tracked` counters are not weights and are skipped on both sides."""
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    report, to_load = LoadReport(), {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        target = detect_key(key, key_map)
        if target not in ours:
            report.left_out.append(key)
        elif ours[target].shape != value.shape:
            report.reinitialised.append((target, tuple(ours[target].shape), tuple(value.shape)))
        else:
            to_load[target] = value
    # A layer starts fresh as a whole: its bias too when its weight does not fit (RetinaNet's P6).
    for key, _, _ in list(report.reinitialised):
        bias = key[: -len("weight")] + "bias" if key.endswith(".weight") else None
        if bias in to_load:
            report.reinitialised.append((bias, tuple(ours[bias].shape), tuple(to_load.pop(bias).shape)))
    report.loaded = sorted(to_load)
    fresh = {key for key, _, _ in report.reinitialised}
    report.not_in_weights = sorted(k for k in ours if k not in to_load and k not in fresh)
    model.load_state_dict(to_load, strict=False)
    return report


def torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights torchvision publishes under `name`, from torch.hub's cache or downloaded there."""
    import torchvision

    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"runtime.load_from={name} is not a torchvision weights name. COCO detection weights: "
                          + ", ".join(f"{v} (model={k})" for k, v in COCO_WEIGHTS.items()) + ".") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # URLError, HTTPError, hash mismatch, a truncated file: all mean "not available"
        raise WeightsUnavailableError(
            f"Could not load {name} ({type(err).__name__}: {err}). Download {weights.url} on a machine with "
            f"internet and copy it to {cache} (or run there once to fill the cache), or train without it "
            "(runtime.load_from=null).") from None


def cascade_from_faster_rcnn(state: dict[str, torch.Tensor], box_coder_weights: list) -> dict[str, torch.Tensor]:
    """A Faster R-CNN state dict rewritten for a Cascade R-CNN with these stages: backbone, FPN and RPN
    as they are; each stage's shared layers from the box head (two FC layers, or v2's 4 convs + 1 FC
    when the cascade's roi.box_head matches); each stage's class-agnostic box
    regressor from the COCO regressor averaged over the 90 object classes, scaled by the stage's
    BoxCoder weights over Faster R-CNN's (10, 10, 5, 5): stage t predicts w_t / w_FRCNN times the
    deltas of the same box shift, so every stage starts by moving boxes as COCO's head would. The
    classifiers are left out (they start fresh for the data's classes).

    Why not fresh regressors: a fresh regressor refines nothing in the first iterations, and the later
    stages then train on the first stage's unrefined boxes; the averaged COCO regressor is a
    class-agnostic start that already knows box geometry."""
    out = {k: v for k, v in state.items() if not k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor."))}
    weight = state["roi_heads.box_predictor.bbox_pred.weight"]  # (91 * 4, C): class k's deltas at rows 4k..4k+3
    bias = state["roi_heads.box_predictor.bbox_pred.bias"]
    mean_weight = weight.reshape(-1, 4, weight.shape[-1])[1:].mean(0)  # class 0 is the background
    mean_bias = bias.reshape(-1, 4)[1:].mean(0)
    box_head = {k[len("roi_heads.box_head."):]: v for k, v in state.items() if k.startswith("roi_heads.box_head.")}
    for t, stage_weights in enumerate(box_coder_weights):
        scale = torch.tensor(stage_weights, dtype=weight.dtype) / torch.tensor(FASTER_RCNN_BOX_CODER_WEIGHTS)
        out.update({f"roi_heads.stages.{t}.head.{key}": value for key, value in box_head.items()})
        out[f"roi_heads.stages.{t}.bbox_pred.weight"] = mean_weight * scale[:, None]
        out[f"roi_heads.stages.{t}.bbox_pred.bias"] = mean_bias * scale
    return out


def load_torchvision_weights(model: nn.Module, name: str, model_name: str) -> LoadReport:
    """`runtime.load_from=<torchvision weights name>`: load, map, and say what happened."""
    state = torchvision_state_dict(name)
    stages = getattr(getattr(model, "roi_heads", None), "box_coders", None)
    if stages is not None and "roi_heads.box_predictor.bbox_pred.weight" in state:  # a cascade from Faster R-CNN
        state = cascade_from_faster_rcnn(state, [coder.weights for coder in stages])
    report = load_mapped_state_dict(model, state)
    expected = COCO_WEIGHTS.get(model_name)
    if not report.loaded:
        raise ConfigError(f"runtime.load_from={name}: no tensor fits model {model_name}"
                          + (f"; its COCO weights are {expected}." if expected else "."))
    log.info("Loaded %d tensors of %s into %s (runtime.load_from).", len(report.loaded), name, model_name)
    for key, ours, theirs in report.reinitialised:
        log.info("  re-initialised %s: %s here, %s in the weights", key, ours, theirs)
    if "backbone.neck.fpn.extra_blocks.p6.weight" in {key for key, _, _ in report.reinitialised}:
        log.info("  (P6 is computed from C5 here and from P5 in %s: model.neck.extra=p6p7_p5 makes it fit)", name)
    if report.left_out:
        log.info("  left out (no place in this model): %s", ", ".join(report.left_out))
    if report.not_in_weights:
        log.info("  not in the weights, kept as initialised: %s", ", ".join(report.not_in_weights))
    if expected is None:
        log.warning("No COCO weights are known for model %s: %s was loaded where the shapes fit (listed above).",
                    model_name, name)
    elif expected != name:
        log.warning("runtime.load_from=%s is not the COCO weights of %s (%s): check that the architectures match.",
                    name, model_name, expected)
    return report
