"""python -m detect.fetch_weights: what a config needs, listed and fetched into the caches; offline one
message and exit 1. The downloads are replaced here: no test reaches the network."""

from __future__ import annotations

import pytest

from detect.fetch_weights import main
from detect.models import weights as weights_module
from detect.models.weights import WeightFile, weights_needed
from tests.conftest import compose_train


def test_the_weights_a_config_needs_are_listed(capsys):
    cfg = compose_train(["model=faster_rcnn", "runtime.load_from=FasterRCNN_ResNet50_FPN_Weights.COCO_V1"])
    assert weights_needed(cfg) == [
        WeightFile("model.backbone.weights", "torchvision", "ResNet50_Weights.IMAGENET1K_V1"),
        WeightFile("runtime.load_from", "torchvision", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1")]
    assert weights_needed(compose_train(["model/backbone=timm"])) == [
        WeightFile("model.backbone.name", "timm", "convnext_tiny")]
    assert weights_needed(compose_train([])) == []  # the demo model: random init
    assert main(["model=cascade_rcnn_convnext_t", "--list"]) == 0
    assert capsys.readouterr().out == "model.backbone.weights=ConvNeXt_Tiny_Weights.IMAGENET1K_V1 (torchvision)\n"


def test_fetching_offline_is_one_message_and_exit_1(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)  # never the network
    assert main(["model=faster_rcnn", "runtime.load_from=FasterRCNN_ResNet50_FPN_Weights.COCO_V1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Could not load ResNet50_Weights.IMAGENET1K_V1" in err
    assert "https://download.pytorch.org/models/resnet50" in err and not list(tmp_path.rglob("*.pth"))


def test_fetching_reports_where_each_file_lies(monkeypatch, capsys):
    fetched = []
    monkeypatch.setattr(weights_module, "fetch", lambda w: fetched.append(w.name) or f"/cache/{w.name}")
    monkeypatch.setattr("detect.models.weights.fetch", weights_module.fetch)
    assert main(["model=faster_rcnn"]) == 0
    assert fetched == ["ResNet50_Weights.IMAGENET1K_V1"]
    assert "model.backbone.weights=ResNet50_Weights.IMAGENET1K_V1: /cache/ResNet50_Weights.IMAGENET1K_V1" in \
        capsys.readouterr().out


@pytest.mark.parametrize("args,code", [(["--bogus"], 2), (["model=faster_rcnnn"], 2)])
def test_a_wrong_command_line_exits_2(args, code, capsys):
    assert main(args) == code and "error:" in capsys.readouterr().err
