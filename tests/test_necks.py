"""Necks: FPN and BiFPN give the levels, strides and channels the heads are built for."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import pytest
import torch

from detect.errors import ConfigError
from detect.models.necks import FPN, BiFPN
from detect.models.parts import BackboneWithNeck, roi_feature_names

CHANNELS, STRIDES = [64, 128, 256, 512], [4, 8, 16, 32]


def features(height: int = 96, width: int = 64) -> OrderedDict:
    """Backbone-like maps; sizes round up as stride-2 convolutions do on odd sizes."""
    maps, h, w = OrderedDict(), height, width
    for name, c in zip(["c2", "c3", "c4", "c5"], CHANNELS):
        h, w = (-(-h // 2), -(-w // 2)) if name != "c2" else (height // 4, width // 4)
        maps[name] = torch.rand(2, c, h, w)
    return maps


@pytest.mark.parametrize(("neck", "names", "strides"), [
    (FPN(CHANNELS, STRIDES, 32), ["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64]),
    (FPN(CHANNELS, STRIDES, 32, start_level=1, extra="p6p7_c5"), ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]),
    (FPN(CHANNELS, STRIDES, 32, start_level=1, extra="p6p7_p5"), ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]),
    (BiFPN(CHANNELS, STRIDES, 32), ["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64]),
    (BiFPN(CHANNELS, STRIDES, 32, start_level=1, num_levels=5, norm="batch"), ["p3", "p4", "p5", "p6", "p7"],
     [8, 16, 32, 64, 128]),
])
def test_levels_are_named_by_stride_with_the_announced_channels(neck, names, strides):
    x = features()
    out = neck(x)
    assert list(out) == names and neck.strides == strides
    for feature, stride in zip(out.values(), strides):
        assert feature.shape[:2] == (2, neck.out_channels)
        assert feature.shape[-2] == -(-96 // stride)  # the level's height is the image's / stride, rounded up
    sum(o.mean() for o in out.values()).backward()


def test_bifpn_fusion_weights_learn():
    neck = BiFPN(CHANNELS, STRIDES, 32, num_repeats=1)
    sum(o.mean() for o in neck(features()).values()).backward()
    fusion = [m.weights for m in neck.modules() if hasattr(m, "weights") and isinstance(m.weights, torch.nn.Parameter)]
    assert len(fusion) == 8 and all(w.grad is not None and w.grad.abs().sum() > 0 for w in fusion)


def test_roi_heads_pool_from_levels_of_stride_at_most_32():
    class Backbone(torch.nn.Module):
        out_channels, strides = CHANNELS, STRIDES

        def forward(self, images):
            return features()

    body = BackboneWithNeck(Backbone(), partial(FPN, out_channels=32, start_level=1))
    assert roi_feature_names(body) == ["p3", "p4", "p5"] and body.out_channels == 32


def test_bad_neck_settings_name_the_key():
    with pytest.raises(ConfigError, match="model.neck.start_level=4"):
        FPN(CHANNELS, STRIDES, start_level=4)
    with pytest.raises(ConfigError, match="model.neck.extra='p8'"):
        FPN(CHANNELS, STRIDES, extra="p8")
    with pytest.raises(ConfigError, match="model.neck.num_levels=3"):
        BiFPN(CHANNELS, STRIDES, num_levels=3)
    with pytest.raises(ConfigError, match="model.neck.norm='layer'"):
        BiFPN(CHANNELS, STRIDES, norm="layer")


def test_a_key_left_over_from_another_neck_is_named_with_the_fix():
    from detect.models.backbones import ResNet

    with pytest.raises(ConfigError) as err:
        BackboneWithNeck(ResNet(18, None, -1, False), partial(BiFPN, out_channels=32, extra="p6p7_c5"))
    assert "model.neck (BiFPN)" in str(err.value) and "'extra'" in str(err.value)
    assert "'~model.neck.<key>'" in str(err.value)
