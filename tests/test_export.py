"""`python -m detect.export`: the demo Faster R-CNN and Cascade R-CNN to ONNX (onnxruntime's detections
equal PyTorch's within 1e-3 px on demo images) and TorchScript, the check written beside the file, and
one message instead of a trace for what cannot be exported or asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli, tiny_train_args

pytest.importorskip("onnxruntime")


def run_export(*args: str):
    env = {"WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "detect.export", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module", params=["faster_rcnn_r18_demo",
                                        pytest.param("cascade_rcnn_r18_demo", marks=pytest.mark.slow)])
def trained(request, tiny_demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / request.param
    done = run_cli(tiny_train_args(tiny_demo_root, run_dir, f"model={request.param}", "schedule.epochs=2",
                                   "runtime.profile.enabled=false"))
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def test_onnx_at_a_fixed_size_gives_pytorchs_detections(trained, tmp_path):
    out = tmp_path / "model.onnx"
    done = run_export(f"run={trained}", "checkpoint=last", "dynamic=false", "size=128", f"out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads(out.with_suffix(".check.json").read_text())
    assert check["images"] == 4 and check["images_identical"] == 4 and check["unmatched_detections"] == 0
    assert check["largest_box_difference_px"] <= 1e-3 and check["detections_pytorch"] > 0
    assert check["map50_exported"] == pytest.approx(check["map50_pytorch"], abs=1e-3) and check["agree"]
    assert "they agree" in done.stderr


@pytest.mark.slow
def test_onnx_with_any_input_size_runs_images_of_other_sizes(trained, tmp_path):
    out = tmp_path / "model.onnx"
    done = run_export(f"run={trained}", "checkpoint=last", f"out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads(out.with_suffix(".check.json").read_text())
    assert check["dynamic"] and check["images"] == 4 and check["agree"]
    assert check["images_identical"] >= 3  # bilinear resizes of onnxruntime may move a proposal at the margin
    # An exported file is never replaced.
    again = run_export(f"run={trained}", "checkpoint=last", f"out={out}")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_torchscript_is_traced_at_a_fixed_size(trained, tmp_path):
    out = tmp_path / "model.pt"
    done = run_export(f"run={trained}", "checkpoint=last", "format=torchscript", "size=128", f"out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads(out.with_suffix(".check.json").read_text())
    assert check["size"] == 128 and check["images_identical"] == 4 and check["agree"]
    asked = run_export(f"run={trained}", "format=torchscript", "dynamic=true")
    assert asked.returncode == 2 and "traced at one input size" in asked.stderr
