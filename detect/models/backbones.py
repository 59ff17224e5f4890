"""ResNet-FPN backbones whose freezing switches really hold.

torchvision's detection builders pick trainable BatchNorm whenever `weights=None` and ignore the
`norm_layer` asked for, so we build the ResNet ourselves: the BatchNorm kind follows `norm_eval`
and the frozen stages follow `frozen_stages`, with or without pretrained weights.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detect.errors import ConfigError, WeightsUnavailableError

RESNETS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101, 152: resnet.resnet152}
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


def resnet_fpn(depth: int, weights: str | None, frozen_stages: int, norm_eval: bool,
               out_channels: int, start_level: int = 0) -> BackboneWithFPN:
    """ResNet-`depth` with an FPN over C2-C5 plus a max-pooled extra level (P2-P6, as MMDetection's).

    `start_level` (MMDetection's FPN argument) skips the finest levels: 1 builds P3-P6, which
    saves much of the compute on small images whose objects are not tiny.

    `norm_eval=True` replaces every BatchNorm by FrozenBatchNorm2d (statistics and affine fixed);
    `frozen_stages` follows MMDetection (-1 none, 0 stem, 1 stem + layer1, ...).
    """
    if depth not in RESNETS:
        raise ConfigError(f"model.backbone.depth={depth} is not supported; choose one of {sorted(RESNETS)}")
    if not 0 <= start_level <= 2:
        raise ConfigError(f"model.neck.start_level={start_level} must be 0 (P2), 1 (P3) or 2 (P4)")
    if not -1 <= frozen_stages <= 4:
        raise ConfigError(f"model.backbone.frozen_stages={frozen_stages} must be between -1 and 4")
    norm_layer = FrozenBatchNorm2d if norm_eval else nn.BatchNorm2d
    body = RESNETS[depth](weights=None, norm_layer=norm_layer)
    if weights:
        state = load_pretrained_state(weights)
        try:
            missing, unexpected = body.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise WeightsUnavailableError(
                f"Backbone weights {weights} do not fit a ResNet-{depth} "
                f"({str(err).strip().splitlines()[-1].strip()}). "
                "Pick weights of the same depth (model.backbone.weights) or set model.backbone.depth to match."
            ) from err
        # FrozenBatchNorm2d has no num_batches_tracked; anything else missing means a wrong file.
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise WeightsUnavailableError(
                f"Backbone weights {weights} do not fit a ResNet-{depth}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]})."
            )
    freeze_stages(body, frozen_stages)
    # BasicBlock ResNets (18/34) end their stages with 64..512 channels, Bottleneck ones with 4x that.
    in_channels = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    layers = ["layer1", "layer2", "layer3", "layer4"][start_level:]
    return BackboneWithFPN(
        body,
        return_layers={name: str(i) for i, name in enumerate(layers)},
        in_channels_list=in_channels[start_level:],
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
    )
