"""The submission CSV: written in the competition's format, read back exactly, every broken kind named."""

from __future__ import annotations

import pytest

from detect.check_submission import main as check_main
from detect.evaluation.submission import (
    check_submission,
    submission_rows,
    submission_to_results,
    write_submission,
)

TEST_COCO = {
    "images": [{"id": 7, "file_name": "test/0000.jpg", "width": 200, "height": 100},
               {"id": 3, "file_name": "test/0001.jpg", "width": 50, "height": 80}],
    # ids deliberately not 0..K-1 and not in class order: labels must follow the class list
    "categories": [{"id": 5, "name": "Paper"}, {"id": 2, "name": "General trash"}],
}
CATEGORY_IDS = [2, 5]  # class 0 = General trash (json id 2), class 1 = Paper (json id 5)
RESULTS = [
    {"image_id": 7, "category_id": 5, "bbox": [10.0, 20.0, 30.5, 40.25], "score": 0.5},
    {"image_id": 7, "category_id": 2, "bbox": [0.0, 0.0, 200.0, 100.0], "score": 0.91234},
]


def write(tmp_path, text: str):
    path = tmp_path / "submission.csv"
    path.write_text(text)
    return path


def test_rows_follow_test_json_order_keep_empty_images_and_use_class_indices(tmp_path):
    rows = submission_rows(RESULTS, TEST_COCO["images"], CATEGORY_IDS)
    assert rows == [["0 0.91234 0.00 0.00 200.00 100.00 1 0.50000 10.00 20.00 40.50 60.25", "test/0000.jpg"],
                    ["", "test/0001.jpg"]]
    path = tmp_path / "submission.csv"
    write_submission(path, rows)
    assert path.read_text().splitlines() == [
        "PredictionString,image_id",
        "0 0.91234 0.00 0.00 200.00 100.00 1 0.50000 10.00 20.00 40.50 60.25,test/0000.jpg",
        ",test/0001.jpg",
    ]
    assert check_submission(path, TEST_COCO, num_classes=2) == []
    back = submission_to_results(path, TEST_COCO, CATEGORY_IDS)
    assert sorted((r["category_id"], r["bbox"], r["score"]) for r in back) == sorted(
        (r["category_id"], r["bbox"], r["score"]) for r in [{**RESULTS[0]}, {**RESULTS[1], "score": 0.91234}])


@pytest.mark.parametrize("text, message", [
    ("id,PredictionString,image_id\n", "line 1 must be the header PredictionString,image_id (no index column)"),
    ("PredictionString,image_id\n0,,test/0000.jpg\n,test/0001.jpg\n", "line 2: 3 columns, expected 2"),
    ("PredictionString,image_id\n,test/0000.jpg\n,test/0000.jpg\n,test/0001.jpg\n",
     "line 3: image_id 'test/0000.jpg' again (first on line 2)"),
    ("PredictionString,image_id\n,test/0000.jpg\n", "1 image(s) of test.json have no row: test/0001.jpg"),
    ("PredictionString,image_id\n,test/0000.jpg\n,test/0001.jpg\n,test/9999.jpg\n",
     "line 4: image_id 'test/9999.jpg' is not a file_name of test.json"),
    ("PredictionString,image_id\n0 0.5 1 2 3,test/0000.jpg\n,test/0001.jpg\n",
     "line 2 (test/0000.jpg): 5 numbers, not a multiple of 6"),
    ("PredictionString,image_id\n0 high 1 2 3 4,test/0000.jpg\n,test/0001.jpg\n", "'high' is not a number"),
    ("PredictionString,image_id\n2 0.5 1 2 3 4,test/0000.jpg\n,test/0001.jpg\n",
     "line 2 (test/0000.jpg), box 1: label 2 is not a class index 0..1"),
    ("PredictionString,image_id\n0.5 0.5 1 2 3 4,test/0000.jpg\n,test/0001.jpg\n", "label 0.5 is not a class index"),
    ("PredictionString,image_id\n,test/0000.jpg\n1 1.5 1 2 3 4,test/0001.jpg\n",
     "line 3 (test/0001.jpg), box 1: score 1.5 is outside [0, 1]"),
    ("PredictionString,image_id\n0 0.5 1 2 3 4 1 0.4 10 10 60 20,test/0001.jpg\n,test/0000.jpg\n",
     "line 2 (test/0001.jpg), box 2: box (10, 10, 60, 20) is empty or outside the 50x80 image"),
    ("PredictionString,image_id\n0 0.5 30 2 10 4,test/0000.jpg\n,test/0001.jpg\n", "box (30, 2, 10, 4) is empty"),
])
def test_the_checker_names_each_kind_of_problem_with_its_line(tmp_path, text, message, capsys):
    problems = check_submission(write(tmp_path, text), TEST_COCO, num_classes=2)
    assert any(message in p for p in problems), problems
    test_json = tmp_path / "test.json"
    test_json.write_text(__import__("json").dumps(TEST_COCO))
    assert check_main([str(tmp_path / "submission.csv"), str(test_json)]) == 1
    assert message in capsys.readouterr().out


def test_the_checker_cli_accepts_a_valid_file(tmp_path, capsys):
    import json

    write_submission(tmp_path / "s.csv", submission_rows(RESULTS, TEST_COCO["images"], CATEGORY_IDS))
    (tmp_path / "test.json").write_text(json.dumps({"images": TEST_COCO["images"]}))  # no categories listed
    assert check_main([str(tmp_path / "s.csv"), str(tmp_path / "test.json"), "--num-classes", "2"]) == 0
    assert "valid (2 images, 2 classes)" in capsys.readouterr().out
    assert check_main([str(tmp_path / "s.csv"), str(tmp_path / "test.json")]) == 2
    assert "pass --num-classes N" in capsys.readouterr().err
