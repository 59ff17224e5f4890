"""benchmarks/gpu_throughput.py: the GPU throughput table, dry-run on a CPU with tiny settings (the generated
demo data at 128 px, the demo R18 model, batch 2, 1 warm-up + 2 timed steps; about 30 s on 2 cores): every
section prints its table, results.json holds the figures, a configuration that fails is a row that says
why and the sweep goes on, and the torchrun path (one gloo process) reads its metrics.jsonl. No timing is
asserted. The GPU test runs a short sweep with torch.compile where CUDA is present (CI has none)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

BENCH = REPO / "benchmarks" / "gpu_throughput.py"
MODEL = "faster_rcnn_r18_demo"
DRY = ["--data", "demo", "--size", "128", "--models", MODEL, "--batches", "2", "--iters", "2", "--warmup", "1",
       "--threads", "2", "--workers", "0"]


def run_bench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """The script as a user runs it from the repo root."""
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def results_of(out: Path) -> tuple[Path, dict]:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]  # <out>/<time>/
    return folder, json.loads((folder / "results.json").read_text())


def row(stdout: str, *cells: str) -> str:
    """The table row that starts with these cells (regular expressions)."""
    found = re.search(r"^\| " + r" \| ".join(cells) + r" \|.*$", stdout, re.MULTILINE)
    assert found, f"no row {cells} in:\n{stdout}"
    return found.group(0)


def test_cpu_dry_run_prints_every_table_and_a_failing_configuration_does_not_stop_the_sweep(tmp_path):
    result = run_bench(["--device", "cpu", *DRY, "--configs", "fp32", "bogus", "bf16", "--define",
                        "bogus=runtime.amp=fp8", "--peak-tflops", "0.5", "--nproc", "1", "4096", "--ddp-batch", "2",
                        "--ddp-warmup", "5", "--ddp-iters", "5", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^machine: .*torch threads 2$", out, re.MULTILINE)
    for heading in ("## FLOPs per image", "## Training (128 px)", "## Inference (128 px)",
                    "## Multi-GPU training (torchrun)"):
        assert heading in out
    assert re.search(r"^\(training: \d+\.\d s\)$", out, re.MULTILINE)  # the elapsed time of each section
    assert "| MFU (0.5 TFLOP/s) |" in out  # the peak in the heading
    number = r"\d+\.\d"
    assert row(out, MODEL, r"plain \(torchvision loop, fp32\)", "2", number, number, r"1\.00x")
    for config in ("fp32", "bf16"):  # the bogus configuration between them did not stop the sweep
        line = row(out, MODEL, config, "2", number, number, r"\d+\.\d\dx", r"[\d.]+%", "-", r"[\d.]+%", number)
        assert line.endswith("| ok |")
    assert row(out, MODEL, "bogus", "2", "-").endswith(
        "| failed: ConfigError: runtime.amp=fp8 is not a precision: use false, fp16 (or true) or bf16. |")
    assert row(out, MODEL, r"plain \(fp32\)", "2", number, number, r"1\.00x")  # inference
    assert row(out, MODEL, "bf16", "8", number, number, r"\d+\.\d\dx").endswith("| ok |")
    assert "failed: ConfigError: runtime.amp=fp8" in row(out, MODEL, "bogus", "8")
    assert row(out, MODEL, "1", "2", number, number, r"1\.00").endswith("| ok |")  # torchrun, one gloo process
    assert row(out, MODEL, "4096", "2").endswith(f"| skipped: 4096 processes, {os.cpu_count()} cores here |")

    folder, res = results_of(tmp_path)
    assert (folder / "results.md").read_text().count("| model |") == 4
    assert res["peak_tflops"] == 0.5 and res["device"] == "cpu" and res["data"] == "demo"
    assert set(res["sections_s"]) == {"flops", "training", "inference", "ddp"}
    flops = res["flops"][MODEL]
    assert flops["status"] == "ok" and flops["train_flops_per_image"] > flops["eval_flops_per_image"] > 0

    training = res["training"]
    assert [(r["config"], r["batch"]) for r in training] == [
        ("plain (torchvision loop, fp32)", 2), ("fp32", 2), ("bogus", 2), ("bf16", 2)]
    bogus = training[2]
    assert bogus["status"].startswith("failed: ConfigError") and "fp8" in bogus["error"]
    assert bogus["overrides"] == ["runtime.amp=fp8"] and "img_s" not in bogus
    for r in (training[0], training[1], training[3]):
        assert r["status"] == "ok" and r["img_s"] > 0 and r["img_s_median_step"] > 0 and r["vs_plain"] > 0
        assert r["peak_mem_mb"] is None  # CPU: no GPU memory
        assert math.isclose(r["mfu"], flops["train_flops_per_image"] * r["img_s"] / 0.5e12)
    assert training[0]["vs_plain"] == 1.0
    for r in (training[1], training[3]):  # detect's trainer: the loader wait, and every batch full
        assert 0 <= r["data_share"] < 1 and r["startup_s"] > 0
        assert r["train_images"] == (1 + 2 + 1) * 2  # warm-up + timed + 1 steps of 2 images
    assert training[3]["overrides"] == ["runtime.amp=bf16", "runtime.channels_last=true"]

    inference = res["inference"]
    assert [(r["config"], r["batch"], r["status"][:6]) for r in inference] == [
        ("plain (fp32)", 2, "ok"), ("bogus", 8, "failed"), ("bf16", 8, "ok")]
    for r in (inference[0], inference[2]):
        assert r["img_s"] > 0 and r["vs_plain"] > 0 and r["peak_mem_mb"] is None
        assert math.isclose(r["mfu"], flops["eval_flops_per_image"] * r["img_s"] / 0.5e12)

    one, many = res["ddp"]
    assert one["status"] == "ok" and one["nproc"] == 1 and one["img_s_per_gpu"] > 0
    assert one["img_s_total"] == one["img_s_per_gpu"] and one["scaling"] == 1.0 and one["records"] >= 1
    assert many["status"].startswith("skipped") and "img_s_per_gpu" not in many
    assert (Path(one["run_dir"]) / "metrics.jsonl").is_file()
    assert not list(folder.glob("runs/*/checkpoints/*"))  # no checkpoints left behind


def test_configurations_batches_and_the_time_guard(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the script imports train_overhead and machine from there
    import gpu_throughput as bench

    args = bench.parse_args([])
    assert [(c.name, c.batches, c.compiled) for c in args.plan] == [
        ("fp32", [4], False), ("bf16", [4, 8, 16], False), ("bf16_compile", [16], True)]
    assert args.plain_batch == 4 and args.infer_configs == ["bf16", "bf16_compile"] and args.size == 1024
    assert "data.pad_to={size}" in args.plan[2].overrides
    args = bench.parse_args(["--configs", "fp32", "bf16@8,16", "mine", "--batches", "2", "--define",
                             "mine=runtime.compile=max-autotune data.pad_to=[128,128]"])
    assert [(c.name, c.batches, c.compiled) for c in args.plan] == [
        ("fp32", [2], False), ("bf16", [8, 16], False), ("mine", [2], True)]
    assert args.plain_batch == 2 and args.infer_configs == ["bf16", "mine"]
    assert bench.Config("off", ["runtime.compile=false"], [1]).compiled is False
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "nope"])
    clock = bench.Clock(1.0)
    assert clock.skip(30) is None
    assert clock.skip(61).startswith("skipped: --max-minutes 1 (at 0.0 min; this takes about 1.0 min)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
def test_gpu_sweep_with_compile(tmp_path):
    result = run_bench(["--device", "cuda", "--data", "demo", "--size", "256", "--models", MODEL, "--configs", "fp32",
                        "bf16", "bf16_compile", "--batches", "4", "--iters", "5", "--warmup", "2",
                        "--compile-warmup", "4", "--nproc", "1", "--ddp-batch", "4", "--ddp-warmup", "5",
                        "--ddp-iters", "10", "--max-minutes", "30", "--out", str(tmp_path)], timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    _, res = results_of(tmp_path)
    assert res["device"] != "cpu"
    rows = [*res["training"], *res["inference"]]
    assert [r["config"] for r in res["training"]] == ["plain (torchvision loop, fp32)", "fp32", "bf16", "bf16_compile"]
    assert [r["config"] for r in res["inference"]] == ["plain (fp32)", "bf16", "bf16_compile"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["img_s"] > 0 and r["peak_mem_mb"] > 0 and 0 < r["mfu"] < 1
    assert res["ddp"][0]["status"] == "ok" and res["ddp"][0]["peak_mem_mb"] > 0
