"""The GPU speed switches of issue 22 on their CPU paths (CI has no GPU): data.pad_to, runtime.compile,
runtime.fused_optimizer, loader workers / prefetch / evaluation batch, the loader wait and peak memory
in the log, box regression in fp32 under autocast. GPU runs carry the gpu marker and skip without one."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from detect.config.check import find_problems
from detect.engine import distributed
from detect.engine.build import build_model, eval_batch_size, fused_step, loader_workers, scale_lr
from detect.engine.compile import compile_errors, compile_model, compiled_part_names
from detect.engine.fit import load_optimizer_state
from detect.engine.gpu_settings import Fp32Linear, box_regression_in_fp32
from detect.errors import ConfigError
from detect.models.parts import set_pad_to
from tests.conftest import TINY, compose_train, run_cli, tiny_train_args

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
CPU = torch.device("cpu")


def demo_model(*overrides: str, classes: int = 3) -> torch.nn.Module:
    cfg = compose_train(["data=demo", "data.min_size=128", "data.max_size=128", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, classes, CPU)


# ------------------------------------------------------------------------------------------ data.pad_to
def test_pad_to_gives_every_batch_one_shape_and_keeps_the_images_and_boxes():
    model = demo_model("data.pad_to=160").train()
    padded = model.transform
    plain = demo_model().transform.train()
    assert padded.pad_to == (160, 160)
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 100)]
    boxes = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
             {"boxes": torch.tensor([[0.0, 0.0, 99.0, 127.0]]), "labels": torch.tensor([2])}]
    for batch in (images, images[:1], images[1:]):
        out, targets = padded(batch, boxes[:len(batch)])
        ref, ref_targets = plain(batch, boxes[:len(batch)])
        assert out.tensors.shape[-2:] == (160, 160)  # whatever the batch holds
        assert out.image_sizes == ref.image_sizes  # the images' own sizes: detections map back unchanged
        for size, a, b in zip(out.image_sizes, out.tensors, ref.tensors):
            assert torch.equal(a[:, :size[0], :size[1]], b[:, :size[0], :size[1]])
            assert a[:, size[0]:, :].abs().sum() == 0 and a[:, :, size[1]:].abs().sum() == 0
        for t, r in zip(targets, ref_targets):
            assert torch.equal(t["boxes"], r["boxes"])
    # Evaluation pads as detect.test does (the batch's largest image): training's scores are detect.test's.
    padded.eval(), plain.eval()
    assert torch.equal(padded(images)[0].tensors, plain(images)[0].tensors)


def test_pad_to_is_refused_for_models_that_resize_to_one_square():
    from detect.models.hf_detr import SquareImageTransform

    holder = torch.nn.Module()
    holder.transform = SquareImageTransform(640, 640, [0.0] * 3, [1.0] * 3, size_divisible=32)
    with pytest.raises(ConfigError, match="resizes every image to one square already"):
        set_pad_to(holder, 1024)


def test_pad_to_detections_stay_inside_the_original_images():
    model = demo_model("data.pad_to=[128,160]").eval()
    images = [torch.rand(3, 90, 120), torch.rand(3, 128, 80)]
    with torch.no_grad():
        outputs = model(images)
    for image, out in zip(images, outputs):
        boxes = out["boxes"]
        assert (boxes[:, 2] <= image.shape[-1]).all() and (boxes[:, 3] <= image.shape[-2]).all()


def test_pad_to_smaller_than_an_image_or_off_the_divisor_is_named():
    model = demo_model("data.pad_to=96")
    with pytest.raises(ConfigError, match=r"data.pad_to=\[96, 96\] \(height, width\) is smaller than a resized "
                                          r"training image.*data.pad_to=128 fits"):
        target = {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([1])}
        model.train()([torch.rand(3, 128, 128)], [target])
    with pytest.raises(ConfigError, match=r"data.pad_to=100 must be a multiple of the model's size_divisible \(32"):
        set_pad_to(model, 100)
    with pytest.raises(ConfigError, match="data.pad_to=.*one size in pixels"):
        set_pad_to(model, [128, 128, 3])


# --------------------------------------------------------------------------------------- runtime.compile
def test_compile_marks_backbone_and_heads_and_keeps_parameter_names(caplog):
    model = demo_model()
    names_before = list(model.state_dict())
    with caplog.at_level(logging.INFO, logger="detect"):
        compiled = compile_model(model, True, CPU)
    assert compiled == ["backbone", "rpn.head", "roi_heads.box_head"]
    assert list(model.state_dict()) == names_before  # checkpoints, EMA and load_from see the same keys
    assert "torch.compile (mode default) of backbone, rpn.head, roi_heads.box_head" in caplog.text
    assert "without data.pad_to: each new batch shape compiles the backbone again" in caplog.text
    cascade = demo_model("model=cascade_rcnn_r18_demo")
    assert compiled_part_names(cascade)[-3:] == [f"roi_heads.stages.{i}.head" for i in range(3)]
    assert compile_model(demo_model(), False, CPU) == []
    with pytest.raises(ConfigError, match="runtime.compile=fast is not a setting"):
        compile_model(model, "fast", CPU)


def test_a_compiler_failure_is_one_message_that_names_runtime_compile():
    import torch._dynamo.exc

    with pytest.raises(ConfigError, match="runtime.compile: torch.compile could not compile model faster_rcnn.*"
                                          "runtime.compile=false"):
        with compile_errors("faster_rcnn"):
            raise torch._dynamo.exc.TorchRuntimeError("an operator has no lowering")
    with pytest.raises(ValueError):  # anything else passes through
        with compile_errors("faster_rcnn"):
            raise ValueError("not the compiler")


@pytest.mark.slow  # the first compiled step compiles the backbone and heads: about 1.5 min on 2 cores
def test_a_compiled_run_with_a_fixed_batch_shape_trains_and_evaluates(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.max_iters_per_epoch=3",
                                   "runtime.compile=true", "data.pad_to=128", "runtime.profile.enabled=false"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "runtime.compile: torch.compile (mode default) of backbone, rpn.head, roi_heads.box_head" in log
    assert "data.pad_to: every batch padded to 128x128" in log
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["mode"] == "train"] == [1, 2, 3]
    assert any(r["mode"] == "val" and r["bbox_mAP_50"] >= 0 for r in records)


# ------------------------------------------------------------------------------- runtime.fused_optimizer
def test_fused_optimizer_on_cuda_only_and_said_when_it_cannot_apply(caplog):
    adamw = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.001})
    import hydra

    make = hydra.utils.instantiate(adamw)
    cuda = torch.device("cuda")  # only the device's type is read: no GPU needed
    assert fused_step(make, "auto", cuda) == {"fused": True}
    assert fused_step(make, False, cuda) == {}
    with caplog.at_level(logging.INFO, logger="detect"):
        assert fused_step(make, "auto", CPU) == {}
        assert fused_step(make, True, CPU) == {}
        rmsprop = hydra.utils.instantiate(OmegaConf.create({"_target_": "torch.optim.RMSprop", "_partial_": True}))
        assert fused_step(rmsprop, True, cuda) == {}
    assert "runtime.fused_optimizer=true ignored on cpu: AdamW steps with torch's default implementation" in caplog.text
    assert "runtime.fused_optimizer=true ignored: RMSprop has no fused step" in caplog.text
    with pytest.raises(ConfigError, match="runtime.fused_optimizer=yes must be auto, true or false"):
        fused_step(make, "yes", cuda)
    # schedule.optimizer.fused set in the config stands
    assert fused_step(hydra.utils.instantiate(OmegaConf.create({**adamw, "fused": False})), "auto", cuda) == {}


def test_a_checkpoint_without_the_fused_step_resumes_with_it():
    """The fused step needs each step count on its parameter's device, the others on the CPU (a meta
    parameter stands in for a GPU's: only the placement is checked)."""
    weight = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones(3)
    plain.step()
    fused = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3, device="meta"))], lr=0.1, fused=True)
    load_optimizer_state(fused, plain.state_dict())
    param = fused.param_groups[0]["params"][0]
    assert fused.param_groups[0]["fused"] and fused.state[param]["step"].device.type == "meta"


def test_a_checkpoint_of_a_fused_optimizer_resumes_with_this_machines_step():
    weight = torch.nn.Parameter(torch.ones(3))
    saved = torch.optim.AdamW([weight], lr=0.1)
    saved.param_groups[0]["fused"] = True  # as written by a run on a GPU
    here = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    load_optimizer_state(here, saved.state_dict())
    assert not here.param_groups[0]["fused"]
    here.param_groups[0]["params"][0].grad = torch.ones(3)
    here.step()  # a CPU step, not the fused kernel


# -------------------------------------------------------------------------- loaders, evaluation batch, lr
def test_workers_and_evaluation_batch_follow_the_device(monkeypatch, caplog):
    one = distributed.SINGLE_PROCESS
    assert loader_workers("auto", CPU, one) == 2 and loader_workers(0, CPU, one) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with caplog.at_level(logging.INFO, logger="detect"):
        assert loader_workers("auto", torch.device("cuda"), one) == 8  # 15 cores free, at most 8
    assert "runtime.workers=auto: 8 loader workers per process (16 CPUs here" in caplog.text
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers("auto", torch.device("cuda"), one) == 3  # 16 cores shared by 4 processes
    with pytest.raises(ConfigError, match="runtime.workers=many must be auto or a whole number >= 0"):
        loader_workers("many", CPU, one)
    assert eval_batch_size("auto", 4, CPU) == 4 and eval_batch_size("auto", 4, torch.device("cuda")) == 8
    assert eval_batch_size(16, 4, CPU) == 16
    with pytest.raises(ConfigError, match="runtime.eval_batch_size=0 must be auto or a whole number >= 1"):
        eval_batch_size(0, 4, CPU)


def test_the_config_check_knows_the_new_keys():
    assert find_problems(["runtime.compile=max-autotune", "runtime.fused_optimizer=true", "runtime.workers=auto",
                          "runtime.eval_batch_size=8", "runtime.prefetch_factor=4", "data.pad_to=[1024,1024]"],
                         "train") == []
    [problem] = find_problems(["runtime.workers=lots"], "train")
    assert "runtime.workers='lots' must be auto or a whole number >= 0 (e.g. runtime.workers=8)" in problem
    [problem] = find_problems(["runtime.compile=fast"], "train")
    assert "runtime.compile" in problem and "max-autotune" in problem


def test_batch_16_on_one_process_keeps_the_8x2_recipe_with_auto_scale_lr():
    cfg = compose_train(["schedule=1x", "data=demo", "data.batch_size=16", "schedule.auto_scale_lr.enable=true"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=float(cfg.schedule.lr))
    scale_lr(cfg, optimizer, distributed.SINGLE_PROCESS)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(float(cfg.schedule.lr))  # 16 / base 16: 0.02 as 8x2
    with open_dict(cfg):
        cfg.data.batch_size = 4
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=float(cfg.schedule.lr))
    scale_lr(cfg, optimizer, distributed.SINGLE_PROCESS)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(float(cfg.schedule.lr) / 4)


# ----------------------------------------------------------------------------- what the log says per step
def test_the_log_shows_the_loader_wait_and_switches_that_cannot_apply(tiny_demo_root, tmp_path, caplog):
    from detect.engine.fit import fit

    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, "runtime.max_iters_per_epoch=2", "schedule.epochs=1",
                         "runtime.plots.enabled=false", "runtime.profile.enabled=false", "data.pad_to=128",
                         "runtime.fused_optimizer=true", "runtime.eval_batch_size=3", "runtime.prefetch_factor=4"])
    with open_dict(cfg):
        del cfg["hydra"]
    with caplog.at_level(logging.INFO, logger="detect"):
        fit(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["mode"] == "train"]
    assert train and all(0 <= r["data_time"] <= r["sec_per_iter"] for r in train)
    assert all("gpu_mem_peak_mb" not in r for r in train)  # CPU: no GPU memory to report
    assert "s/it (data 0." in caplog.text
    assert "runtime.fused_optimizer=true ignored on cpu" in caplog.text
    assert "data.pad_to: every batch padded to 128x128" in caplog.text
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["gpu_mem_peak_mb"] is None
    assert "Evaluation after epoch 1 (4 images" in caplog.text  # in batches of 3 (runtime.eval_batch_size)


# ----------------------------------------------------------------------------- mixed precision and boxes
def test_box_regression_layers_compute_in_fp32_under_autocast_with_the_same_weights():
    model = demo_model().eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    changed = box_regression_in_fp32(model)
    assert changed == ["rpn.head.bbox_pred", "roi_heads.box_predictor.bbox_pred"]
    assert isinstance(model.roi_heads.box_predictor.bbox_pred, Fp32Linear)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    features = torch.rand(5, model.roi_heads.box_predictor.bbox_pred.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        deltas = model.roi_heads.box_predictor.bbox_pred(features.bfloat16())
        scores = model.roi_heads.box_predictor.cls_score(features)
        outputs = model([torch.rand(3, 128, 128)])
    assert deltas.dtype == torch.float32 and scores.dtype == torch.bfloat16  # only the box outputs are fp32
    assert outputs[0]["boxes"].dtype == torch.float32


@needs_cuda
@pytest.mark.gpu
def test_a_gpu_run_with_every_switch_trains_and_reports_its_memory(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.max_iters_per_epoch=4",
                                   "runtime.device=cuda", "runtime.amp=bf16", "runtime.channels_last=true",
                                   "runtime.compile=true", "data.pad_to=128", "runtime.fused_optimizer=auto",
                                   "runtime.workers=auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "Fused optimizer step" in log and "runtime.compile: torch.compile" in log
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["gpu_mem_peak_mb"] > 0 for r in records if r["mode"] == "train")
    assert json.loads((run_dir / "summary.json").read_text())["gpu_mem_peak_mb"] > 0


@needs_cuda
@pytest.mark.gpu
def test_torchrun_with_nccl_trains_and_evaluates_on_every_gpu(tiny_demo_root, tmp_path):
    """One process per GPU (a one-GPU nccl run included): the run directory is a one-process run's."""
    import os
    import subprocess
    import sys

    for processes in sorted({1, torch.cuda.device_count()}):
        run_dir = tmp_path / f"ddp_{processes}"
        env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={processes}", "-m", "detect.train",
                               *tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.device=cuda",
                                                "runtime.max_iters_per_epoch=3", "runtime.amp=bf16")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["world_size"] == processes
        assert summary["gpu_mem_peak_mb"] > 0
