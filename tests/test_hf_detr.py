"""transformers detectors (RT-DETRv2, D-FINE, RF-DETR, Deformable DETR) under detect's model contract
(detect/models/hf_detr.py): boxes in and out in original pixels, labels 1..C, the library's losses summed
as it weights them, checkpoints, COCO-weight loading with re-sized class layers, and one clear message
when the weights cannot be had. Offline throughout: `model.pretrained=null`, or a local folder."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from detect.errors import ConfigError, WeightsUnavailableError
from detect.models.hf_detr import (
    HFDetector,
    build_hf_detector,
    hf_image_transform,
    loss_group,
    normalized_cxcywh_to_xyxy,
    xyxy_to_normalized_cxcywh,
)
from tests.conftest import compose_train, run_cli, tiny_train_args

pytest.importorskip("transformers")

# Each shipped config, made tiny where its size is a key (queries, decoder layers, input size); the backbone
# and the rest stay as configured, so the test builds the architecture a user gets.
TINY = {
    "rtdetr_v2_r18": ["model.architecture.decoder_layers=2", "+model.architecture.num_queries=30",
                      "+model.architecture.num_denoising=10", "model.min_size=128"],
    "rtdetr_v2_r50": ["+model.architecture.decoder_layers=2", "+model.architecture.num_queries=30",
                      "+model.architecture.num_denoising=10", "model.min_size=128"],
    "dfine_s": ["model.architecture.decoder_layers=2", "+model.architecture.num_queries=30",
                "+model.architecture.num_denoising=10", "model.min_size=128"],
    "dfine_m": ["model.architecture.decoder_layers=2", "+model.architecture.num_queries=30",
                "+model.architecture.num_denoising=10", "model.min_size=128"],
    "rf_detr_base": ["+model.architecture.decoder_layers=2", "+model.architecture.num_queries=30",
                     "+model.architecture.group_detr=2", "model.min_size=112"],
    "deformable_detr": ["+model.architecture.decoder_layers=2", "+model.architecture.encoder_layers=1",
                        "+model.architecture.num_queries=30", "data.min_size=96", "data.max_size=128"],
}
IMAGES = [torch.rand(3, 90, 150), torch.rand(3, 120, 80)]  # non-square, different sizes
TARGETS = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [100.0, 5.0, 149.0, 40.0]]),
            "labels": torch.tensor([1, 4])},
           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


def tiny_model(name: str, num_classes: int = 4) -> HFDetector:
    cfg = compose_train([f"model={name}", "data=demo", "model.pretrained=null", *TINY[name]])
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=num_classes, _convert_="all")


def test_box_conversion_is_exact_both_ways():
    # Pixel values whose fractions of 256 x 128 are binary fractions: float32 holds every step exactly.
    boxes = torch.tensor([[0.0, 0.0, 256.0, 128.0], [64.0, 32.0, 192.0, 96.0], [32.0, 16.0, 96.0, 80.0]])
    normalized = xyxy_to_normalized_cxcywh(boxes, height=128, width=256)
    assert normalized.tolist() == [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.25, 0.375, 0.25, 0.5]]
    assert torch.equal(normalized_cxcywh_to_xyxy(normalized, height=128, width=256), boxes)


def test_loss_terms_group_into_the_last_layer_aux_and_denoising():
    assert [loss_group(k) for k in ("loss_vfl", "loss_bbox_aux_3", "loss_giou_dn_0", "loss_fgl_pre", "loss_ce_enc",
                                    "loss_ce_2", "loss_ddf_dn_pre")] == \
        ["loss_vfl", "loss_aux", "loss_dn", "loss_aux", "loss_aux", "loss_aux", "loss_dn"]


class Oracle(nn.Module):
    """A stand-in for a transformers model that 'predicts' given normalised boxes with score ~1 for a class."""

    def __init__(self, model_type: str, boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int):
        super().__init__()
        self.config = type("Config", (), {"model_type": model_type})()
        self.boxes, self.labels, self.num_classes = boxes, labels, num_classes
        self.seen_mask = None

    def forward(self, pixel_values, pixel_mask=None, labels=None):
        self.seen_mask = pixel_mask
        queries = 5
        logits = torch.full((len(self.boxes), queries, self.num_classes), -10.0)
        pred = torch.full((len(self.boxes), queries, 4), 0.5)
        for i, (boxes, labels_) in enumerate(zip(self.boxes, self.labels)):
            logits[i, torch.arange(len(boxes)), labels_ - 1] = 10.0
            pred[i, :len(boxes)] = boxes
        return type("Out", (), {"logits": logits, "pred_boxes": pred})()


@pytest.mark.parametrize("model_type, resize", [("rt_detr_v2", "square"), ("deformable_detr", "keep_ratio")])
def test_an_identity_prediction_maps_back_to_the_input_boxes_in_original_pixels(model_type, resize):
    """Boxes the model places exactly on the objects come back as the objects' original pixel boxes, for
    non-square images of different sizes in one (padded) batch."""
    transform = hf_image_transform(resize, 96, 128, [0.0] * 3, [1.0] * 3, 32).eval()
    batch, _ = transform(IMAGES)
    wanted = [TARGETS[0]["boxes"], torch.tensor([[5.0, 10.0, 70.0, 110.0]])]
    labels = [torch.tensor([1, 4]), torch.tensor([3])]
    # What the library would predict: the resized boxes as fractions of the frame it sees.
    pixel_mask = model_type == "deformable_detr"
    normalized = []
    for boxes, size, image in zip(wanted, batch.image_sizes, IMAGES):
        resized = boxes * torch.tensor([size[1] / image.shape[2], size[0] / image.shape[1]] * 2)
        frame = size if pixel_mask else batch.tensors.shape[-2:]
        normalized.append(xyxy_to_normalized_cxcywh(resized, *frame))
    model = HFDetector(Oracle(model_type, normalized, labels, 4), transform, 4, score_thresh=0.5,
                       topk_candidates=20, detections_per_img=10).eval()
    detections = model(IMAGES)
    for det, boxes, labels_ in zip(detections, wanted, labels):
        order = det["labels"].argsort()  # equal scores: any order
        assert det["labels"][order].tolist() == labels_.tolist()
        assert torch.allclose(det["boxes"][order], boxes, atol=1e-3)
    if pixel_mask:  # the padding of the smaller image is masked out, its own area is not
        mask = model.detector.seen_mask
        size = batch.image_sizes[0]
        assert mask[0, :size[0], :size[1]].all() and mask[0].sum() == size[0] * size[1]
    else:
        assert model.detector.seen_mask is None


# The larger builds (R50, HGNetV2-B2, DINOv2) take ~10 s each on 2 cores: in the slow run.
CONFIGS = [pytest.param(name, marks=pytest.mark.slow) if name in ("rtdetr_v2_r50", "dfine_m", "rf_detr_base")
           else name for name in TINY]


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_trains_a_step_predicts_in_original_pixels_and_round_trips_a_checkpoint(name, tmp_path):
    model = tiny_model(name)
    model.train()
    losses = model(IMAGES, TARGETS)
    assert losses and all(k.startswith("loss_") and torch.isfinite(v) for k, v in losses.items())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # DistributedDataParallel needs to know when a step leaves parameters without gradients.
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert bool(unused) == model.has_unused_parameters, unused[:5]
    model.eval()
    with torch.no_grad():
        detections = model(IMAGES)
    for det, image in zip(detections, IMAGES):
        assert set(det) == {"boxes", "labels", "scores"} and 0 < len(det["boxes"]) <= 100
        assert 1 <= det["labels"].min() and det["labels"].max() <= 4
        assert det["boxes"][:, 0::2].max() <= image.shape[2] and det["boxes"][:, 1::2].max() <= image.shape[1]
        assert det["boxes"][:, 2].max() > image.shape[2] * 0.3  # spread over the original, not the resized image
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    again = tiny_model(name)
    again.load_state_dict(torch.load(tmp_path / "weights.pth"))
    with torch.no_grad():
        assert torch.equal(again.eval()(IMAGES)[0]["boxes"], detections[0]["boxes"])


@pytest.mark.parametrize("name", ["rtdetr_v2_r18", "deformable_detr", "rf_detr_base"])
def test_the_loss_terms_sum_to_the_librarys_own_total(name):
    """RT-DETR weights its loss_dict itself, Deformable DETR and RF-DETR weight theirs in the total only:
    either way the logged terms add up to what the library optimises."""
    model = tiny_model(name).train()
    batch, targets = model.transform(IMAGES, TARGETS)
    frames = model.box_frames(batch.image_sizes, batch.tensors.shape[-2:])
    labels = [{"class_labels": t["labels"] - 1, "boxes": xyxy_to_normalized_cxcywh(t["boxes"], *f)}
              for t, f in zip(targets, frames)]
    mask = model.pixel_mask(batch.image_sizes, batch.tensors) if model.family.pixel_mask else None
    torch.manual_seed(1)  # the denoising queries are random
    out = model.detector(pixel_values=batch.tensors, pixel_mask=mask, labels=labels)
    terms = model.loss_terms(out.loss_dict)
    assert torch.allclose(sum(terms.values()), out.loss, rtol=1e-5)


def test_coco_weights_from_a_local_folder_load_with_the_class_layers_resized(tmp_path, caplog):
    """The path `pretrained: <hub id>` takes, offline: a saved 80-class model loads for 4 classes; every tensor
    but the class layers equals the saved one."""
    coco = tiny_model("rtdetr_v2_r18", num_classes=80)
    coco.detector.save_pretrained(tmp_path / "coco")
    cfg = compose_train(["model=rtdetr_v2_r18", "data=demo", f"model.pretrained={tmp_path / 'coco'}",
                         *TINY["rtdetr_v2_r18"]])
    with caplog.at_level("INFO", logger="detect"):
        model = instantiate(cfg.model, num_classes=4, _convert_="all")
    assert "class layers re-sized for 4 classes" in caplog.text
    saved, loaded = coco.detector.state_dict(), model.detector.state_dict()
    resized = [k for k in loaded if loaded[k].shape != saved[k].shape]
    assert resized and all("class_embed" in k or "enc_score_head" in k for k in resized)
    same = [k for k in loaded if k not in resized]
    assert len(same) > 100 and all(torch.equal(loaded[k], saved[k]) for k in same)


def test_weights_that_cannot_be_had_give_one_message_naming_the_hub_id_and_the_ways_out(monkeypatch):
    from transformers import AutoModelForObjectDetection

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(AutoModelForObjectDetection, "from_pretrained", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        build_hf_detector(4, "PekingU/rtdetr_v2_r18vd", {}, "square", 640, 640, [0] * 3, [1] * 3, 32, 0.01, 300, 100)
    message = str(err.value)
    for part in ("model.pretrained=PekingU/rtdetr_v2_r18vd", "HF_HUB_OFFLINE", "detect.fetch_weights", "local folder",
                 "model.pretrained=null", "huggingface"):
        assert part in message


def test_bad_architecture_and_resize_name_the_key():
    with pytest.raises(ConfigError, match="model.architecture.model_type='detr_x'"):
        build_hf_detector(4, None, {"model_type": "detr_x"}, "square", 64, 64, [0] * 3, [1] * 3, 32, 0.01, 300, 100)
    with pytest.raises(ConfigError, match="model.architecture of rt .*not a valid transformers config"):
        build_hf_detector(4, None, {"model_type": "rt_detr_v2", "decoder_layers": "three"}, "square", 64, 64,
                          [0] * 3, [1] * 3, 32, 0.01, 300, 100, name="rt")
    with pytest.raises(ConfigError, match="model.resize='stretch'"):
        hf_image_transform("stretch", 64, 64, [0] * 3, [1] * 3, 32)


def test_the_backbone_lr_multiplier_reaches_the_transformers_backbone():
    from detect.engine.build import parameter_groups

    model = tiny_model("rtdetr_v2_r18")
    groups = parameter_groups(model, 1e-4, 1e-4, {"backbone_lr_mult": 0.1})
    backbone = {id(p) for name, p in model.named_parameters() if name.startswith("detector.model.backbone.")}
    slow = [g for g in groups if g["lr"] == pytest.approx(1e-5)]
    assert len(slow) == 1 and {id(p) for p in slow[0]["params"]} == backbone and backbone


def test_fetch_weights_lists_the_hub_id(capsys):
    from detect.fetch_weights import main

    assert main(["model=dfine_s", "--list"]) == 0
    assert "model.pretrained=ustc-community/dfine-small-coco (hf)" in capsys.readouterr().out


def test_a_tiny_rtdetr_run_trains_evaluates_and_resumes_through_the_cli(tiny_demo_root, tmp_path):
    """The whole contract in a real run: classwise evaluation, the best checkpoint, EMA, and a resume."""
    run_dir = tmp_path / "run"
    args = tiny_train_args(tiny_demo_root, run_dir, "model=rtdetr_v2_r18", "model.pretrained=null",
                           *TINY["rtdetr_v2_r18"], "schedule.epochs=1", "runtime.max_iters_per_epoch=2")
    done = run_cli(args)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert "loss_vfl=" in log and "loss_dn=" in log and "(EMA weights" in log and "Battery" in log
    assert (run_dir / "checkpoints" / "last.pth").is_file()
    longer = run_cli([*args[:-2], "schedule.epochs=2", "runtime.max_iters_per_epoch=2",
                      f"runtime.resume_from={run_dir}"])
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "epoch 2 [2/2]" in (run_dir / "train.log").read_text()
    # detect.test takes the run as any other: its score threshold and TTA at the model's own square sizes.
    from tests.test_test_cli import run_test_cli

    tested = run_test_cli([f"run={run_dir}", "mode=eval", "tta=true", "score_threshold=0.2", "workers=0"])
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert "TTA: scales [96, 128, 160]" in tested.stderr + tested.stdout


@pytest.mark.slow
def test_a_small_rtdetr_learns_four_demo_images(tmp_path):
    """From random init, a 3-layer RT-DETRv2 R18 at 128 px fits 4 demo images in 100 epochs (200 steps):
    mAP50 on those images >= 0.8 (0.86 measured). A few minutes on 2 cores."""
    import json

    from detect.data.demo import ensure_demo_data

    root = tmp_path / "demo"
    ensure_demo_data(root, seed=0, num_train=4, num_val=4, min_px=96, max_px=128)
    run_dir = tmp_path / "run"
    done = run_cli([f"data.root={root}", f"hydra.run.dir={run_dir}", "data.val_ann=train.json",
                    "data.demo.num_train=4", "data.demo.num_val=4", "data.demo.min_px=96", "data.demo.max_px=128",
                    "data.batch_size=4", "runtime.workers=0", "model=rtdetr_v2_r18", "model.pretrained=null",
                    "model.min_size=128", "model.architecture.decoder_layers=3", "+model.architecture.num_queries=30",
                    "+model.architecture.num_denoising=20", "schedule.epochs=100", "schedule.warmup_iters=10",
                    "schedule.lr=1e-3", "schedule.ema.enable=false", "runtime.eval_interval=100",
                    "runtime.checkpoint_interval=100"], timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["best_score"] >= 0.8


def test_an_input_too_small_for_the_queries_says_what_to_change():
    model = tiny_model("rf_detr_base").eval()
    model.transform.min_size = (56,)  # 4 x 4 patches for 30 queries
    with pytest.raises(ConfigError, match="fewer feature positions than the model's 30 queries.*model.min_size"):
        with torch.no_grad():
            model(IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rtdetr_v2_r18", "rf_detr_base"])
def test_two_processes_train_a_detr_with_gloo(name, tiny_demo_root, tmp_path):
    """DistributedDataParallel over a transformers detector; RF-DETR leaves DINOv2 layers without gradients,
    which DDP must be told to look for (HFDetector.has_unused_parameters)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "OMP_NUM_THREADS": "1"}
    size = "model.min_size=112" if name == "rf_detr_base" else "model.min_size=128"
    args = tiny_train_args(tiny_demo_root, tmp_path / "run", f"model={name}", "model.pretrained=null",
                           *[a for a in TINY[name] if not a.startswith("model.min_size")], size, "data.batch_size=1",
                           "schedule.epochs=1", "runtime.max_iters_per_epoch=2", "runtime.threads=1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "detect.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 processes" in (tmp_path / "run" / "train.log").read_text()
