"""Long runs: the demo target (slow) and real photos from ../shared/data (realdata)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA, run_cli

MEDICAL_WASTE = SHARED_DATA / "medical_waste"


@pytest.mark.slow
def test_default_command_reaches_the_demo_target(tmp_path):
    """`python -m detect.train` with no arguments: bbox_mAP_50 >= 0.55 on the demo val split (the issue's bar for
    the worst of 3 seeds; measured 0.63-0.69 on the development machine)."""
    run_dir = tmp_path / "demo_run"
    proc = run_cli([f"hydra.run.dir={run_dir}"], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == summary["epochs"]
    assert summary["best_score"] >= 0.55, summary
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["mode"] == "val"]
    assert len(evals) == summary["epochs"]  # one classwise table per epoch
    assert sum((r["classwise"][c]["AP50"] or 0) > 0.3 for r in evals[-1:] for c in r["classwise"]) >= 5


@pytest.mark.realdata
@pytest.mark.skipif(not MEDICAL_WASTE.is_dir(), reason="../shared/data/medical_waste is absent (developer data)")
def test_real_photos_run_end_to_end_with_the_json_classes(tmp_path):
    run_dir = tmp_path / "mw"
    proc = run_cli(["data=coco", f"data.root={MEDICAL_WASTE}", "data.train_ann=train.json", "data.val_ann=val.json",
                    "data.min_size=256", "data.max_size=256", "data.batch_size=4", "runtime.workers=0",
                    "schedule.epochs=1", "runtime.max_iters_per_epoch=3", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    classwise = [r for r in evals if r["mode"] == "val"][0]["classwise"]
    assert list(classwise) == ["Blood bag", "Mask", "ampoule", "syringe"]
    assert "Evaluation after epoch 1 (118 images" in (run_dir / "train.log").read_text()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"last.pth", "epoch_1.pth"}

