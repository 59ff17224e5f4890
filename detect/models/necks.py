"""Necks: multi-scale feature fusion between a backbone and the detection heads.

A neck is built as `Neck(in_channels=backbone.out_channels, in_strides=backbone.strides, **config)`
(the config holds `_partial_: true`, so the model builder supplies the backbone's numbers). It maps the
backbone's ordered dict of feature maps to its own levels, finest first (ours name them by stride,
"p3" = stride 2**3 = 8), and has `out_channels` (one int: every level has the same width, as the
heads need) and `strides` (one per output level).
Add a neck of your own by writing a class with that contract in any importable file and pointing
`model.neck._target_` at it (see the README, "Add a module").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

from detect.errors import ConfigError

FPN_EXTRAS = ("none", "max_pool", "p6p7_c5", "p6p7_p5")
# torchvision's own norm layers (default momentum and eps), as its v2 COCO weights were trained with.
FPN_NORMS = {"none": None, "batch": nn.BatchNorm2d, "group": partial(nn.GroupNorm, 32)}


def level_name(stride: int) -> str:
    return f"p{int(math.log2(stride))}"


def _select_inputs(in_channels: list[int], in_strides: list[int], start_level: int, key: str) -> None:
    if len(in_channels) != len(in_strides):
        raise ConfigError(f"{key}: the backbone gives {len(in_channels)} channel counts but {len(in_strides)} strides")
    if not 0 <= start_level < len(in_channels):
        raise ConfigError(f"{key}.start_level={start_level} must be between 0 and {len(in_channels) - 1} "
                          f"(the backbone has {len(in_channels)} levels with strides {in_strides})")


class ExtraConvLevels(ExtraFPNBlock):
    """Two extra levels (P6, P7) by 3x3 stride-2 convolutions, as RetinaNet and FCOS add them.
    `from_input=True` starts from the backbone's last map (C5, MMDetection's 'on_input': RetinaNet,
    P7 = conv(P6)); otherwise from the neck's last output (P5, 'on_output': FCOS, whose config also
    sets relu_before_extra_convs, so P7 = conv(relu(P6)))."""

    def __init__(self, in_channels: int, out_channels: int, from_input: bool, relu_before: bool | None = None):
        super().__init__()
        self.from_input = from_input
        # torchvision's LastLevelP6P7 always applies the ReLU (its RetinaNet weights were trained so).
        self.relu_before = (not from_input) if relu_before is None else relu_before
        self.p6 = nn.Conv2d(in_channels if from_input else out_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str]):
        p6 = self.p6(x[-1] if self.from_input else results[-1])
        p7 = self.p7(F.relu(p6) if self.relu_before else p6)
        return results + [p6, p7], names + ["p6", "p7"]


class FPN(nn.Module):
    """Feature pyramid network (Lin et al. 2017) over the backbone levels from `start_level` on.

    extra: "max_pool" adds one level by max pooling the last output (Faster/Cascade R-CNN: P2-P6);
    "p6p7_c5" / "p6p7_p5" add two conv levels from C5 / P5 (RetinaNet / FCOS: P3-P7); "none" adds none.
    relu_before_extra: P7 = conv(relu(P6)) when true; null takes the paper's choice (false from C5, true
    from P5). norm: "none" (the FPN paper, torchvision v1), "batch" (torchvision's v2 Faster R-CNN) or
    "group" (GroupNorm with 32 groups) after every lateral and output convolution.
    """

    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int = 256,
                 start_level: int = 0, extra: str = "max_pool", relu_before_extra: bool | None = None,
                 norm: str = "none"):
        super().__init__()
        _select_inputs(in_channels, in_strides, start_level, "model.neck")
        if extra not in FPN_EXTRAS:
            raise ConfigError(f"model.neck.extra={extra!r} is not one of {FPN_EXTRAS}")
        if norm not in FPN_NORMS:
            raise ConfigError(f"model.neck.norm={norm!r} is not one of {tuple(FPN_NORMS)}")
        used_channels, used_strides = in_channels[start_level:], in_strides[start_level:]
        # Only the chosen extra block is built: building the others would draw random weights for nothing.
        if extra == "max_pool":
            extra_block, num_extra = LastLevelMaxPool(), 1
        elif extra in ("p6p7_c5", "p6p7_p5"):
            extra_block = ExtraConvLevels(used_channels[-1], out_channels, extra == "p6p7_c5", relu_before_extra)
            num_extra = 2
        else:
            extra_block, num_extra = None, 0
        self.start_level = start_level
        self.fpn = FeaturePyramidNetwork(used_channels, out_channels, extra_blocks=extra_block,
                                         norm_layer=FPN_NORMS[norm])
        self.out_channels = out_channels
        self.strides = used_strides + [used_strides[-1] * 2 ** (k + 1) for k in range(num_extra)]

    def forward(self, features: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        used = OrderedDict(list(features.items())[self.start_level:])
        outputs = self.fpn(used).values()
        return OrderedDict((level_name(s), out) for s, out in zip(self.strides, outputs))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)  # EfficientDet's values
    if kind == "group":
        return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"model.neck.norm={kind!r} is not one of 'batch', 'group', 'none'")


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1 convolution and a norm: BiFPN's cheap fusion convolution."""

    def __init__(self, channels: int, norm: str):
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=norm == "none"),
            _norm(norm, channels),
        )


class WeightedFusion(nn.Module):
    """EfficientDet's fast normalized fusion: sum_i relu(w_i) x_i / (sum_i relu(w_i) + eps), then SiLU
    and a separable convolution. The inputs must already share one shape."""

    def __init__(self, num_inputs: int, channels: int, norm: str, eps: float = 1e-4):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(num_inputs))
        self.eps = eps
        self.conv = SeparableConv(channels, norm)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        fused = sum(wi * x for wi, x in zip(w, inputs)) / (w.sum() + self.eps)
        return self.conv(F.silu(fused))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest up-sampling or 3x3 max-pool down-sampling of `x` to the spatial size of `like`."""
    if x.shape[-1] > like.shape[-1]:
        x = F.max_pool2d(x, 3, 2, 1)
    if x.shape[-2:] != like.shape[-2:]:  # up-sampling, or odd sizes after padding
        x = F.interpolate(x, size=like.shape[-2:], mode="nearest")
    return x


class BiFPNLayer(nn.Module):
    """One bidirectional pass (EfficientDet, Tan et al. 2020) over L levels, finest first:
    top-down  td_i  = fuse(p_i, up(td_{i+1}))                       for i = L-2 .. 0 (td_{L-1} = p_{L-1})
    bottom-up out_i = fuse(p_i, td_i, down(out_{i-1}))              for i = 1 .. L-2 (out_0 = td_0)
              out_{L-1} = fuse(p_{L-1}, down(out_{L-2}))"""

    def __init__(self, num_levels: int, channels: int, norm: str):
        super().__init__()
        self.top_down = nn.ModuleList(WeightedFusion(2, channels, norm) for _ in range(num_levels - 1))
        self.bottom_up = nn.ModuleList(WeightedFusion(3 if i < num_levels - 1 else 2, channels, norm)
                                       for i in range(1, num_levels))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = [levels[-1]]
        for i in range(len(levels) - 2, -1, -1):
            top_down.insert(0, self.top_down[i]([levels[i], _resize_to(top_down[0], levels[i])]))
        outputs = [top_down[0]]
        for i in range(1, len(levels)):
            inputs = [levels[i], top_down[i]] if i < len(levels) - 1 else [levels[i]]
            outputs.append(self.bottom_up[i - 1](inputs + [_resize_to(outputs[-1], levels[i])]))
        return outputs


class BiFPN(nn.Module):
    """BiFPN neck: 1x1 lateral projections of the backbone levels from `start_level` on, extra levels by
    max pooling up to `num_levels`, then `num_repeats` BiFPN layers with learned fusion weights.

    `norm="batch"` is EfficientDet's choice for large batches; `"group"` suits the small batches of
    two-stage detectors on one GPU. Simplification: the first layer takes each level's one lateral
    projection for both of its inputs (EfficientDet projects the backbone map again for the
    bottom-up input).
    """

    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int = 256,
                 start_level: int = 0, num_levels: int = 5, num_repeats: int = 2, norm: str = "group"):
        super().__init__()
        _select_inputs(in_channels, in_strides, start_level, "model.neck")
        used_channels, used_strides = in_channels[start_level:], in_strides[start_level:]
        if num_levels < len(used_channels):
            raise ConfigError(f"model.neck.num_levels={num_levels} is below the {len(used_channels)} backbone levels "
                              f"used from start_level={start_level}; raise num_levels or start_level")
        if num_repeats < 1:
            raise ConfigError(f"model.neck.num_repeats={num_repeats} must be at least 1")
        self.start_level = start_level
        self.num_extra = num_levels - len(used_channels)
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=norm == "none"), _norm(norm, out_channels))
            for c in used_channels)
        self.layers = nn.Sequential(*(BiFPNLayer(num_levels, out_channels, norm) for _ in range(num_repeats)))
        self.out_channels = out_channels
        self.strides = used_strides + [used_strides[-1] * 2 ** (k + 1) for k in range(self.num_extra)]

    def forward(self, features: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        used = list(features.values())[self.start_level:]
        levels = [lateral(x) for lateral, x in zip(self.lateral, used)]
        for _ in range(self.num_extra):
            levels.append(F.max_pool2d(levels[-1], 3, 2, 1))
        return OrderedDict((level_name(s), out) for s, out in zip(self.strides, self.layers(levels)))
