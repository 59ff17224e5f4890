"""ResNet-FPN backbones: frozen stages and frozen BatchNorm really hold; weight errors name the remedies."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from detect.errors import WeightsUnavailableError
from detect.models.backbones import resnet_fpn


def batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_stages_get_no_gradient_and_keep_their_statistics_in_train_mode():
    torch.manual_seed(0)
    backbone = resnet_fpn(18, None, frozen_stages=1, norm_eval=False, out_channels=32)
    body = backbone.body
    assert not batchnorms(body.layer1) and not isinstance(body.bn1, nn.BatchNorm2d)  # frozen copies
    assert batchnorms(body.layer2)  # later stages keep trainable BatchNorm
    frozen_before = {k: v.clone() for k, v in body.layer1.state_dict().items()}
    live_before = batchnorms(body.layer2)[0].running_mean.clone()

    backbone.train()
    out = backbone(torch.rand(2, 3, 64, 64))
    sum(o.sum() for o in out.values()).backward()

    assert all(p.grad is None for p in list(body.conv1.parameters()) + list(body.layer1.parameters()))
    assert all(p.grad is not None for p in body.layer2.parameters())
    assert all(torch.equal(frozen_before[k], v) for k, v in body.layer1.state_dict().items())
    assert not torch.equal(live_before, batchnorms(body.layer2)[0].running_mean)


def test_norm_eval_freezes_every_batchnorm_even_without_pretrained_weights():
    backbone = resnet_fpn(18, None, frozen_stages=-1, norm_eval=True, out_channels=32)
    assert not batchnorms(backbone)
    assert all(p.requires_grad for p in backbone.body.layer1.parameters())  # conv weights still train


def test_offline_download_names_the_cache_path_and_both_remedies(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError) as err:
        resnet_fpn(50, "ResNet50_Weights.IMAGENET1K_V1", 1, True, 256)
    message = str(err.value)
    assert "offline" in message and "resnet50-0676ba61.pth" in message
    assert "model.backbone.weights=/path/to/resnet50.pth" in message and "model.backbone.weights=null" in message


def test_weights_of_another_depth_or_a_bad_name_are_refused_clearly(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit a ResNet-18"):
        resnet_fpn(18, str(path), -1, False, 32)
    with pytest.raises(WeightsUnavailableError, match="Unknown torchvision weights name"):
        resnet_fpn(50, "ResNet50_Weights.NOPE", 1, True, 32)
