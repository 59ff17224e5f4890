"""End-to-end runs of `python -m detect.train` on a tiny generated set: the run-directory contract,
resume, pruning, seeding and the errors a user meets first."""

from __future__ import annotations

import json
import shutil

import pytest

from detect.data.demo import TRASH_CLASSES
from tests.conftest import run_cli, tiny_train_args

METRIC_KEYS = ["epoch", "iter", "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["mode"] == "train"]


def check_ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_one_iteration_run_writes_every_file_of_the_run_directory(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "run"
    check_ok(run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1",
                                     "runtime.max_iters_per_epoch=1")))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "data.root=" in (run_dir / ".hydra" / "overrides.yaml").read_text()

    log = (run_dir / "train.log").read_text()
    assert "Evaluation after epoch 1" in log and "mean (bbox_mAP)" in log
    assert all(name in log for name in TRASH_CLASSES)

    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["mode"] == "val"]
    assert len(evals) == 1
    assert all(key in evals[0] for key in METRIC_KEYS)
    assert set(evals[0]["classwise"]) == set(TRASH_CLASSES)
    for ap in evals[0]["classwise"].values():
        assert set(ap) == {"AP", "AP50"} and all(v is None or 0 <= v <= 1 for v in ap.values())

    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["best_bbox_mAP_50_epoch_1.pth", "epoch_1.pth", "last.pth"]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["member"] == "tester" and summary["best_epoch"] == 1
    assert summary["best_checkpoint"].endswith("best_bbox_mAP_50_epoch_1.pth")
    assert summary["experiment"] == "faster_rcnn_r18_demo_demo"
    # Provenance: the command-line overrides, the code's commit and the library versions.
    assert f"data.root={tiny_demo_root}" in summary["overrides"]
    assert len(summary["git"]["commit"]) == 40 and isinstance(summary["git"]["dirty"], bool)
    assert summary["versions"]["torch"] and summary["versions"]["torchvision"] and summary["versions"]["detect"]


def test_seeded_runs_repeat_their_losses(tiny_demo_root, tmp_path):
    args = ["schedule.epochs=1", "runtime.max_iters_per_epoch=3", "data.val_ann=null"]
    check_ok(run_cli(tiny_train_args(tiny_demo_root, tmp_path / "a", *args)))
    check_ok(run_cli(tiny_train_args(tiny_demo_root, tmp_path / "b", *args)))
    check_ok(run_cli(tiny_train_args(tiny_demo_root, tmp_path / "c", *args, "runtime.seed=7")))
    a, b, c = (train_losses(tmp_path / k) for k in "abc")
    assert len(a) == 3 and a == b
    assert a != c


def test_resume_continues_at_the_next_epoch_with_the_same_best_and_pruning_holds(tiny_demo_root, tmp_path):
    common = ["runtime.max_iters_per_epoch=2", "runtime.max_keep_ckpts=1"]
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    check_ok(run_cli(tiny_train_args(tiny_demo_root, full, "schedule.epochs=3", *common)))
    check_ok(run_cli(tiny_train_args(tiny_demo_root, first, "schedule.epochs=2", *common)))
    check_ok(run_cli(tiny_train_args(tiny_demo_root, resumed, "schedule.epochs=3", *common,
                                     f"runtime.resume_from={first / 'checkpoints' / 'last.pth'}")))

    # max_keep_ckpts=1: only the newest epoch file survives next to best and last.
    names = {p.name for p in (full / "checkpoints").iterdir()}
    assert "epoch_3.pth" in names and "epoch_1.pth" not in names and "epoch_2.pth" not in names
    assert "last.pth" in names and sum(n.startswith("best_") for n in names) == 1

    resumed_records = read_jsonl(resumed / "metrics.jsonl")
    assert {r["epoch"] for r in resumed_records} == {3}  # starts at epoch 3, not 1
    # The resumed run trains epoch 3 exactly as the uninterrupted run did.
    full_epoch3 = [r["loss"] for r in read_jsonl(full / "metrics.jsonl") if r["mode"] == "train" and r["epoch"] == 3]
    assert train_losses(resumed) == full_epoch3

    before = json.loads((first / "summary.json").read_text())
    after = json.loads((resumed / "summary.json").read_text())
    assert after["epochs_done"] == 3 and after["status"] == "finished"
    if after["best_epoch"] <= 2:  # no improvement in epoch 3: the old best is kept, and its file too
        assert (after["best_score"], after["best_epoch"]) == (before["best_score"], before["best_epoch"])
    assert (resumed / "checkpoints" / f"best_bbox_mAP_50_epoch_{after['best_epoch']}.pth").is_file()
    assert log_mentions(resumed, "Resumed from")


def log_mentions(run_dir, text):
    return text in (run_dir / "train.log").read_text()


def test_headline_command_on_a_root_in_the_trash_layout(tiny_demo_root, tmp_path):
    root = tmp_path / "trash"
    shutil.copytree(tiny_demo_root, root)
    shutil.copy(root / "train.json", root / "train0.json")
    shutil.copy(root / "val.json", root / "val0.json")
    run_dir = tmp_path / "run"
    proc = run_cli(["model=cascade_rcnn", "data=trash", "model.backbone.weights=null", f"hydra.run.dir={run_dir}",
                    "data.fold=0", "data.min_size=128", "data.max_size=128", "data.batch_size=2",
                    "runtime.workers=0", "schedule.epochs=1", "runtime.max_iters_per_epoch=1"],
                   env={"TRASH_DATA_ROOT": str(root)})
    check_ok(proc)
    log = (run_dir / "train.log").read_text()
    assert "from train0.json" in log and "from val0.json" in log
    assert "Model cascade_rcnn: CascadeRCNN (backbone ResNet, neck FPN)" in log
    assert json.loads((run_dir / "summary.json").read_text())["fold"] == 0


@pytest.mark.parametrize("extra,expected", [
    (["data.root=/nonexistent/trash"], ["/nonexistent/trash", "data.root=", "TRASH_DATA_ROOT", "data=demo"]),
    (["data.fold=3"], ["train3.json", "data.fold"]),
])
def test_missing_trash_root_or_fold_file_gives_one_clear_paragraph(tiny_demo_root, tmp_path, extra, expected):
    proc = run_cli(["model=faster_rcnn", "data=trash", f"hydra.run.dir={tmp_path / 'run'}", *extra],
                   env={"TRASH_DATA_ROOT": str(tiny_demo_root)})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in output
    for text in expected:
        assert text in output, output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_missing_backbone_weights_file_names_both_remedies(tiny_demo_root, tmp_path):
    proc = run_cli(tiny_train_args(tiny_demo_root, tmp_path / "run", "model=faster_rcnn",
                                   "model.backbone.weights=/no/such/resnet50.pth"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert "/no/such/resnet50.pth" in output and "model.backbone.weights=null" in output


def test_load_from_takes_weights_only_and_names_a_mismatch(tiny_demo_root, tmp_path):
    one_iter = ["schedule.epochs=1", "runtime.max_iters_per_epoch=1", "data.val_ann=null"]
    check_ok(run_cli(tiny_train_args(tiny_demo_root, tmp_path / "src", *one_iter)))
    ckpt = tmp_path / "src" / "checkpoints" / "last.pth"

    check_ok(run_cli(tiny_train_args(tiny_demo_root, tmp_path / "ok", *one_iter, f"runtime.load_from={ckpt}")))
    log = (tmp_path / "ok" / "train.log").read_text()
    assert "Loaded model weights from" in log and "Resumed" not in log
    assert [r["epoch"] for r in read_jsonl(tmp_path / "ok" / "metrics.jsonl")] == [1]  # starts at epoch 1

    proc = run_cli(tiny_train_args(tiny_demo_root, tmp_path / "bad", *one_iter, "model.neck.out_channels=64",
                                   f"runtime.load_from={ckpt}"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert "do not fit this model" in output and "General trash" in output


def test_a_failing_job_of_a_sweep_does_not_stop_the_others(tiny_demo_root, tmp_path):
    root = tmp_path / "trash"
    shutil.copytree(tiny_demo_root, root)
    proc = run_cli(["-m", "model=faster_rcnn", "data=trash", "data.fold=7,8", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                   env={"TRASH_DATA_ROOT": str(root)})
    # Every job ran and the summary was written; the sweep's exit status says that jobs failed.
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 job(s) of the sweep did not finish" in proc.stderr and "Traceback" not in proc.stderr
    for job in ("0", "1"):  # both jobs ran, each failed on its own missing fold file
        summary = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert summary["status"] == "failed" and f"train{7 + int(job)}.json" in summary["error"]
    table = (tmp_path / "sweep" / "sweep_summary.md").read_text()
    assert table.startswith("Common overrides: model=faster_rcnn data=trash\n")
    assert "| 0 | data.fold=7 | failed |" in table and "| 1 | data.fold=8 | failed |" in table
    assert "Sweep " in proc.stdout and "data.fold=8 | failed" in proc.stdout


def test_a_kfold_sweep_writes_a_cross_validation_report(tiny_demo_root, tmp_path):
    from detect.data.kfold import write_splits

    root = tmp_path / "data"
    shutil.copytree(tiny_demo_root, root)
    write_splits(root / "train.json", num_folds=2, seed=411)
    sweep = tmp_path / "sweep"
    # Fold 0 trains; fold 9 has no files and fails: the report says which folds it averages.
    proc = run_cli(["-m", *tiny_train_args(root, tmp_path / "unused", "schedule.epochs=1",
                                           "runtime.max_iters_per_epoch=1"), "data.fold=0,1,9",
                    f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 1 and "1 job(s) of the sweep did not finish" in proc.stderr  # fold 9
    statuses = [json.loads((sweep / j / "summary.json").read_text())["status"] for j in ("0", "1", "2")]
    assert statuses == ["finished", "finished", "failed"]
    report = json.loads((sweep / "cv_report.json").read_text())
    assert len(report) == 1 and report[0]["folds"] == [0, 1, 9] and report[0]["folds_finished"] == [0, 1]
    scores = [json.loads((sweep / j / "summary.json").read_text())["best_score"] for j in ("0", "1")]
    assert report[0]["best_score"]["mean"] == pytest.approx(sum(scores) / 2)
    assert report[0]["best_score"]["std"] == pytest.approx(abs(scores[0] - scores[1]) / 2)
    assert set(report[0]["classwise_AP50"]) <= set(TRASH_CLASSES) and report[0]["classwise_AP50"]
    assert "| Paper |" in (sweep / "cv_report.md").read_text() and "Cross-validation:" in proc.stdout


def test_a_corrupt_image_read_in_a_loader_worker_is_named_without_a_traceback(tiny_demo_root, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(tiny_demo_root, root)
    for image in (root / "train").glob("*.jpg"):
        image.write_bytes(b"not a jpeg")
    proc = run_cli(tiny_train_args(root, tmp_path / "run", "runtime.workers=2"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert "Cannot read image" in output and "train/" in output


@pytest.mark.parametrize("extra,expected,found_by_the_check", [
    (["runtime.eval_interval=0"], "runtime.eval_interval=0 must be a whole number >= 1", True),
    # Only building the optimizer can tell that Adam takes no momentum: found after the run dir exists.
    (["schedule=1x", "schedule.optimizer._target_=torch.optim.Adam"], "'~schedule.optimizer.momentum'", False),
])
def test_config_mistakes_stop_before_training_with_the_key_named(tiny_demo_root, tmp_path, extra, expected,
                                                                 found_by_the_check):
    proc = run_cli(tiny_train_args(tiny_demo_root, tmp_path / "run", *extra))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output and expected in output  # a config error
    if found_by_the_check:
        assert not (tmp_path / "run").exists()  # before Hydra made a run dir
    else:
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no training happened


def test_an_unknown_monitor_is_a_usage_error_before_any_run_folder(tiny_demo_root, tmp_path):
    proc = run_cli(tiny_train_args(tiny_demo_root, tmp_path / "run", "runtime.monitor=bbox_mAP_51"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    assert "runtime.monitor='bbox_mAP_51' must be one of 'bbox_mAP', 'bbox_mAP_50'" in output
    assert not (tmp_path / "run").exists()
