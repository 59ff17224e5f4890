"""Speed switches: runtime.amp (fp16/bf16), channels_last, cudnn_benchmark. On CPU they are ignored
(said in the log) so one config runs everywhere; on a GPU a short run trains with each."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf

from detect.config.check import find_problems
from detect.engine.gpu_settings import amp_dtype, apply_speed_settings, grad_scaler
from detect.errors import ConfigError
from tests.conftest import run_cli, tiny_train_args

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")  # no CUDA here
def test_amp_values_map_to_autocast_dtypes_and_loss_scaling():
    assert grad_scaler(torch.float16) is not None  # fp16 underflows without loss scaling
    assert grad_scaler(torch.bfloat16) is None and grad_scaler(None) is None
    assert amp_dtype(False, torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="runtime.amp=fp8 is not a precision: use false, fp16"):
        amp_dtype("fp8", torch.device("cpu"))


def test_on_cpu_the_switches_are_ignored_and_the_log_says_so(caplog):
    runtime = OmegaConf.create({"amp": "bf16", "channels_last": True, "cudnn_benchmark": True})
    model = torch.nn.Conv2d(3, 4, 3)
    with caplog.at_level(logging.INFO, logger="detect"):
        assert amp_dtype(runtime.amp, torch.device("cpu")) is None
        assert apply_speed_settings(model, runtime, torch.device("cpu")) is model
    assert "runtime.amp=bf16 is ignored on cpu" in caplog.text
    assert "runtime.channels_last and runtime.cudnn_benchmark ignored on cpu" in caplog.text
    assert model.weight.is_contiguous()  # untouched


def test_the_config_check_takes_the_precisions_and_names_a_wrong_one():
    assert find_problems(["runtime.amp=bf16", "runtime.channels_last=true"], "train") == []
    [problem] = find_problems(["runtime.amp=fp8"], "train")
    assert "runtime.amp" in problem and "bf16" in problem


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_short_gpu_run_trains_with_amp_channels_last_and_cudnn_benchmark(tiny_demo_root, tmp_path, amp):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.max_iters_per_epoch=3",
                                   "runtime.device=cuda", f"runtime.amp={amp}", "runtime.channels_last=true",
                                   "runtime.cudnn_benchmark=true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if r["mode"] == "train")  # finite
    assert any(r["mode"] == "val" for r in records)
