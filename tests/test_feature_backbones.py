"""Modern backbones (offline, random weights): a timm model and torchvision's ConvNeXt / Swin / RegNet /
EfficientNetV2 give C2-C5 with measured channels and strides, feed FPN and BiFPN, freeze what they are
told, and a detector built on them trains a step on demo images."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from detect.engine.build import instantiate
from detect.errors import ConfigError
from detect.models.feature_backbones import TimmBackbone, TorchvisionBackbone
from tests.conftest import TINY, compose_train

pytest.importorskip("timm", reason="timm is a dependency (pip install -e .)")


@pytest.mark.parametrize("make,channels", [
    (lambda: TimmBackbone("convnext_atto", pretrained=False), [40, 80, 160, 320]),
    (lambda: TimmBackbone("resnet18d", pretrained=False), [64, 128, 256, 512]),
    (lambda: TorchvisionBackbone("convnext_tiny"), [96, 192, 384, 768]),
    (lambda: TorchvisionBackbone("swin_t"), [96, 192, 384, 768]),
    (lambda: TorchvisionBackbone("regnet_y_400mf"), [48, 104, 208, 440]),
    (lambda: TorchvisionBackbone("efficientnet_v2_s"), [48, 64, 160, 256]),
])
def test_each_family_gives_c2_to_c5(make, channels):
    backbone = make()
    assert backbone.out_channels == channels and backbone.strides == [4, 8, 16, 32]
    feats = backbone(torch.rand(1, 3, 96, 128))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(c, 96 // s, 128 // s) for c, s in zip(channels,
                                                                                                  [4, 8, 16, 32])]


def test_frozen_stages_freeze_the_stem_and_the_first_levels():
    stem_only = TorchvisionBackbone("convnext_tiny", frozen_stages=0)
    frozen = {n for n, p in stem_only.body.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("features.0.") for n in frozen)
    two = TorchvisionBackbone("convnext_tiny", frozen_stages=2)
    frozen = {n.split(".")[1] for n, p in two.body.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1", "2", "3"}  # stem, level 1 (features.1), downsample, level 2 (features.3)
    timm_frozen = TimmBackbone("resnet18d", pretrained=False, frozen_stages=1)
    assert not any(p.requires_grad for n, p in timm_frozen.body.named_parameters() if n.startswith(("conv1", "layer1")))
    assert all(p.requires_grad for n, p in timm_frozen.body.named_parameters() if n.startswith("layer2"))
    with pytest.raises(ConfigError, match="frozen_stages=5"):
        TorchvisionBackbone("convnext_tiny", frozen_stages=5)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="is not a timm model; close: convnext"):
        TimmBackbone("convnext_tinyy", pretrained=False)
    with pytest.raises(ConfigError, match="use a torchvision ConvNeXt, Swin, RegNet or EfficientNetV2"):
        TorchvisionBackbone("resnet50")


@pytest.mark.parametrize("backbone,neck", [
    (["model/backbone=timm", "model.backbone.name=convnext_atto", "model.backbone.pretrained=false"], "fpn"),
    (["model/backbone=convnext_tiny", "model.backbone.weights=null"], "bifpn"),
])
def test_a_detector_on_a_modern_backbone_trains_a_step_on_demo_images(tiny_demo_root, backbone, neck):
    from detect.data.build import build_dataset

    cfg = compose_train(["model=faster_rcnn", *backbone, f"model/neck={neck}", f"data.root={tiny_demo_root}", *TINY])
    data = build_dataset(cfg.data, "train", train=True)
    model = instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=len(data.classes),
                        _convert_="all")
    images, targets = zip(*(data[(i, 0)] for i in range(2)))
    model.train()
    losses = model(list(images), list(targets))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.body.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_the_convnext_cascade_config_composes_with_its_backbone():
    cfg = compose_train(["model=cascade_rcnn_convnext_t"])
    assert cfg.model.name == "cascade_rcnn_convnext_t" and cfg.model.backbone.name == "convnext_tiny"
    assert cfg.model._target_ == "detect.models.cascade_rcnn.build_cascade_rcnn"


def test_pretrained_timm_weights_offline_give_one_message_naming_the_hub_id(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    # HF_HUB_OFFLINE: the hub library never reaches the network; an empty HF_HOME: nothing cached.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    code = ("from detect.models.feature_backbones import TimmBackbone\n"
            "from detect.errors import WeightsUnavailableError\n"
            "try:\n    TimmBackbone('convnext_atto', pretrained=True)\n"
            "except WeightsUnavailableError as err:\n    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "Could not load the pretrained weights of timm model convnext_atto" in proc.stdout, proc.stderr[-2000:]
    assert "timm/convnext_atto" in proc.stdout and str(tmp_path / "hf") in proc.stdout
    assert "model.backbone.pretrained=false" in proc.stdout
