"""evaluate_boxes (faster-coco-eval) against pycocotools on generated data: every stat and every precision
entry equal (==), the ground-truth index reused across calls, and the caller's inputs never written to."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation import coco_metrics
from detect.evaluation.coco_metrics import SUMMARY_KEYS, evaluate_boxes

# Class order is not id order; "jar" (id 9) has no ground truth; id 99 is detected but not evaluated.
CLASSES = ["can", "bottle", "bag", "box", "jar"]
CAT_IDS = [7, 3, 11, 5, 9]
STRAY_CAT = 99
IMAGE_SIZE = 640  # pixels, square


def generated_case(seed: int, num_images: int = 50) -> tuple[dict, list[dict]]:
    """Crowd-free ground truth of 1-8 boxes per image, 8-400 px on a side (so COCO's small < 32² px²,
    medium and large > 96² px² all occur), and detections with misses, duplicates, localisation noise,
    wrong and stray classes, false positives, scores rounded to 2 decimals (ties), and one image with
    more than COCO's 100 detections."""
    rng = np.random.default_rng(seed)
    with_gt = CAT_IDS[:4]
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": IMAGE_SIZE, "height": IMAGE_SIZE}
              for i in range(num_images)]
    annotations, detections = [], []

    def det(image_id: int, cat: int, box, score: float) -> None:
        detections.append({"image_id": image_id, "category_id": cat, "bbox": [round(float(v), 2) for v in box],
                           "score": round(score, 2)})

    for img in images:
        for _ in range(rng.integers(1, 9)):
            side = float(np.exp(rng.uniform(np.log(8), np.log(400))))
            w, h = side * rng.uniform(0.7, 1.4), side * rng.uniform(0.7, 1.4)
            x, y = rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h)
            cat = int(rng.choice(with_gt))
            box = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": cat,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
            if rng.random() < 0.2:  # missed
                continue
            for _ in range(1 + (rng.random() < 0.3)):  # sometimes a duplicate
                noise = rng.normal(0, 0.08, 4)
                label = cat if rng.random() > 0.1 else int(rng.choice(CAT_IDS + [STRAY_CAT]))
                det(img["id"], label, [x + noise[0] * w, y + noise[1] * h, w * (1 + noise[2]), h * (1 + noise[3])],
                    float(rng.uniform(0.3, 1.0)))
        for _ in range(rng.integers(0, 6)):  # false positives
            w, h = rng.uniform(5, 200, 2)
            det(img["id"], int(rng.choice(CAT_IDS)), [rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h),
                                                      w, h], float(rng.uniform(0.0, 0.7)))
    for _ in range(130):  # image 1: more detections than maxDets=100
        w, h = rng.uniform(10, 150, 2)
        det(1, int(rng.choice(with_gt)), [rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h), w, h],
            float(rng.uniform(0.0, 1.0)))
    categories = [{"id": c, "name": n} for c, n in zip(CAT_IDS, CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def pycocotools_eval(gt: dict, detections: list[dict]) -> COCOeval:
    """The reference: plain pycocotools on copies of the inputs (it writes into both)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        if detections:
            dt = coco.loadRes(copy.deepcopy(detections))
        else:  # loadRes refuses an empty list
            dt = COCO()
            dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            dt.createIndex()
        ref = COCOeval(coco, dt, "bbox")
        ref.params.catIds = list(CAT_IDS)
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    return ref


def assert_identical(gt: dict, detections: list[dict]) -> np.ndarray:
    """Asserts == for the 12 stats, the whole precision array and classwise AP / AP50; returns the
    reference precision array."""
    ref = pycocotools_eval(gt, detections)
    stats, precision, column_cats = coco_metrics._evaluate(gt, detections, CAT_IDS)
    assert column_cats == sorted(CAT_IDS)
    assert stats.tolist() == np.asarray(ref.stats).tolist()  # all 12, exactly
    assert precision.shape == ref.eval["precision"].shape and np.array_equal(precision, ref.eval["precision"])

    metrics = evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    assert [metrics[key] for key in SUMMARY_KEYS] == [float(s) for s in ref.stats[:6]]
    for name, cat in zip(CLASSES, CAT_IDS):
        k = sorted(CAT_IDS).index(cat)
        ap, ap50 = ref.eval["precision"][:, :, k, 0, -1], ref.eval["precision"][0, :, k, 0, -1]
        expected = {"AP": float(ap[ap > -1].mean()), "AP50": float(ap50[ap50 > -1].mean())} if (ap > -1).any() \
            else {"AP": None, "AP50": None}
        assert metrics["classwise"][name] == expected, name
    return ref.eval["precision"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_case_equals_pycocotools_exactly(seed):
    gt, detections = generated_case(seed)
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32 ** 2).any() and ((areas > 32 ** 2) & (areas < 96 ** 2)).any() and (areas > 96 ** 2).any()
    reference = assert_identical(gt, detections)
    # The case exercises the repaired precision (pycocotools' 1 / (1 + eps) after one true positive).
    assert (reference == 1.0 / (1.0 + np.spacing(1))).any()
    assert evaluate_boxes(gt, detections, CLASSES, CAT_IDS)["classwise"]["jar"] == {"AP": None, "AP50": None}


def test_few_images_and_tied_scores_equal_pycocotools_exactly():
    gt, detections = generated_case(3, num_images=4)
    for d in detections:
        d["score"] = round(d["score"], 1)  # many ties: the order among equal scores must match too
    assert_identical(gt, detections)


def test_no_detections_equal_pycocotools_exactly():
    gt, _ = generated_case(4, num_images=10)
    assert_identical(gt, [])


def test_repeated_calls_reuse_the_index_and_leave_the_inputs_unchanged():
    gt, detections = generated_case(5, num_images=20)
    for ann in gt["annotations"][::2]:
        del ann["iscrowd"], ann["area"]  # filled in on the index's copies only
    gt_before, detections_before = copy.deepcopy(gt), copy.deepcopy(detections)
    first = evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    index = coco_metrics._indexed_ground_truth(gt)
    second = evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    assert first == second
    assert coco_metrics._indexed_ground_truth(gt) is index  # the index was not rebuilt
    assert gt == gt_before and detections == detections_before
    assert "ignore" in index.coco.anns[1] and "ignore" not in gt["annotations"][0]  # the library's writes stay there
    assert first == evaluate_boxes(copy.deepcopy(gt), detections, CLASSES, CAT_IDS)  # a fresh index agrees


def test_ground_truth_edited_in_place_is_indexed_again():
    gt, detections = generated_case(6, num_images=20)
    before = evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    index = coco_metrics._indexed_ground_truth(gt)
    gt["annotations"][0]["bbox"][2] += 50  # a nested edit, same dict objects
    del gt["annotations"][1:4]
    after = evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    assert coco_metrics._indexed_ground_truth(gt) is not index and after != before
    assert_identical(gt, detections)


def test_detections_on_unknown_images_are_refused():
    gt, detections = generated_case(7, num_images=3)
    detections[0] = {**detections[0], "image_id": 1000}
    with pytest.raises(ValueError, match="image 1000"):
        evaluate_boxes(gt, detections, CLASSES, CAT_IDS)


def test_evaluation_prints_nothing(capsys):
    gt, detections = generated_case(8, num_images=3)
    evaluate_boxes(gt, detections, CLASSES, CAT_IDS)
    evaluate_boxes(gt, [], CLASSES, CAT_IDS)
    assert capsys.readouterr() == ("", "")
