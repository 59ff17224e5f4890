"""ResNet / ResNeXt feature extractors whose freezing switches really hold.

torchvision's detection builders pick trainable BatchNorm whenever `weights=None` and ignore the
`norm_layer` asked for, so we build the ResNet ourselves and apply MMDetection's two switches:

- `frozen_stages` (-1 none, 0 stem, 1 stem + layer1, ... 4 all): no gradients, and their BatchNorm
  layers become FrozenBatchNorm2d, so nothing in them changes;
- `norm_eval=True`: every other BatchNorm stays in eval mode even in `model.train()` (running
  statistics fixed, affine weights still learn), as MMDetection does for pretrained backbones.

A backbone, ours or a user's, is any module that maps images (B, 3, H, W) to an ordered dict of
feature maps and has two attributes the necks read: `out_channels` (channels of each map) and
`strides` (pixels of input per feature-map cell, finest first).
"""

from __future__ import annotations

import logging
import os
import urllib.error
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet
from torchvision.ops import FrozenBatchNorm2d

from detect.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger("detect")

# Blocks per stage of each depth (He et al. 2016, as torchvision builds them).
RESNET_LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
                 101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}
# MMDetection's stage numbering: 0 is the stem (conv1 + bn1), 1..4 are layer1..layer4.
STAGES = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]


def load_pretrained_state(weights: str) -> dict[str, torch.Tensor]:
    """Return a state dict from a torchvision weights name (e.g. `ResNet50_Weights.IMAGENET1K_V1`)
    or from a local file. Raises WeightsUnavailableError with the remedies when that fails."""
    remedies = (
        "Either download the file on a machine with internet and pass its path "
        "(model.backbone.weights=/path/to/resnet50.pth), or train from random initialisation "
        "with model.backbone.weights=null."
    )
    if os.path.sep in weights or weights.endswith((".pth", ".pt")):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"Backbone weights file not found: {path}. {remedies}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        spec = get_weight(weights)
    except (ValueError, KeyError) as err:
        raise WeightsUnavailableError(
            f"Unknown torchvision weights name {weights!r} ({err}). Use a name such as "
            f"ResNet50_Weights.IMAGENET1K_V1. {remedies}"
        ) from err
    try:
        return spec.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.url).name
        raise WeightsUnavailableError(
            f"Could not download the pretrained weights {weights} from {spec.url} ({err}); "
            f"this machine seems to be offline. Copy that file to {cached} (torch's cache, used on the "
            f"next run), or: {remedies}"
        ) from err


def freeze_stages(body: nn.Module, frozen_stages: int) -> None:
    """Freeze stages 0..frozen_stages (-1 freezes nothing): no gradients, and their BatchNorm layers
    become FrozenBatchNorm2d with the current statistics, so `model.train()` cannot update them
    (MMDetection keeps frozen stages in eval mode for the same reason)."""
    for stage in STAGES[: frozen_stages + 1]:
        for name in stage:
            setattr(body, name, _freeze_batchnorm(getattr(body, name)))
            for param in getattr(body, name).parameters():
                param.requires_grad_(False)


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d in it (or itself) replaced by a FrozenBatchNorm2d copy."""
    if isinstance(module, nn.BatchNorm2d):
        return _frozen_copy(module)
    for child_name, child in module.named_children():
        setattr(module, child_name, _freeze_batchnorm(child))
    return module


def _frozen_copy(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    frozen.weight.copy_(bn.weight.detach())
    frozen.bias.copy_(bn.bias.detach())
    frozen.running_mean.copy_(bn.running_mean)
    frozen.running_var.copy_(bn.running_var)
    return frozen


def _load_weights(body: nn.Module, weights: str, arch: str) -> None:
    state = load_pretrained_state(weights)
    try:
        missing, _ = body.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"Backbone weights {weights} do not fit a {arch} ({str(err).strip().splitlines()[-1].strip()}). "
            "Pick weights of the same architecture (model.backbone.weights) or change model.backbone to match."
        ) from err
    if missing:  # strict=False only lets through extra keys (e.g. another head); missing ones mean a wrong file
        raise WeightsUnavailableError(
            f"Backbone weights {weights} do not fit a {arch}: {len(missing)} missing keys (e.g. {missing[:3]})."
        )


class ResNet(nn.Module):
    """ResNet-`depth` (or ResNeXt with `groups` x `width_per_group`) returning C2-C5.

    forward: images (B, 3, H, W), normalized -> {"c2": (B, C, H/4, W/4), ..., "c5": (B, C', H/32, W/32)}.
    `out_channels` = [256, 512, 1024, 2048] for depth >= 50 (64..512 for 18/34), `strides` = [4, 8, 16, 32].
    """

    def __init__(self, depth: int = 50, weights: str | None = None, frozen_stages: int = 1,
                 norm_eval: bool = True, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ConfigError(f"model.backbone.depth={depth} is not supported; choose one of {sorted(RESNET_LAYERS)}")
        if not -1 <= frozen_stages <= 4:
            raise ConfigError(f"model.backbone.frozen_stages={frozen_stages} must be between -1 and 4")
        if not weights and (norm_eval or frozen_stages >= 0):
            log.warning(
                "model.backbone.weights is null but frozen_stages=%d / norm_eval=%s: randomly initialised layers "
                "stay frozen and BatchNorm never normalises. From scratch, use model/backbone=resnet18 or set "
                "model.backbone.frozen_stages=-1 model.backbone.norm_eval=false.", frozen_stages, norm_eval)
        block, layers = RESNET_LAYERS[depth]
        if block is BasicBlock and (groups, width_per_group) != (1, 64):
            raise ConfigError(f"model.backbone: ResNeXt groups/width_per_group need depth >= 50, not {depth}")
        arch = f"ResNet-{depth}" if groups == 1 else f"ResNeXt-{depth} {groups}x{width_per_group}d"
        body = TorchvisionResNet(block, layers, groups=groups, width_per_group=width_per_group)
        if weights:
            _load_weights(body, weights, arch)
        freeze_stages(body, frozen_stages)
        self.norm_eval = norm_eval
        self.body = IntermediateLayerGetter(body, {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})
        width = 64 if block is BasicBlock else 256
        self.out_channels = [width, width * 2, width * 4, width * 8]
        self.strides = [4, 8, 16, 32]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.body(images)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        if mode and self.norm_eval:  # statistics stay those of the pretrained weights
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self
