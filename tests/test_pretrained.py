"""COCO-pretrained starts from torchvision's detection weights, offline: torchvision's own Faster R-CNN,
built with random weights and detect's settings, loaded into detect's faster_rcnn through the same
key map as the real weights gives identical detections (eval) and losses (train); with another class
count the class layers are re-initialised with the right shapes; offline, one message names the URL."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from detect.engine.build import instantiate
from detect.errors import ConfigError, WeightsUnavailableError
from detect.models.pretrained import (
    COCO_WEIGHTS,
    is_torchvision_weights,
    load_mapped_state_dict,
    torchvision_state_dict,
)
from tests.conftest import compose_train

SIZE = ["data.min_size=128", "data.max_size=160", "model.backbone.weights=null"]


def detect_faster_rcnn(num_classes: int):
    cfg = compose_train(["model=faster_rcnn", *SIZE])
    return instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=num_classes,
                       _convert_="all")


def torchvision_faster_rcnn():
    """torchvision's Faster R-CNN R50-FPN as its COCO weights were trained (frozen BatchNorm, 91 classes),
    with detect's settings where detect's config differs (image size, proposals kept, RoIAlign sampling)."""
    torch.manual_seed(1)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    return FasterRCNN(backbone, num_classes=91, min_size=128, max_size=160, rpn_post_nms_top_n_train=1000,
                      box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=0))


def images_and_targets():
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 150, generator=gen), torch.rand(3, 96, 128, generator=gen)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [70.0, 10.0, 140.0, 90.0]]),
                "labels": torch.tensor([1, 5])},
               {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]]), "labels": torch.tensor([3])}]
    return images, targets


def assert_same_outputs(theirs, ours, label_offset: int = 0, loss_prefix: str = ""):
    images, targets = images_and_targets()
    theirs.eval(), ours.eval()
    with torch.no_grad():
        a, b = theirs(images), ours(images)
    for x, y in zip(a, b):
        assert len(x["boxes"]) > 0
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["scores"], y["scores"])
        assert torch.equal(x["labels"] + label_offset, y["labels"])
    theirs.train(), ours.train()
    their_targets = [{**t, "labels": t["labels"] - label_offset} for t in targets]
    torch.manual_seed(7)
    losses_a = theirs(images, their_targets)
    torch.manual_seed(7)
    losses_b = ours(images, targets)
    assert {loss_prefix + key for key in losses_a} == losses_b.keys()
    for key in losses_a:
        torch.testing.assert_close(losses_a[key], losses_b[loss_prefix + key])


def test_torchvisions_faster_rcnn_weights_give_identical_detections_and_losses():
    theirs = torchvision_faster_rcnn()
    ours = detect_faster_rcnn(num_classes=90)  # + background: torchvision's 91, so every tensor fits
    report = load_mapped_state_dict(ours, theirs.state_dict())
    assert report.reinitialised == [] and report.left_out == [] and report.not_in_weights == []
    assert len(report.loaded) == len([k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")])
    # Random weights score near 0.5 everywhere: a low threshold leaves detections to compare.
    theirs.roi_heads.score_thresh = ours.roi_heads.score_thresh = 0.0
    assert_same_outputs(theirs, ours)


def test_with_the_datas_classes_the_class_layers_start_fresh_with_their_shapes():
    ours = detect_faster_rcnn(num_classes=10)
    fresh = {k: v.clone() for k, v in ours.state_dict().items()}
    theirs = torchvision_faster_rcnn().state_dict()
    report = load_mapped_state_dict(ours, theirs)
    assert sorted(report.reinitialised) == [  # (key, shape here, shape in the weights)
        ("roi_heads.box_predictor.bbox_pred.bias", (44,), (364,)),
        ("roi_heads.box_predictor.bbox_pred.weight", (44, 1024), (364, 1024)),
        ("roi_heads.box_predictor.cls_score.bias", (11,), (91,)),
        ("roi_heads.box_predictor.cls_score.weight", (11, 1024), (91, 1024)),
    ]
    state = ours.state_dict()
    cls = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(state[cls], fresh[cls])  # the class layers keep their fresh initialisation
    for mine, torchvisions in [("backbone.body.body.layer4.2.conv3.weight", "backbone.body.layer4.2.conv3.weight"),
                               ("backbone.neck.fpn.layer_blocks.3.0.weight", "backbone.fpn.layer_blocks.3.0.weight"),
                               ("rpn.head.cls_logits.weight", "rpn.head.cls_logits.weight")]:
        assert torch.equal(state[mine], theirs[torchvisions])


def test_weights_names_are_recognised_and_offline_gives_one_message(monkeypatch, tmp_path):
    assert all(is_torchvision_weights(name) for name in COCO_WEIGHTS.values())
    assert not is_torchvision_weights("outputs/me/run/checkpoints/last.pth")
    with pytest.raises(ConfigError, match="is not a torchvision weights name"):
        torchvision_state_dict("FasterRCNN_ResNet50_FPN_Weights.COCO_V9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the file would have to be downloaded

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)  # never the network
    with pytest.raises(WeightsUnavailableError) as err:
        torchvision_state_dict(COCO_WEIGHTS["faster_rcnn"])
    text = str(err.value)
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco" in text
    assert str(tmp_path / "hub" / "checkpoints") in text and not list(tmp_path.rglob("*.pth"))


@pytest.mark.parametrize("name,fresh", [
    ("retinanet", ["backbone.neck.fpn.extra_blocks.p6.bias", "backbone.neck.fpn.extra_blocks.p6.weight",
                   "head.classification_head.cls_logits.bias", "head.classification_head.cls_logits.weight"]),
    ("fcos", ["head.classification_head.cls_logits.bias", "head.classification_head.cls_logits.weight"]),
])
def test_one_stage_models_take_every_tensor_but_the_class_logits_and_retinanets_p6(name, fresh):
    from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn

    cfg = compose_train([f"model={name}", *SIZE])
    ours = instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=10, _convert_="all")
    builder = {"retinanet": retinanet_resnet50_fpn, "fcos": fcos_resnet50_fpn}[name]
    report = load_mapped_state_dict(ours, builder(weights=None, weights_backbone=None).state_dict())
    assert sorted(key for key, _, _ in report.reinitialised) == fresh
    assert report.left_out == [] and report.not_in_weights == [] and len(report.loaded) > 290


def test_cascade_rcnn_starts_from_faster_rcnn_with_each_stage_from_its_box_head():
    from detect.models.pretrained import FASTER_RCNN_BOX_CODER_WEIGHTS, cascade_from_faster_rcnn

    cfg = compose_train(["model=cascade_rcnn", *SIZE])
    cascade = instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=10, _convert_="all")
    frcnn = torchvision_faster_rcnn().state_dict()
    coder_weights = [coder.weights for coder in cascade.roi_heads.box_coders]
    report = load_mapped_state_dict(cascade, cascade_from_faster_rcnn(frcnn, coder_weights))
    state = cascade.state_dict()
    assert report.left_out == [] and report.reinitialised == []
    classifiers = [f"roi_heads.stages.{t}.cls_score.{p}" for t in range(3) for p in ("bias", "weight")]
    assert report.not_in_weights == classifiers  # they start fresh for the data's classes
    mean_w = frcnn["roi_heads.box_predictor.bbox_pred.weight"].reshape(91, 4, -1)[1:].mean(0)
    for t, weights in enumerate(coder_weights):
        assert torch.equal(state[f"roi_heads.stages.{t}.head.fc6.weight"], frcnn["roi_heads.box_head.fc6.weight"])
        assert torch.equal(state[f"roi_heads.stages.{t}.head.fc7.bias"], frcnn["roi_heads.box_head.fc7.bias"])
        scale = torch.tensor(weights) / torch.tensor(FASTER_RCNN_BOX_CODER_WEIGHTS)
        torch.testing.assert_close(state[f"roi_heads.stages.{t}.bbox_pred.weight"], mean_w * scale[:, None])
    assert torch.equal(state["rpn.head.bbox_pred.weight"], frcnn["rpn.head.bbox_pred.weight"])
    assert torch.equal(state["backbone.body.body.conv1.weight"], frcnn["backbone.body.conv1.weight"])
    # It trains a step from there.
    images, targets = images_and_targets()
    cascade.train()
    losses = cascade(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert cascade.roi_heads.stages[2].cls_score.weight.grad is not None


def test_load_from_a_weights_name_logs_what_was_loaded_and_what_starts_fresh(monkeypatch, caplog):
    from detect.models import pretrained

    monkeypatch.setattr(pretrained, "torchvision_state_dict", lambda name: torchvision_faster_rcnn().state_dict())
    cfg = compose_train(["model=cascade_rcnn", *SIZE])
    cascade = instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=10, _convert_="all")
    with caplog.at_level("INFO", logger="detect"):
        pretrained.load_torchvision_weights(cascade, COCO_WEIGHTS["cascade_rcnn"], "cascade_rcnn")
    assert "Loaded 305 tensors of FasterRCNN_ResNet50_FPN_Weights.COCO_V1 into cascade_rcnn" in caplog.text
    assert "not in the weights, kept as initialised: roi_heads.stages.0.cls_score.bias" in caplog.text


def detect_model(name: str, num_classes: int, *extra: str):
    cfg = compose_train([f"model={name}", *SIZE, *extra])
    return instantiate("model", OmegaConf.to_container(cfg.model, resolve=True), num_classes=num_classes,
                       _convert_="all")


def torchvision_faster_rcnn_v2():
    """torchvision's fasterrcnn_resnet50_fpn_v2 as its builder makes it (BatchNorm FPN, two-conv RPN head,
    4-conv + 1-FC BatchNorm box head), with detect's frozen backbone norms and sizes."""
    from torch import nn
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.rpn import RPNHead

    torch.manual_seed(2)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, norm_layer=nn.BatchNorm2d)
    return FasterRCNN(backbone, num_classes=91, min_size=128, max_size=160, rpn_post_nms_top_n_train=1000,
                      rpn_head=RPNHead(256, 3, conv_depth=2),
                      box_head=FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d),
                      box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=0))


def torchvision_retinanet_v2(anchor_generator):
    """torchvision's retinanet_resnet50_fpn_v2 as its builder makes it (GroupNorm subnets, GIoU loss, P6
    from C5), with detect's anchors: torchvision rounds the in-between anchor sizes to whole pixels
    (40 and 50 px on P3 where detect has 40.3 and 50.8, as MMDetection)."""
    from functools import partial

    from torch import nn
    from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    torch.manual_seed(3)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(2048, 256))
    head = RetinaNetHead(256, 9, 91, norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return RetinaNet(backbone, 91, anchor_generator=anchor_generator, head=head, min_size=128, max_size=160,
                     detections_per_img=100)


def test_faster_rcnn_v2_takes_torchvisions_v2_weights_whole_and_gives_identical_outputs():
    theirs = torchvision_faster_rcnn_v2()
    ours = detect_model("faster_rcnn_v2", 90)
    report = load_mapped_state_dict(ours, theirs.state_dict())
    assert report.reinitialised == [] and report.left_out == [] and report.not_in_weights == []
    assert len(report.loaded) == 339  # 335 with 10 classes: the 4 class tensors start fresh
    theirs.roi_heads.score_thresh = ours.roi_heads.score_thresh = 0.0
    assert_same_outputs(theirs, ours)


def test_retinanet_v2_takes_torchvisions_v2_weights_whole_and_gives_identical_outputs():
    ours = detect_model("retinanet_v2", 91)
    theirs = torchvision_retinanet_v2(ours.anchor_generator)
    report = load_mapped_state_dict(ours, theirs.state_dict())
    assert report.reinitialised == [] and report.left_out == [] and report.not_in_weights == []
    assert ours.head.regression_head._loss_type == "giou"
    theirs.score_thresh = ours.score_thresh = 0.0
    # torchvision's RetinaNet scores class k where detect says label k + 1; losses named loss_<term>.
    assert_same_outputs(theirs, ours, label_offset=1, loss_prefix="loss_")


@pytest.mark.parametrize("name,extra,builder,fresh", [
    ("faster_rcnn_v2", [], "fasterrcnn_resnet50_fpn_v2", 4),  # cls_score and bbox_pred, weight and bias
    ("retinanet_v2", [], "retinanet_resnet50_fpn_v2", 2),  # cls_logits
    ("retinanet", ["model.neck.extra=p6p7_p5"], "retinanet_resnet50_fpn", 2),  # v1 with torchvision's P6 from P5
])
def test_with_the_datas_classes_only_the_class_layers_of_v2_models_start_fresh(name, extra, builder, fresh):
    import torchvision.models.detection as tvd

    ours = detect_model(name, 10, *extra)
    report = load_mapped_state_dict(ours, getattr(tvd, builder)(weights=None, weights_backbone=None).state_dict())
    assert len(report.reinitialised) == fresh and report.left_out == [] and report.not_in_weights == []
    assert all(".cls_" in key or "box_predictor" in key for key, _, _ in report.reinitialised)


def test_cascade_rcnn_v2_stages_start_from_the_v2_conv_head():
    from detect.models.pretrained import cascade_from_faster_rcnn

    cascade = detect_model("cascade_rcnn_v2", 10)
    v2 = torchvision_faster_rcnn_v2().state_dict()
    coder_weights = [c.weights for c in cascade.roi_heads.box_coders]
    report = load_mapped_state_dict(cascade, cascade_from_faster_rcnn(v2, coder_weights))
    assert report.left_out == [] and report.reinitialised == []
    classifiers = [f"roi_heads.stages.{t}.cls_score.{p}" for t in range(3) for p in ("bias", "weight")]
    assert report.not_in_weights == classifiers
    state = cascade.state_dict()
    for t in range(3):  # conv 0 of the head with its BatchNorm, and the FC layer after the 4 convs
        for key in ("0.0.weight", "0.1.running_var", "5.weight"):
            assert torch.equal(state[f"roi_heads.stages.{t}.head.{key}"], v2[f"roi_heads.box_head.{key}"])
    images, targets = images_and_targets()
    cascade.train()
    total = sum(cascade(images, targets).values())
    assert torch.isfinite(total)


@pytest.mark.parametrize("override,message", [
    ("model.roi.box_head=three_fc", "model.roi.box_head='three_fc' is not one of"),
    ("model.roi.head_norm=layer", "model.roi.head_norm='layer' is not one of"),
    ("model.neck.norm=layer", "model.neck.norm='layer' is not one of"),
])
def test_unknown_head_and_norm_choices_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        detect_model("faster_rcnn_v2", 10, override)


def test_unknown_retinanet_box_loss_names_the_key():
    with pytest.raises(ConfigError, match="model.head.box_loss='iou' is not one of"):
        detect_model("retinanet_v2", 10, "model.head.box_loss=iou")


def test_load_from_a_detect_checkpoint_of_other_classes_starts_only_the_class_layers_fresh(caplog):
    """Fine-tuning a run's weights on another data set (runtime.load_from): everything but the class
    layers comes from the checkpoint; another architecture is still refused with the classes named."""
    from detect.errors import CheckpointError
    from detect.run.checkpoints import load_model_weights

    source = detect_model("faster_rcnn_r18_demo", 10)
    trash = ["General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic", "Styrofoam", "Plastic bag",
             "Battery", "Clothing"]
    checkpoint = {"model": source.state_dict(), "classes": trash, "path": "src/checkpoints/last.pth",
                  "config": {"model": {"name": "faster_rcnn_r18_demo"}}}
    waste = ["Blood bag", "Mask", "ampoule", "syringe"]
    target = detect_model("faster_rcnn_r18_demo", 4)
    fresh = target.roi_heads.box_predictor.cls_score.weight.detach().clone()
    with caplog.at_level("INFO", logger="detect"):
        load_model_weights(target, checkpoint, "faster_rcnn_r18_demo", waste, new_classes_ok=True)
    assert "re-initialised roi_heads.box_predictor.cls_score.weight: (5, 256) here, (11, 256) in the checkpoint" \
        in caplog.text
    assert torch.equal(target.roi_heads.box_predictor.cls_score.weight, fresh)
    assert torch.equal(target.rpn.head.cls_logits.weight, source.rpn.head.cls_logits.weight)
    conv = "backbone.body.body.layer4.0.conv1.weight"
    assert torch.equal(target.state_dict()[conv], source.state_dict()[conv])

    with pytest.raises(CheckpointError, match="do not fit this model"):  # resume (no new classes allowed)
        load_model_weights(detect_model("faster_rcnn_r18_demo", 4), checkpoint, "faster_rcnn_r18_demo", waste)
    other = detect_model("faster_rcnn_r18_demo", 4, "model.rpn.conv_depth=2")
    with pytest.raises(CheckpointError, match=r"keys only this model has: rpn.head.conv.1.0"):
        load_model_weights(other, checkpoint, "faster_rcnn_r18_demo", waste, new_classes_ok=True)
