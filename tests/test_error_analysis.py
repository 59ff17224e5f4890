"""Error analysis: the matching rule on hand-made boxes, and the command on a tiny data set in tmp_path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detect.error_analysis import main as error_analysis
from detect.evaluation.matching import match_image
from detect.evaluation.submission import prediction_string, write_submission
from detect.plots.errors import ERROR_RED, HEADER_HEIGHT, PALETTE, TICK_GREEN

# One image with every kind of outcome. gt: A (class 0), B (class 1), C (class 0, missed).
GT_BOXES = np.array([[10, 10, 50, 50], [100, 100, 150, 150], [200, 200, 240, 240]], float)
GT_LABELS = np.array([0, 1, 0])
PREDS = [  # (label, score, box xyxy), what it is at score_thr 0.3, IoU 0.5
    (0, 0.90, [10, 10, 50, 50]),      # TP on A
    (0, 0.80, [12, 12, 52, 52]),      # duplicate: IoU 0.82 with A, which the 0.9 box took
    (1, 0.95, [100, 100, 150, 150]),  # TP on B
    (0, 0.70, [100, 100, 150, 150]),  # wrong class: B is class 1
    (0, 0.60, [220, 220, 260, 260]),  # localisation: IoU 400 / 2800 = 0.14 with C
    (0, 0.50, [400, 250, 430, 280]),  # background
    (0, 0.10, [200, 200, 240, 240]),  # would find C, but scores under the threshold
]
P_LABELS = np.array([p[0] for p in PREDS])
P_SCORES = np.array([p[1] for p in PREDS])
P_BOXES = np.array([p[2] for p in PREDS], float)


def test_matching_names_every_error_kind():
    m = match_image(GT_BOXES, GT_LABELS, P_BOXES, P_SCORES, P_LABELS, iou_thr=0.5, score_thr=0.3)
    assert m.tp.tolist() == [2, 0] and m.tp_gt.tolist() == [1, 0]  # by descending score
    assert dict(zip(m.fp.tolist(), m.fp_kinds)) == {1: "duplicate", 3: "wrong class", 4: "localisation",
                                                    5: "background"}
    assert m.fn.tolist() == [2]
    assert m.fp_counts() == {"wrong class": 1, "localisation": 1, "duplicate": 1, "background": 1}
    assert (m.num_errors, m.recall) == (5, 2 / 3)
    low = match_image(GT_BOXES, GT_LABELS, P_BOXES, P_SCORES, P_LABELS, iou_thr=0.5, score_thr=0.0)
    assert low.fn.tolist() == [] and 6 in low.tp.tolist()  # the 0.1 box now finds C
    strict = match_image(GT_BOXES, GT_LABELS, P_BOXES, P_SCORES, P_LABELS, iou_thr=0.9, score_thr=0.3)
    assert dict(zip(strict.fp.tolist(), strict.fp_kinds))[1] == "localisation"  # 0.82 < 0.9


def test_crowd_gt_is_never_missed_and_predictions_inside_it_are_ignored():
    m = match_image(np.array([[0, 0, 100, 100]], float), np.array([0]), np.array([[10, 10, 40, 40]], float),
                    np.array([0.9]), np.array([0]), gt_crowd=np.array([True]))
    assert (m.tp.tolist(), m.fp.tolist(), m.fn.tolist(), m.ignored.tolist()) == ([], [], [], [0])


def test_empty_image_and_no_predictions():
    m = match_image(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert (m.num_errors, m.recall) == (0, 1.0)


# The command: three images; class 0 = category id 5 "bottle", class 1 = id 9 "can" (sorted by id).
IMAGES = [  # (id, file_name, width, height)
    (1, "val/one.jpg", 480, 320),    # the hand-made case above: 4 FP + 1 FN
    (2, "val/two.jpg", 300, 200),    # one TP, one background FP: 1 error, recall 1
    (3, "val/three.jpg", 200, 300),  # one miss: 1 error, recall 0 -> ranks before two.jpg
]
CATEGORY_IDS = [5, 9]


@pytest.fixture
def data(tmp_path):
    (tmp_path / "val").mkdir()
    rng = np.random.default_rng(0)
    for _, name, w, h in IMAGES:
        pixels = (rng.random((h, w, 3)) * 60 + 100).astype(np.uint8)  # grey noise, no palette colours
        Image.fromarray(pixels).save(tmp_path / name)
    gt = [(1, b, lab) for b, lab in zip(GT_BOXES, GT_LABELS)] + [(2, [20, 20, 120, 120], 1), (3, [10, 10, 60, 60], 0)]
    coco = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in IMAGES],
        "categories": [{"id": 9, "name": "can"}, {"id": 5, "name": "bottle"}],
        "annotations": [{"id": k, "image_id": i, "category_id": CATEGORY_IDS[lab], "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for k, (i, b, lab) in enumerate(gt, 1)],
    }
    (tmp_path / "val.json").write_text(json.dumps(coco))
    preds = [(1, lab, s, b) for lab, s, b in PREDS] + [(2, 1, 0.9, [21, 21, 119, 121]),
                                                      (2, 0, 0.8, [200, 150, 260, 190])]
    results = [{"image_id": i, "category_id": CATEGORY_IDS[lab], "score": s,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, lab, s, b in preds]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "predictions.bbox.json").write_text(json.dumps(results))
    rows = [[prediction_string([(lab, s, *b) for j, lab, s, b in preds if j == i]), name] for i, name, _, _ in IMAGES]
    write_submission(tmp_path / "run" / "submission.csv", rows)
    return tmp_path


def run(data, predictions, *extra):
    return error_analysis([str(data / "run" / predictions), "--gt", str(data / "val.json"), *extra])


def read_errors(folder):
    with (folder / "errors.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_worst_images_are_drawn_as_pngs_with_counts_in_errors_csv(data, capsys):
    assert run(data, "predictions.bbox.json", "--max-side", "400") == 0
    out = data / "run" / "error_analysis"  # the default: beside the predictions
    rows = read_errors(out)
    assert [r["file_name"] for r in rows] == ["val/one.jpg", "val/three.jpg", "val/two.jpg"]  # FP + FN, then recall
    assert {k: rows[0][k] for k in ("rank", "tp", "fp", "fn", "fp_wrong_class", "fp_localisation", "fp_duplicate",
                                    "fp_background")} == {"rank": "1", "tp": "2", "fp": "4", "fn": "1",
                                                          "fp_wrong_class": "1", "fp_localisation": "1",
                                                          "fp_duplicate": "1", "fp_background": "1"}
    assert [(r["tp"], r["fp"], r["fn"], r["fp_background"]) for r in rows[1:]] == [("0", "0", "1", "0"),
                                                                                    ("1", "1", "0", "1")]
    assert sorted(p.name for p in out.glob("*.png")) == ["1_val_one.png", "2_val_three.png", "3_val_two.png"]
    # Longer side = min(original, --max-side), never enlarged; the header strip comes on top.
    expected = {"1_val_one.png": (400, 267 + HEADER_HEIGHT), "2_val_three.png": (200, 300 + HEADER_HEIGHT),
                "3_val_two.png": (300, 200 + HEADER_HEIGHT)}
    for row in rows:
        with Image.open(out / row["png"]) as png:
            assert png.format == "PNG" and png.size == expected[row["png"]]
            colours = {c for _, c in png.convert("RGB").getcolors(maxcolors=1 << 20)}
        assert ERROR_RED in colours  # every drawn image has an FP tag or a miss
    with Image.open(out / "1_val_one.png") as png:
        colours = {c for _, c in png.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert {PALETTE[0], PALETTE[1], TICK_GREEN} <= colours  # both class colours and the TP tick
    table = capsys.readouterr().out
    bottle = next(line for line in table.splitlines() if line.startswith("bottle")).split()
    assert bottle[1:5] == ["3", "1", "5", "2"]  # gt, TP, FP, FN of class 0 over all images
    assert next(line for line in table.splitlines() if line.startswith("all")).split()[1:5] == ["5", "3", "5", "2"]


def test_worst_one_and_csv_input_give_the_same_counts(data):
    out_json, out_csv = data / "from_json", data / "from_csv"
    assert run(data, "predictions.bbox.json", "--out", str(out_json)) == 0
    assert run(data, "submission.csv", "--out", str(out_csv)) == 0
    assert read_errors(out_csv) == read_errors(out_json)
    assert run(data, "predictions.bbox.json", "--worst", "1", "--out", str(data / "worst1")) == 0
    rows = read_errors(data / "worst1")
    assert [(r["file_name"], r["fp"], r["fn"]) for r in rows] == [("val/one.jpg", "4", "1")]
    assert [p.name for p in (data / "worst1").glob("*.png")] == ["1_val_one.png"]


def test_images_by_file_name_id_or_base_name(data):
    out = data / "chosen"
    assert run(data, "submission.csv", "--images", "val/two.jpg", "3", "one.jpg", "--out", str(out)) == 0
    rows = read_errors(out)
    assert [(r["file_name"], r["rank"], r["png"]) for r in rows] == [
        ("val/two.jpg", "3", "1_val_two.png"), ("val/three.jpg", "2", "2_val_three.png"),
        ("val/one.jpg", "1", "3_val_one.png")]
    with Image.open(out / "3_val_one.png") as png:
        assert png.size == (480, 320 + HEADER_HEIGHT)  # under the default --max-side 1024: kept as it is


def test_predictions_of_unknown_images_and_missing_files_exit_1_with_one_line(data, capsys):
    results = json.loads((data / "run" / "predictions.bbox.json").read_text())
    results.append({"image_id": 99, "category_id": 5, "score": 0.9, "bbox": [0, 0, 10, 10]})
    (data / "run" / "test_predictions.json").write_text(json.dumps(results))
    assert run(data, "test_predictions.json") == 1
    err = capsys.readouterr().err
    assert "image 99" in err and "--gt val.json" in err and "Traceback" not in err and len(err.splitlines()) == 1
    with (data / "run" / "submission.csv").open("a") as f:
        f.write('"0 0.9 1 1 5 5",test/0001.jpg\n')
    assert run(data, "submission.csv") == 1
    assert "'test/0001.jpg' is not a file_name of --gt val.json" in capsys.readouterr().err
    assert run(data, "missing.json") == 1
    assert "does not exist" in capsys.readouterr().err
    assert run(data, "predictions.bbox.json", "--images", "nope.jpg") == 1
    assert "--images: nope.jpg" in capsys.readouterr().err
    assert run(data, "predictions.bbox.json", "--iou", "0") == 2  # the command line itself: a usage error
    assert capsys.readouterr().err.strip() == "error: --iou 0.0 must be in (0, 1]"
    (data / "val" / "one.jpg").unlink()
    assert run(data, "predictions.bbox.json") == 1
    assert "give --root" in capsys.readouterr().err


def test_the_command_imports_no_torch():
    code = "import sys, detect.error_analysis; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_matching_agrees_with_pycocotools_on_random_images():
    """TP / FP / FN totals equal COCOeval's matches at IoU 0.5 (all areas, no detection cap)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    images, anns, results, ours = [], [], [], [0, 0, 0]
    for image_id in range(1, 9):
        gt_xy = rng.uniform(0, 150, (6, 2))
        gt_boxes = np.hstack([gt_xy, gt_xy + rng.uniform(10, 50, (6, 2))])
        gt_labels = rng.integers(0, 3, 6)
        pick = rng.integers(0, 6, 10)
        pred_boxes = gt_boxes[pick] + rng.normal(0, 6, (10, 4))
        pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
        pred_labels = np.where(rng.random(10) < 0.8, gt_labels[pick], rng.integers(0, 3, 10))
        scores = rng.random(10)
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.jpg"})
        anns += [{"id": len(anns) + k + 1, "image_id": image_id, "category_id": int(lab) + 1, "iscrowd": 0,
                  "bbox": [*b[:2], *(b[2:] - b[:2])], "area": float(np.prod(b[2:] - b[:2]))}
                 for k, (b, lab) in enumerate(zip(gt_boxes, gt_labels))]
        results += [{"image_id": image_id, "category_id": int(lab) + 1, "score": float(s),
                     "bbox": [*b[:2], *(b[2:] - b[:2])]} for b, lab, s in zip(pred_boxes, pred_labels, scores)]
        m = match_image(gt_boxes, gt_labels, pred_boxes, scores, pred_labels, iou_thr=0.5)
        ours = [ours[0] + len(m.tp), ours[1] + len(m.fp), ours[2] + len(m.fn)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i} for i in (1, 2, 3)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.iouThrs, ev.params.maxDets = np.array([0.5]), [1000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
    done = [e for e in ev.evalImgs if e is not None]
    coco = [sum(int((e["dtMatches"][0] > 0).sum()) for e in done),
            sum(int((e["dtMatches"][0] == 0).sum()) for e in done),
            sum(int((e["gtMatches"][0] == 0).sum()) for e in done)]
    assert ours == coco and ours[0] > 10 and ours[1] > 5 and ours[2] > 5
