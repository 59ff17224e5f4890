"""COCO box metrics: exact pycocotools numbers, classwise AP, null for classes without ground truth."""

from __future__ import annotations

import contextlib
import io

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation.coco_metrics import SUMMARY_KEYS, evaluate_boxes, format_classwise_table

CLASSES = ["cat", "dog", "bird"]
CAT_IDS = [1, 2, 3]


def ground_truth() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in (1, 2, 3)]
    boxes = [(1, 1, [10, 10, 50, 50]), (1, 2, [100, 100, 60, 40]), (2, 1, [20, 30, 40, 40]),
             (2, 2, [120, 20, 30, 70]), (3, 1, [5, 5, 150, 150]), (3, 2, [60, 60, 20, 20])]
    annotations = [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0} for k, (img, cat, box) in enumerate(boxes)]
    categories = [{"id": i, "name": n} for i, n in zip(CAT_IDS, CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_predictions_equal_to_ground_truth_score_one():
    gt = ground_truth()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]
    metrics = evaluate_boxes(gt, dets, CLASSES, CAT_IDS)
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert metrics["classwise"]["cat"] == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
    assert metrics["classwise"]["bird"] == {"AP": None, "AP50": None}  # no ground truth: null, not NaN


def test_misses_and_false_positives_match_pycocotools_exactly():
    gt = ground_truth()
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [12, 11, 48, 50], "score": 0.95},  # good
        {"image_id": 1, "category_id": 2, "bbox": [100, 100, 30, 40], "score": 0.6},  # IoU 0.5
        {"image_id": 1, "category_id": 1, "bbox": [150, 150, 40, 40], "score": 0.9},  # false positive
        {"image_id": 2, "category_id": 1, "bbox": [25, 35, 40, 40], "score": 0.4},  # loose
        {"image_id": 2, "category_id": 3, "bbox": [120, 20, 30, 70], "score": 0.7},  # wrong class
        {"image_id": 3, "category_id": 1, "bbox": [5, 5, 140, 150], "score": 0.8},  # good; dog missed
    ]
    ours = evaluate_boxes(gt, dets, CLASSES, CAT_IDS)

    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ref = COCOeval(coco, coco.loadRes(dets), "bbox")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    for i, key in enumerate(SUMMARY_KEYS):
        assert ours[key] == ref.stats[i], key
    assert 0 < ours["bbox_mAP_50"] < 1
    cat50 = ref.eval["precision"][0, :, 0, 0, -1]
    assert ours["classwise"]["cat"]["AP50"] == pytest.approx(cat50[cat50 > -1].mean())
    assert ours["classwise"]["bird"] == {"AP": None, "AP50": None}


def test_no_detections_give_zero_not_a_crash():
    metrics = evaluate_boxes(ground_truth(), [], CLASSES, CAT_IDS)
    assert metrics["bbox_mAP_50"] == 0.0 and metrics["classwise"]["dog"]["AP50"] == 0.0
    assert metrics["classwise"]["bird"]["AP"] is None


def test_table_lists_every_class_and_the_mean():
    gt = ground_truth()
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9}]
    table = format_classwise_table(evaluate_boxes(gt, dets, CLASSES, CAT_IDS))
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "AP" and lines[0].split("|")[2].strip() == "AP50"
    assert [line.split("|")[0].strip() for line in lines[2:5]] == CLASSES
    assert "n/a" in lines[4] and lines[-1].startswith("mean (bbox_mAP)")


def test_classwise_ap_follows_the_class_names_when_ids_are_not_in_class_order():
    gt = ground_truth()
    # Only the dogs (id 2) are found, perfectly; the classes are listed with dog last.
    dets = [{"image_id": a["image_id"], "category_id": 2, "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"] if a["category_id"] == 2]
    metrics = evaluate_boxes(gt, dets, ["bird", "cat", "dog"], [3, 1, 2])
    assert metrics["classwise"]["dog"]["AP50"] == pytest.approx(1.0)
    assert metrics["classwise"]["cat"]["AP50"] == 0.0
    assert metrics["classwise"]["bird"]["AP50"] is None


def test_ground_truth_without_iscrowd_or_area_is_scored():
    gt = ground_truth()
    for ann in gt["annotations"]:
        del ann["iscrowd"], ann["area"]
    dets = [{**{k: a[k] for k in ("image_id", "category_id", "bbox")}, "score": 0.9} for a in gt["annotations"]]
    assert evaluate_boxes(gt, dets, CLASSES, CAT_IDS)["bbox_mAP_50"] == pytest.approx(1.0)
    assert "iscrowd" not in gt["annotations"][0]  # the caller's dict is left as it was


def test_no_detections_report_minus_one_for_absent_object_sizes():
    gt = ground_truth()
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] > 32 ** 2]  # no small objects left
    metrics = evaluate_boxes(gt, [], CLASSES, CAT_IDS)
    assert metrics["bbox_mAP_s"] == -1.0 and metrics["bbox_mAP_m"] == 0.0
