"""Box fusion (WBF, NMS, soft-NMS) on hand-made cases, and the ensemble command on files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detect.ensemble import main as ensemble_main
from detect.evaluation.fusion import Detections, fuse
from detect.evaluation.submission import read_rows

A = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([0.9, 0.8]), np.array([0, 1]))
B = Detections(np.array([[1, 1, 11, 11]], float), np.array([0.6]), np.array([0]))
IOU_AB = 81 / (100 + 100 - 81)


def as_list(det: Detections):
    return [(int(label), round(float(score), 6), [round(float(v), 6) for v in box])
            for box, score, label in zip(det.boxes, det.scores, det.labels)]


@pytest.mark.parametrize("method", ["wbf", "nms", "soft_nms"])
def test_fusing_one_input_returns_it(method):
    assert as_list(fuse([A], method)) == as_list(A)


@pytest.mark.parametrize("method", ["wbf", "nms"])
def test_fusing_two_identical_inputs_returns_the_same_boxes(method):
    assert as_list(fuse([A, A], method)) == as_list(A)


def test_wbf_averages_overlapping_boxes_by_score_and_lowers_boxes_found_once():
    fused = as_list(fuse([A, B], "wbf", iou_thr=0.55))
    assert fused == [(0, 0.75, [0.4, 0.4, 10.4, 10.4]),  # (0.9 * a + 0.6 * b) / 1.5; mean score 0.75 x 2/2
                     (1, 0.4, [50.0, 50.0, 60.0, 60.0])]  # only one of two inputs: 0.8 x 1/2


def test_wbf_weights_and_thresholds():
    fused = as_list(fuse([A, B], "wbf", weights=[2, 1], iou_thr=0.55))
    assert fused[0] == (0, 0.8, [0.25, 0.25, 10.25, 10.25])  # scores 1.8 and 0.6; mean 1.2 x 2/3
    apart = as_list(fuse([A, B], "wbf", iou_thr=0.7))  # IoU 0.68 is not above 0.7: no fusion
    assert [f[2] for f in apart if f[0] == 0] == [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]]
    skipped = as_list(fuse([A, B], "wbf", skip_thr=0.7))  # B's 0.6 box is dropped before fusing
    assert skipped[0] == (0, 0.45, [0.0, 0.0, 10.0, 10.0])
    other_label = Detections(B.boxes, B.scores, np.array([1]))  # same place, another class: never fused
    assert len(fuse([A, other_label], "wbf")) == 3


def test_nms_keeps_the_best_of_overlapping_boxes_per_label():
    assert as_list(fuse([A, B], "nms", iou_thr=0.55)) == [(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
                                                           (1, 0.8, [50.0, 50.0, 60.0, 60.0])]
    assert len(fuse([A, B], "nms", iou_thr=0.7)) == 3


def test_soft_nms_decays_overlapping_scores_instead_of_removing():
    fused = as_list(fuse([A, B], "soft_nms"))
    assert fused[2] == (0, round(0.6 * math.exp(-IOU_AB**2 / 0.5), 6), [1.0, 1.0, 11.0, 11.0])
    assert [f[1] for f in fused[:2]] == [0.9, 0.8]


def test_max_detections_and_wrong_arguments():
    assert len(fuse([A, B], "nms", iou_thr=0.9, max_detections=2)) == 2
    with pytest.raises(ValueError, match="2 weights for 1 inputs"):
        fuse([A], "wbf", weights=[1, 2])
    with pytest.raises(ValueError, match="method='vote' is not one of wbf, nms, soft_nms"):
        fuse([A, B], "vote")


IMAGES = {"images": [{"id": 1, "file_name": "val/0.jpg", "width": 100, "height": 100},
                     {"id": 2, "file_name": "val/1.jpg", "width": 100, "height": 100}],
          "categories": [{"id": 0, "name": "General trash"}, {"id": 1, "name": "Paper"}]}
VAL = {**IMAGES, "annotations": [
    {"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0}]}


def test_ensemble_command_fuses_csv_and_json_inputs_and_scores_each_on_val(tmp_path, capsys):
    (tmp_path / "val.json").write_text(json.dumps(VAL))
    # input 1 (CSV) finds image 1's box; input 2 (COCO json) finds image 2's box
    (tmp_path / "one.csv").write_text("PredictionString,image_id\n0 0.9 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
    (tmp_path / "two.json").write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [50, 50, 10, 10],
                                                    "score": 0.8}]))
    code = ensemble_main([str(tmp_path / "one.csv"), str(tmp_path / "two.json"), "--val", str(tmp_path / "val.json"),
                          "--out", str(tmp_path / "fused.csv"), "--method", "wbf"])
    assert code == 0
    out = capsys.readouterr().out
    table = out[out.index("input"):].splitlines()[2:]  # after the header and the rule
    rows = {line.rsplit(None, 3)[0]: [float(v) for v in line.rsplit(None, 3)[1:]] for line in table}
    assert rows[str(tmp_path / "one.csv")][1] == pytest.approx(0.5)  # finds one of two boxes
    assert rows[str(tmp_path / "two.json")][1] == pytest.approx(0.5)
    assert rows["fused (wbf)"][1] == pytest.approx(1.0)  # together they find both
    lines = read_rows(tmp_path / "fused.csv")
    assert [(text, image) for _, text, image in lines] == [("0 0.45000 0.00 0.00 10.00 10.00", "val/0.jpg"),
                                                          ("1 0.40000 50.00 50.00 60.00 60.00", "val/1.jpg")]


def test_ensemble_names_a_bad_input(tmp_path, capsys):
    (tmp_path / "images.json").write_text(json.dumps(IMAGES))
    (tmp_path / "bad.csv").write_text("PredictionString,image_id\n,test/9.jpg\n")
    # A bad input file is a failure of the work (exit 1); a bad command line a usage error (exit 2).
    assert ensemble_main([str(tmp_path / "bad.csv"), "--images", str(tmp_path / "images.json"),
                          "--out", str(tmp_path / "o.csv")]) == 1
    assert "bad.csv line 2: image_id 'test/9.jpg' is not a file_name" in capsys.readouterr().err
    assert ensemble_main([str(tmp_path / "bad.csv"), str(tmp_path / "bad.csv"), "--weights", "1",
                          "--images", str(tmp_path / "images.json"), "--out", str(tmp_path / "o.csv")]) == 2


def test_our_fusion_agrees_with_ensemble_boxes_on_random_cases():
    """The reference implementation (ensemble-boxes, a dev dependency): WBF boxes and scores equal;
    NMS equal once its scores (x weight / sum of weights) are put on our scale (x weight / max weight);
    soft-NMS keeps the same boxes (ensemble-boxes returns their undecayed scores, we the decayed ones)."""
    eb = pytest.importorskip("ensemble_boxes", reason="ensemble-boxes is a dev dependency (pip install -e '.[dev]')")
    rng = np.random.default_rng(0)

    def random_detections(n):
        xy, wh = rng.uniform(0, 0.8, (n, 2)), rng.uniform(0.05, 0.3, (n, 2))
        return Detections(np.clip(np.hstack([xy, xy + wh]), 0, 1), rng.uniform(0.05, 1, n), rng.integers(0, 3, n))

    def rows(boxes, scores, labels, with_scores=True):
        return sorted((int(lb), round(float(s), 5) if with_scores else 0, np.round(b, 5).tolist())
                      for b, s, lb in zip(boxes, scores, labels))

    for _ in range(100):
        inputs = [random_detections(int(rng.integers(1, 25))) for _ in range(int(rng.integers(2, 4)))]
        weights = list(rng.uniform(0.5, 2, len(inputs)))
        iou_thr, skip_thr = float(rng.uniform(0.3, 0.7)), float(rng.choice([0.0, 0.1]))
        lists = ([d.boxes.tolist() for d in inputs], [d.scores.tolist() for d in inputs],
                 [d.labels.tolist() for d in inputs])
        ours = fuse(inputs, "wbf", weights, iou_thr, skip_thr)
        ref = eb.weighted_boxes_fusion(*lists, weights=weights, iou_thr=iou_thr, skip_box_thr=skip_thr)
        assert rows(ours.boxes, ours.scores, ours.labels) == rows(*ref)
        ours = fuse(inputs, "nms", weights, iou_thr)
        boxes, scores, labels = eb.nms(*lists, weights=weights, iou_thr=iou_thr)
        assert rows(ours.boxes, ours.scores, ours.labels) == rows(boxes, scores * sum(weights) / max(weights), labels)
        ours = fuse(inputs, "soft_nms", weights, iou_thr)
        floor = 1e-3 * max(weights) / sum(weights)  # our 1e-3 floor on their score scale
        ref = eb.soft_nms(*lists, weights=weights, iou_thr=iou_thr, sigma=0.5, thresh=floor)
        assert rows(ours.boxes, ours.scores, ours.labels, False) == rows(*ref, with_scores=False)


def test_ensemble_never_overwrites_and_rejects_bad_labels_and_weights(tmp_path, capsys):
    (tmp_path / "images.json").write_text(json.dumps(IMAGES))
    a = tmp_path / "a.csv"
    a.write_text("PredictionString,image_id\n0 0.9 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
    original = a.read_text()
    images = ["--images", str(tmp_path / "images.json")]
    cases = [  # (command line, exit code: 2 for the command line, 1 for an input file, message)
        ([str(a), *images, "--out", str(a)], 2, "is one of the inputs"),
        ([str(a), *images, "--out", str(tmp_path / "images.json")], 2, "is one of the inputs"),
        ([str(a), str(a), *images, "--weights", "0", "0", "--out", str(tmp_path / "o.csv")], 2, "must all be > 0"),
        ([str(a), str(a), *images, "--iou-thr", "2", "--out", str(tmp_path / "o.csv")], 2, "--iou-thr 2.0 must be in"),
        ([str(tmp_path / "images.json"), *images, "--out", str(tmp_path / "o.csv")], 1, "is not a COCO results file"),
    ]
    for args, code, message in cases:
        assert ensemble_main(args) == code, args
        assert message in capsys.readouterr().err
    assert a.read_text() == original and not (tmp_path / "o.csv").exists()
    for label in ("-1", "2", "0.5"):
        (tmp_path / "bad.csv").write_text(f"PredictionString,image_id\n{label} 0.9 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
        assert ensemble_main([str(tmp_path / "bad.csv"), *images, "--out", str(tmp_path / "o.csv")]) == 1
        assert f"bad.csv line 2: label {label} is not a class index (0..1)" in capsys.readouterr().err
    (tmp_path / "o.csv").write_text("mine")
    assert ensemble_main([str(a), *images, "--out", str(tmp_path / "o.csv")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and (tmp_path / "o.csv").read_text() == "mine"
    assert ensemble_main([str(a), *images, "--out", str(tmp_path / "o.csv"), "--overwrite"]) == 0


def test_classes_option_puts_csv_labels_in_the_runs_class_order(tmp_path):
    (tmp_path / "val.json").write_text(json.dumps(VAL))
    # written by a run whose data.classes lists Paper first: label 0 = Paper (id 1)
    (tmp_path / "one.csv").write_text("PredictionString,image_id\n,val/0.jpg\n0 0.8 50 50 60 60,val/1.jpg\n")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("data:\n  classes: [Paper, General trash]\n")
    out = tmp_path / "fused.json"
    assert ensemble_main([str(tmp_path / "one.csv"), "--images", str(tmp_path / "val.json"), "--classes", str(run),
                          "--out", str(out)]) == 0
    assert [r["category_id"] for r in json.loads(out.read_text())] == [1]


def test_nan_scores_are_refused_and_inputs_may_each_have_their_own_class_order(tmp_path, capsys):
    images = {**IMAGES, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (tmp_path / "images.json").write_text(json.dumps(images))
    args = ["--images", str(tmp_path / "images.json"), "--out", str(tmp_path / "o.csv")]
    (tmp_path / "nan.csv").write_text("PredictionString,image_id\n0 nan 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
    assert ensemble_main([str(tmp_path / "nan.csv"), *args]) == 1
    assert "nan.csv line 2: 'nan' is not a finite number" in capsys.readouterr().err
    (tmp_path / "nan.json").write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": NaN}]')
    assert ensemble_main([str(tmp_path / "nan.json"), *args]) == 1
    assert "must be finite numbers" in capsys.readouterr().err and not (tmp_path / "o.csv").exists()
    # Input one was trained with classes (a, b), input two with (b, a): label 0 means a, then b.
    (tmp_path / "ab.csv").write_text("PredictionString,image_id\n0 0.9 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
    (tmp_path / "ba.csv").write_text("PredictionString,image_id\n1 0.8 0 0 10 10,val/0.jpg\n,val/1.jpg\n")
    assert ensemble_main([str(tmp_path / "ab.csv"), str(tmp_path / "ba.csv"), "--classes", "a,b", "b,a", *args]) == 0
    rows = read_rows(tmp_path / "o.csv")
    assert rows[0][1].split()[0] == "0" and len(rows[0][1].split()) == 6  # both say class a: fused into one box
    assert ensemble_main([str(tmp_path / "ab.csv"), str(tmp_path / "ba.csv"), "--classes", "a,b", "b,a", "a,b",
                          *args, "--overwrite"]) == 2
    assert "--classes has 3 values for 2 inputs" in capsys.readouterr().err
