"""Backbones: frozen stages and frozen BatchNorm really hold; weight errors name the remedies."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from detect.errors import ConfigError, WeightsUnavailableError
from detect.models.backbones import ResNet


def batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def train_one_step(backbone: nn.Module) -> None:
    backbone.train()
    out = backbone(torch.rand(2, 3, 64, 64))
    sum(o.sum() for o in out.values()).backward()


def test_feature_maps_have_the_channels_and_strides_the_backbone_announces():
    for depth, widths in ((18, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])):
        backbone = ResNet(depth, None, frozen_stages=-1, norm_eval=False)
        out = backbone(torch.rand(1, 3, 128, 96))
        assert list(out) == ["c2", "c3", "c4", "c5"] and backbone.out_channels == widths
        assert [(o.shape[1], 128 // o.shape[2]) for o in out.values()] == list(zip(widths, backbone.strides))


def test_frozen_stages_get_no_gradient_and_keep_their_statistics_in_train_mode():
    torch.manual_seed(0)
    backbone = ResNet(18, None, frozen_stages=1, norm_eval=False)
    body = backbone.body
    assert not batchnorms(body.layer1) and not isinstance(body.bn1, nn.BatchNorm2d)  # frozen copies
    frozen_before = {k: v.clone() for k, v in body.layer1.state_dict().items()}
    live_before = batchnorms(body.layer2)[0].running_mean.clone()

    train_one_step(backbone)

    assert all(p.grad is None for p in list(body.conv1.parameters()) + list(body.layer1.parameters()))
    assert all(p.grad is not None for p in body.layer2.parameters())
    assert all(torch.equal(frozen_before[k], v) for k, v in body.layer1.state_dict().items())
    assert not torch.equal(live_before, batchnorms(body.layer2)[0].running_mean)  # norm_eval off: stats move


def test_norm_eval_keeps_batchnorm_statistics_fixed_in_train_mode_while_weights_learn():
    """MMDetection's default (frozen_stages=1, norm_eval=True), without pretrained weights too."""
    backbone = ResNet(50, None, frozen_stages=1, norm_eval=True)
    stats_before = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}

    train_one_step(backbone)

    assert all(not bn.training for bn in batchnorms(backbone))
    assert all(torch.equal(stats_before[k], v) for k, v in backbone.state_dict().items() if "running" in k)
    layer2 = backbone.body.layer2
    assert all(p.grad is not None for p in layer2.parameters())  # convolutions and BN affine still learn
    assert all(p.grad is None for p in backbone.body.layer1.parameters())


def test_resnext_groups_build_torchvisions_resnext():
    from torchvision.models import resnext101_32x8d

    ours = ResNet(101, None, frozen_stages=-1, norm_eval=False, groups=32, width_per_group=8)
    theirs = resnext101_32x8d()
    ours_shapes = {k: v.shape for k, v in ours.body.state_dict().items()}
    theirs_shapes = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    assert ours_shapes == theirs_shapes


def test_offline_download_names_the_cache_path_and_both_remedies(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError) as err:
        ResNet(50, "ResNet50_Weights.IMAGENET1K_V1", 1, True)
    message = str(err.value)
    assert "offline" in message and "resnet50-0676ba61.pth" in message
    assert "model.backbone.weights=/path/to/resnet50.pth" in message and "model.backbone.weights=null" in message


def test_weights_load_from_a_local_file_and_other_depths_or_names_are_refused_clearly(tmp_path):
    path = tmp_path / "r50.pth"
    reference = resnet50()
    torch.save(reference.state_dict(), path)
    loaded = ResNet(50, str(path), frozen_stages=-1, norm_eval=False)
    assert torch.equal(loaded.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="do not fit a ResNet-18"):
        ResNet(18, str(path), -1, False)
    with pytest.raises(WeightsUnavailableError, match="Unknown torchvision weights name"):
        ResNet(50, "ResNet50_Weights.NOPE", 1, True)
    with pytest.raises(ConfigError, match="depth=42"):
        ResNet(42)


def test_random_weights_with_frozen_parts_warn_and_name_the_fix(caplog):
    with caplog.at_level("WARNING", logger="detect"):
        ResNet(18, None, frozen_stages=1, norm_eval=True)
    assert "model.backbone.frozen_stages=-1 model.backbone.norm_eval=false" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="detect"):
        ResNet(18, None, frozen_stages=-1, norm_eval=False)
    assert not caplog.text
