"""`python -m detect.test`: eval repeats the trainer's numbers; predict writes a submission that
checks, round-trips to the same mAP, keeps empty images and speaks original-image pixels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from detect.evaluation.coco_metrics import evaluate_boxes
from detect.evaluation.submission import check_submission, submission_to_results
from tests.conftest import REPO, run_cli, tiny_train_args


def run_test_cli(args: list[str], timeout: int = 300):
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    return subprocess.run([sys.executable, "-m", "detect.test", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def only_dir(folder):
    dirs = [d for d in folder.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def trained_run(tiny_demo_root, tmp_path_factory):
    """A tiny run of 2 epochs (evaluated each), so best and last can differ."""
    tmp = tmp_path_factory.mktemp("testcli")
    root = tmp / "demo"
    shutil.copytree(tiny_demo_root, root)
    run_dir = tmp / "run"
    proc = run_cli(tiny_train_args(root, run_dir, "schedule.epochs=2", "runtime.max_iters_per_epoch=3"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return run_dir, root


def test_eval_repeats_the_trainers_numbers_for_the_best_checkpoint(trained_run):
    run_dir, _ = trained_run
    proc = run_test_cli([f"run={run_dir}", "mode=eval"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = only_dir(run_dir / "test")
    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    at_best = next(r for r in logged if r["mode"] == "val" and r["epoch"] == summary["best_epoch"])
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "classwise"):
        assert metrics[key] == pytest.approx(at_best[key]) if key != "classwise" else metrics[key] == at_best[key]
    assert metrics["epoch"] == summary["best_epoch"]
    assert "mean (bbox_mAP)" in (out / "test.log").read_text()


def test_predict_writes_a_submission_that_checks_and_round_trips_to_the_eval_map(trained_run):
    run_dir, root = trained_run
    # The demo's test.json lists the val images: the CSV can be scored against val.json.
    proc = run_test_cli([f"run={run_dir}", "checkpoint=last", "mode=predict", "hydra.run.dir=" + str(run_dir / "p")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    test_coco = json.loads((root / "test.json").read_text())
    csv_path = run_dir / "p" / "submission.csv"
    assert check_submission(csv_path, test_coco, num_classes=10) == []
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "PredictionString,image_id"
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == [img["file_name"] for img in test_coco["images"]]

    val = json.loads((root / "val.json").read_text())
    classes = [c["name"] for c in sorted(val["categories"], key=lambda c: c["id"])]
    category_ids = [c["id"] for c in sorted(val["categories"], key=lambda c: c["id"])]
    from_csv = evaluate_boxes(val, submission_to_results(csv_path, test_coco, category_ids), classes, category_ids)
    proc = run_test_cli([f"run={run_dir}", "checkpoint=last", "mode=eval", "hydra.run.dir=" + str(run_dir / "e")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((run_dir / "e" / "metrics.json").read_text())
    assert from_csv["bbox_mAP"] == pytest.approx(evaluated["bbox_mAP"], abs=1e-6)
    assert from_csv["bbox_mAP_50"] == pytest.approx(evaluated["bbox_mAP_50"], abs=1e-6)
    predictions = json.loads((run_dir / "p" / "predictions.bbox.json").read_text())
    assert len(predictions) == sum(len(line.split(",")[0].split()) // 6 for line in lines[1:])


def test_predict_on_a_test_json_without_categories_keeps_empty_rows_and_original_pixels(trained_run, tmp_path):
    """A wide image larger than the model's input: boxes must come back in its own pixels."""
    run_dir, root = trained_run
    test_root = tmp_path / "trash"
    (test_root / "test").mkdir(parents=True)
    source = sorted((root / "val").glob("*.jpg"))[0]
    Image.open(source).convert("RGB").resize((256, 128)).save(test_root / "test" / "0000.jpg")
    Image.new("RGB", (64, 96), (255, 255, 255)).save(test_root / "test" / "0001.jpg")  # blank: likely no boxes
    images = [{"id": 0, "file_name": "test/0000.jpg", "width": 256, "height": 128},
              {"id": 1, "file_name": "test/0001.jpg", "width": 64, "height": 96}]
    (test_root / "test.json").write_text(json.dumps({"images": images}))  # no categories, no annotations
    out = tmp_path / "out"
    proc = run_test_cli([f"run={run_dir}", "checkpoint=last", "mode=predict", f"data.root={test_root}",
                         "data.test_ann=test.json", "score_threshold=0.0", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = (out / "submission.csv").read_text().splitlines()[1:]
    assert [r.rsplit(",", 1)[1] for r in rows] == ["test/0000.jpg", "test/0001.jpg"]
    assert check_submission(out / "submission.csv", {"images": images}, num_classes=10) == []
    numbers = [float(v) for v in rows[0].rsplit(",", 1)[0].split()]
    groups = [numbers[i:i + 6] for i in range(0, len(numbers), 6)]
    assert groups and len(groups) <= 100
    # The model saw the image at 128x64 (data.max_size=128); boxes beyond x=128 prove original pixels.
    assert max(g[4] for g in groups) > 130 and max(g[4] for g in groups) <= 256
    assert max(g[5] for g in groups) <= 128


@pytest.mark.parametrize("args, message, code", [
    # A file that is not there: a failure of the work, exit 1 (detect/cli.py).
    (["checkpoint=epoch_9"], "epoch_9.pth does not exist. Available in", 1),
    # What is wrong with the command line or the config: exit 2, before any work.
    (["checkpoint=best"], "checkpoint=best needs run=<run dir>", 2),
    (["mode=submit"], "mode='submit' must be one of 'eval' or 'predict'", 2),  # the schema (detect/config/schemas.py)
    (["score_threshold=abc"], "score_threshold='abc' must be a number in [0, 1]", 2),
    (["score_threshold=2"], "score_threshold=2 must be a number in [0, 1]", 2),  # the config check's range
    (["tta=true", "tta_scales=[0]"], "tta_scales=[0] must be a list of sizes in pixels", 2),
    (["device=gpu"], "device=gpu is not a device: use auto, cpu, cuda or cuda:N", 2),
])
def test_wrong_test_arguments_are_named_and_leave_no_folder(trained_run, args, message, code):
    run_dir, _ = trained_run
    before = sorted(p.name for p in (run_dir / "test").iterdir()) if (run_dir / "test").exists() else []
    full = args if args == ["checkpoint=best"] else [f"run={run_dir}", *args]
    proc = run_test_cli(full)
    output = proc.stdout + proc.stderr
    assert proc.returncode == code and "Traceback" not in output and message in output, output[-2000:]
    after = sorted(p.name for p in (run_dir / "test").iterdir()) if (run_dir / "test").exists() else []
    assert after == before  # the failed call left nothing in the run dir


def test_a_mistyped_run_creates_no_folder_there(tmp_path):
    proc = run_test_cli([f"run={tmp_path / 'no_such_run'}"])
    assert proc.returncode == 1 and "has no checkpoints/ folder" in proc.stdout + proc.stderr
    assert not (tmp_path / "no_such_run").exists()


def test_tta_eval_and_predict_run_on_the_trained_model(trained_run):
    run_dir, root = trained_run
    proc = run_test_cli([f"run={run_dir}", "checkpoint=last", "mode=eval", "tta=true", "tta_scales=[96,128]",
                         f"hydra.run.dir={run_dir / 'tta_eval'}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((run_dir / "tta_eval" / "metrics.json").read_text())
    assert metrics["tta"] is True and 0.0 <= metrics["bbox_mAP_50"] <= 1.0
    assert "TTA: scales [96, 128] with flips, merged by wbf" in (run_dir / "tta_eval" / "test.log").read_text()
    proc = run_test_cli([f"run={run_dir}", "checkpoint=last", "mode=predict", "tta=true", "tta_merge=nms",
                         f"hydra.run.dir={run_dir / 'tta_pred'}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    test_coco = json.loads((root / "test.json").read_text())
    assert check_submission(run_dir / "tta_pred" / "submission.csv", test_coco, num_classes=10) == []
