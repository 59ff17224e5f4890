"""The model zoo as a user composes it: every model builds from its config, inherits by changing one
thing, takes classes and image size from the data, and swaps backbones and necks from the command line."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_train
from tests.test_config import options

# Small enough to build and run one step of every model in seconds; the structure stays the config's.
SMALL = ["data=demo", "model.backbone.weights=null", "data.min_size=64", "data.max_size=96"]
IMAGES = [torch.rand(3, 64, 80), torch.rand(3, 96, 64)]
TARGETS = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 70.0, 60.0]]), "labels": torch.tensor([1, 10])},
           {"boxes": torch.tensor([[10.0, 20.0, 50.0, 90.0]]), "labels": torch.tensor([4])}]


# transformers detectors (tests/test_hf_detr.py): their own input size, and COCO weights from the hub by default.
HF_MODELS = {"rtdetr_v2_r18", "rtdetr_v2_r50", "dfine_s", "dfine_m", "rf_detr_base", "deformable_detr"}
TORCHVISION_MODELS = [m for m in options("model") if m not in HF_MODELS]


def model_container(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_train(["data=demo", *overrides]).model, resolve=True)


@pytest.mark.parametrize("model", [m for m in TORCHVISION_MODELS if m != "cascade_rcnn_r101"])
def test_every_model_trains_a_step_and_predicts_in_torchvisions_format(model):
    cfg = compose_train([f"model={model}", *SMALL])
    torch.manual_seed(0)
    detector = instantiate(cfg.model, num_classes=10, _convert_="all")
    detector.train()
    losses = detector(IMAGES, TARGETS)
    assert losses and all(k.startswith("loss_") and torch.isfinite(v) for k, v in losses.items())
    sum(losses.values()).backward()
    detector.eval()
    with torch.no_grad():
        detections = detector(IMAGES)
    for det, image in zip(detections, IMAGES):
        assert set(det) == {"boxes", "labels", "scores"} and det["boxes"].shape[1:] == (4,)
        assert len(det["boxes"]) <= 100
        if len(det["labels"]):
            assert 1 <= det["labels"].min() and det["labels"].max() <= 10
            assert det["boxes"][:, 2].max() <= image.shape[2] and det["boxes"][:, 3].max() <= image.shape[1]


def test_every_model_takes_its_image_size_and_normalization_from_the_data():
    for model in [*TORCHVISION_MODELS, "deformable_detr"]:  # RT-DETR, D-FINE and RF-DETR stretch to their own square
        m = compose_train([f"model={model}", "data=trash"]).model
        assert (m.min_size, m.max_size, m.size_divisible, list(m.image_std)) == (1024, 1024, 32, [0.229, 0.224, 0.225])


def test_cascade_r101_is_cascade_with_a_deeper_backbone_and_nothing_else():
    base, deep = model_container("model=cascade_rcnn"), model_container("model=cascade_rcnn_r101")
    assert deep["backbone"].pop("depth") == 101 and base["backbone"].pop("depth") == 50
    assert deep["backbone"].pop("weights") == "ResNet101_Weights.IMAGENET1K_V1"
    base["backbone"].pop("weights")
    assert (deep.pop("name"), base.pop("name")) == ("cascade_rcnn_r101", "cascade_rcnn")
    assert deep == base


def test_cascade_has_mmdetections_stage_settings_and_rpn():
    m = model_container("model=cascade_rcnn")
    assert m["stages"]["iou_thresholds"] == [0.5, 0.6, 0.7]
    assert m["stages"]["box_coder_weights"] == [[10, 10, 5, 5], [20, 20, 10, 10], [30, 30, 15, 15]]
    assert m["stages"]["loss_weights"] == [1.0, 0.5, 0.25]
    assert (m["rpn"]["anchor_scale"], m["rpn"]["anchor_ratios"], m["rpn"]["nms_thresh"]) == (8, [0.5, 1.0, 2.0], 0.7)
    assert [m["rpn"][k] for k in ("pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test",
                                  "post_nms_top_n_test")] == [2000, 2000, 1000, 1000]
    assert [m["roi"][k] for k in ("batch_size_per_image", "positive_fraction", "score_thresh", "nms_thresh",
                                  "detections_per_img")] == [512, 0.25, 0.05, 0.5, 100]
    assert m["backbone"]["frozen_stages"] == 1 and m["backbone"]["norm_eval"] is True


def test_a_members_variant_inherits_the_shared_config_and_changes_only_the_neck():
    base, variant = model_container("model=cascade_rcnn"), model_container("model=member_a/cascade_bifpn")
    assert variant.pop("neck")["_target_"] == "detect.models.necks.BiFPN"
    base.pop("neck")
    assert (variant.pop("name"), base.pop("name")) == ("cascade_bifpn", "cascade_rcnn")
    assert variant == base


def test_backbone_and_neck_are_swapped_from_the_command_line():
    m = model_container("model=faster_rcnn", "model/backbone=resnext101_32x8d", "model/neck=bifpn")
    assert (m["backbone"]["depth"], m["backbone"]["groups"], m["backbone"]["width_per_group"]) == (101, 32, 8)
    assert m["neck"]["_target_"] == "detect.models.necks.BiFPN"
    assert sorted(p.stem for p in (CONF / "model" / "backbone").glob("*.yaml")) == [
        "convnext_tiny", "efficientnet_v2_s", "regnet_y_800mf", "resnet101", "resnet18", "resnet50",
        "resnext101_32x8d", "swin_t", "timm"]
