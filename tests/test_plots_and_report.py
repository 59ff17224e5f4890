"""What a run shows: progress output, plots in <run>/plots/, report.md, and `python -m detect.report`.

The numbers behind the plots are checked against the evaluation: the confusion matrix adds up to
the ground-truth boxes plus the unmatched detections, and each PR curve averages to its AP50.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detect.evaluation.coco_metrics import evaluate_boxes, precision_recall_iou50
from detect.evaluation.confusion import confusion_matrix, normalize_columns
from detect.plots import SIZES
from detect.plots.evaluation import read_confusion_csv, read_pr_csv
from tests.conftest import REPO, tiny_train_args

CLASSES = ["Paper", "Paper pack", "Battery"]
CATEGORY_IDS = [1, 2, 7]  # not 1..K on purpose: columns are classes, not ids


def image(image_id: int) -> dict:
    return {"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 200}


def box(image_id, category_id, x, y, w=40, h=40, **extra) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], **extra}


def run_train_raw(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m detect.train` with its output kept byte for byte: text mode would turn the bar's
    carriage returns into newlines and hide them."""
    env = {**os.environ, "WANDB_MODE": "disabled", "DETECT_MEMBER": "tester"}
    proc = subprocess.run([sys.executable, "-m", "detect.train", *args], cwd=REPO, env=env, capture_output=True,
                          timeout=600)
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    return proc


def check_png(path, name):
    """A real PNG of the size SIZES[name] with more on it than a background colour."""
    with Image.open(path) as img:
        assert img.format == "PNG", path
        assert img.size == SIZES[name], (path, img.size)
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 5, f"{path} looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, f"{path} has almost no content"


# ------------------------------------------------------------------ confusion matrix
def test_confusion_matrix_counts_matches_confusions_misses_and_false_alarms():
    gt = {"images": [image(1), image(2)], "categories": [{"id": c, "name": n} for n, c in zip(CLASSES, CATEGORY_IDS)],
          "annotations": [
              {**box(1, 1, 0, 0), "id": 1},  # Paper, found as Paper
              {**box(1, 2, 100, 0), "id": 2},  # Paper pack, found as Paper (a confusion)
              {**box(1, 7, 0, 100), "id": 3},  # Battery, missed
              {**box(2, 7, 50, 50), "id": 4},  # Battery, found as Battery (plus a duplicate)
              {**box(2, 1, 150, 150, iscrowd=1), "id": 5},  # a crowd box: left out
          ]}
    dets = [
        box(1, 1, 1, 1, score=0.9),  # IoU 0.9 with the Paper box
        box(1, 1, 100, 2, score=0.8),  # on the Paper pack box, wrong class
        box(1, 2, 150, 150, score=0.7),  # on nothing: a false alarm (Paper pack predicted)
        box(1, 7, 0, 100, score=0.1),  # on the Battery but below the score threshold: not counted
        box(2, 7, 50, 50, score=0.95),
        box(2, 7, 52, 52, score=0.6),  # duplicate of the Battery: the box is taken, a false alarm
        box(2, 99, 0, 0, score=0.9),  # a category outside the classes: ignored
    ]
    matrix = confusion_matrix(gt, dets, CATEGORY_IDS, score_thr=0.25, iou_thr=0.5)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0] = 1  # Paper -> Paper
    expected[0, 1] = 1  # Paper pack predicted as Paper
    expected[3, 2] = 1  # Battery missed (background row)
    expected[2, 2] = 1  # Battery -> Battery
    expected[1, 3] = 1  # false alarm predicted as Paper pack (background column)
    expected[2, 3] = 1  # duplicate Battery
    np.testing.assert_array_equal(matrix, expected)
    normalized = normalize_columns(matrix)
    np.testing.assert_allclose(normalized.sum(axis=0), [1, 1, 1, 1])


def test_confusion_matrix_total_is_ground_truth_plus_unmatched_detections():
    rng = np.random.default_rng(0)
    images = [image(i) for i in range(1, 31)]
    annotations, dets = [], []
    for img in images:
        for _ in range(rng.integers(0, 6)):
            x, y, w, h = rng.uniform(0, 150, 2).tolist() + rng.uniform(5, 60, 2).tolist()
            cat = int(rng.choice(CATEGORY_IDS))
            annotations.append({**box(img["id"], cat, x, y, w, h), "id": len(annotations) + 1})
            for _ in range(rng.integers(0, 3)):  # 0-2 noisy detections per box, sometimes of another class
                jitter = rng.normal(0, 6, 4)
                dets.append(box(img["id"], int(rng.choice(CATEGORY_IDS)) if rng.random() < 0.3 else cat,
                                x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1),
                                score=float(rng.random())))
        for _ in range(rng.integers(0, 3)):  # detections on nothing
            dets.append(box(img["id"], int(rng.choice(CATEGORY_IDS)), *rng.uniform(0, 150, 2),
                            score=float(rng.random())))
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": n} for n, c in zip(CLASSES, CATEGORY_IDS)]}
    for score_thr, iou_thr in ((0.25, 0.5), (0.0, 0.3), (0.6, 0.75)):
        matrix = confusion_matrix(gt, dets, CATEGORY_IDS, score_thr, iou_thr)
        counted = sum(d["score"] >= score_thr for d in dets)
        matched = int(matrix[:3, :3].sum())
        assert matrix.sum() == len(annotations) + (counted - matched)
        assert matrix[3, :].sum() == len(annotations) - matched  # misses
        assert matrix[:, 3].sum() == counted - matched  # unmatched detections
        assert matrix[:, :3].sum() == len(annotations)  # every true box in exactly one cell of its column
        assert matrix[3, 3] == 0


# ------------------------------------------------------------------ PR curves
def test_each_pr_curve_averages_to_its_ap50_and_only_falls():
    rng = np.random.default_rng(1)
    images = [image(i) for i in range(1, 21)]
    annotations, dets = [], []
    for img in images:
        for _ in range(3):
            x, y = rng.uniform(0, 150, 2)
            cat = int(rng.choice(CATEGORY_IDS[:2]))  # Battery gets no ground truth
            annotations.append({**box(img["id"], cat, x, y), "id": len(annotations) + 1})
            if rng.random() < 0.8:
                dets.append(box(img["id"], cat, x + rng.normal(0, 8), y + rng.normal(0, 8), score=float(rng.random())))
        dets.append(box(img["id"], int(rng.choice(CATEGORY_IDS)), *rng.uniform(0, 150, 2), score=float(rng.random())))
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": n} for n, c in zip(CLASSES, CATEGORY_IDS)]}
    recall, curves = precision_recall_iou50(gt, dets, CLASSES, CATEGORY_IDS)
    metrics = evaluate_boxes(gt, dets, CLASSES, CATEGORY_IDS)
    np.testing.assert_allclose(recall, np.linspace(0, 1, 101))
    assert curves["Battery"] is None and metrics["classwise"]["Battery"]["AP50"] is None
    for name in CLASSES[:2]:
        curve = curves[name]
        assert curve.mean() == pytest.approx(metrics["classwise"][name]["AP50"], abs=1e-12)
        assert np.all(np.diff(curve) <= 1e-12), "interpolated precision never rises with recall"
        assert 0 < curve[0] <= 1 and curve[-1] == 0  # 80% of the boxes found: recall 1 is never reached


# ------------------------------------------------------------------ a real run
@pytest.fixture(scope="module")
def finished_run(tiny_demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    proc = run_train_raw(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc


def test_a_run_writes_every_plot_as_a_real_png_of_its_size(finished_run):
    run_dir, _ = finished_run
    for name in SIZES:
        check_png(run_dir / "plots" / f"{name}.png", name)
    report = (run_dir / "report.md").read_text()
    assert "bbox_mAP_50" in report and ("| 2 (best) |" in report or "| 1 (best) |" in report)
    for name in SIZES:
        assert f"(plots/{name}.png)" in report


def test_the_run_ends_with_a_summary_and_prints_no_bar_redraws_when_not_in_a_terminal(finished_run):
    run_dir, proc = finished_run
    output = proc.stdout + proc.stderr
    assert "\r" not in output, "a non-interactive run must not redraw progress bars"
    assert "Run finished in" in output and "Best checkpoint:" in output and "Plots:" in output
    log = (run_dir / "train.log").read_bytes().decode()
    assert "\r" not in log
    assert "eta 0:" in log  # the interval lines carry the run's ETA
    assert log.count("mean (bbox_mAP)") == 2  # the classwise table at both evaluations
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"Best {summary['monitor']}={summary['best_score']:.4f} at epoch {summary['best_epoch']}" in log


def test_plot_data_agrees_with_the_evaluation_of_the_best_epoch(finished_run):
    run_dir, _ = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = next(r for r in records if r["mode"] == "val" and r["epoch"] == summary["best_epoch"])
    _, curves = read_pr_csv(run_dir / "plots" / "pr_curves_iou50.csv")
    for name, ap in best["classwise"].items():
        if ap["AP50"] is None:
            assert curves[name] is None
        else:
            assert curves[name].mean() == pytest.approx(ap["AP50"], abs=1e-9), name

    ground_truth = json.loads(open(summary["data_files"]["val"]).read())
    detections = json.loads((run_dir / "val_predictions.bbox.json").read_text())
    labels, matrix = read_confusion_csv(run_dir / "plots" / "confusion_matrix.csv")
    assert labels == [*summary["classes"], "background"]
    boxes = sum(1 for a in ground_truth["annotations"] if not a.get("iscrowd", 0))
    counted = sum(d["score"] >= 0.25 for d in detections)
    matched = int(matrix[:-1, :-1].sum())
    assert matrix.sum() == boxes + (counted - matched)


def test_report_rebuilds_every_plot_without_the_model(finished_run, tmp_path):
    run_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints")  # no model anywhere
    shutil.rmtree(copy / "plots")
    (copy / "report.md").unlink()
    code = ("import sys; from detect.report import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'detect.report imported torch'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, f"run={copy}", "confusion_score_thr=0.05"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 7 plots" in proc.stderr
    for name in SIZES:
        check_png(copy / "plots" / f"{name}.png", name)
    assert "score >= 0.05" in (copy / "report.md").read_text()


def test_report_of_a_run_that_died_draws_what_its_files_allow(tmp_path):
    run = tmp_path / "died"
    run.mkdir()
    lines = [{"mode": "train", "epoch": 1, "iter": i, "step": i, "steps": 9, "lr": 0.01 * i, "loss": 3.0 / i,
              "loss_classifier": 2.0 / i, "loss_box_reg": 1.0 / i, "sec_per_iter": 0.1} for i in range(1, 10)]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"mode": "train", "ep'  # cut short by the crash
    (run / "metrics.jsonl").write_text(text)
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: CUDA out of memory",
                                                  "monitor": "bbox_mAP_50"}))
    proc = subprocess.run([sys.executable, "-m", "detect.report", f"run={run}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check_png(run / "plots" / "losses.png", "losses")
    report = (run / "report.md").read_text()
    assert "failed" in report and "CUDA out of memory" in report
    assert "no val_predictions.bbox.json" in report and "Not drawn" in proc.stderr


@pytest.mark.parametrize("args, expected, code", [
    (["run=/no/such/run"], "run=/no/such/run is not a folder", 1),  # a failure during the work
    (["runs=x"], "Unknown argument 'runs=x'", 2),  # usage errors (detect/cli.py): exit 2
    ([], "run=<run dir> is required", 2),
    (["run=.", "confusion_iou_thr=2"], "confusion_iou_thr=2.0 is out of range", 2),
])
def test_report_names_bad_arguments_without_a_traceback(args, expected, code):
    proc = subprocess.run([sys.executable, "-m", "detect.report", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_a_failing_plot_warns_once_and_training_goes_on(tmp_path, caplog):
    from detect.engine.hooks.plots import PlotsHook
    from detect.run import RunDir

    visuals = PlotsHook(RunDir(tmp_path), {"enabled": True})
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("no fonts")

    visuals._plot("the curves", broken)
    visuals._plot("the curves", broken)
    assert calls == [1] and not visuals.plots
    assert caplog.text.count("Plotting the curves failed (RuntimeError: no fonts)") == 1


def test_a_progress_bar_in_a_terminal_keeps_loss_lines_in_train_log_only(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "bar"
    proc = run_train_raw(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.progress=bar",
                                   "runtime.plots.enabled=false"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" in proc.stderr and "epoch 1/1" in proc.stderr and ("it/s" in proc.stderr or "s/it" in proc.stderr)
    assert "loss_classifier=" not in proc.stdout  # the bar shows the losses in the terminal
    assert "Evaluation after epoch 1" in proc.stdout  # other log lines still print (above the bar)
    log = (run_dir / "train.log").read_bytes().decode()
    assert "loss_classifier=" in log and "\r" not in log
    assert not (run_dir / "plots").exists()  # runtime.plots.enabled=false


def test_report_help_lists_its_arguments():
    proc = subprocess.run([sys.executable, "-m", "detect.report", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert all(key in proc.stdout for key in ("run=RUN_DIR", "confusion_score_thr", "confusion_iou_thr", "data_root"))
