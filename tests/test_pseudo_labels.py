"""Pseudo-labels: confident CSV boxes become COCO annotations, merged into train.json without id clashes."""

from __future__ import annotations

import json

from detect.pseudo_labels import main as pseudo_main

# test.json without categories, as in the competition
TEST = {"images": [{"id": 1, "file_name": "test/0.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "test/1.jpg", "width": 100, "height": 80},
                   {"id": 3, "file_name": "test/2.jpg", "width": 100, "height": 80}]}
TRAIN = {"images": [{"id": 10, "file_name": "train/0.jpg", "width": 100, "height": 80}],
         "annotations": [{"id": 40, "image_id": 10, "category_id": 7, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
         "categories": [{"id": 7, "name": "Paper"}, {"id": 3, "name": "General trash"}]}
CSV = ("PredictionString,image_id\n"
       "0 0.9 10 10 30 40 1 0.2 0 0 5 5,test/0.jpg\n"   # keeps the 0.9 General trash box (label 0 = id 3)
       "1 0.3 10 10 20 20,test/1.jpg\n"                  # nothing above 0.5: the image is left out
       "1 0.55 50 20 90 70,test/2.jpg\n")                # a Paper box (label 1 = id 7)


def write_inputs(tmp_path):
    for name, content in [("test.json", json.dumps(TEST)), ("train.json", json.dumps(TRAIN)), ("sub.csv", CSV)]:
        (tmp_path / name).write_text(content)


def test_confident_boxes_become_annotations_of_the_images_that_keep_one(tmp_path, capsys):
    write_inputs(tmp_path)
    assert pseudo_main([str(tmp_path / "sub.csv"), str(tmp_path / "test.json"), "--categories",
                        str(tmp_path / "train.json"), "--out", str(tmp_path / "pseudo.json")]) == 0
    pseudo = json.loads((tmp_path / "pseudo.json").read_text())
    assert [img["file_name"] for img in pseudo["images"]] == ["test/0.jpg", "test/2.jpg"]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["score"]) for a in pseudo["annotations"]] == [
        (1, 3, [10.0, 10.0, 20.0, 30.0], 0.9), (3, 7, [50.0, 20.0, 40.0, 50.0], 0.55)]
    assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in pseudo["annotations"])
    assert "2 boxes (score >= 0.5) on 2 of 3 test images" in capsys.readouterr().out


def test_merging_gives_fresh_ids_and_keeps_the_training_file(tmp_path):
    write_inputs(tmp_path)
    out = tmp_path / "train_pseudo.json"
    assert pseudo_main([str(tmp_path / "sub.csv"), str(tmp_path / "test.json"), "--merge-into",
                        str(tmp_path / "train.json"), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert json.loads((tmp_path / "train.json").read_text()) == TRAIN  # the input is untouched
    assert [img["id"] for img in merged["images"]] == [10, 11, 12]
    assert [a["id"] for a in merged["annotations"]] == [40, 41, 42]
    assert {a["image_id"] for a in merged["annotations"][1:]} == {11, 12}
    assert merged["categories"] == TRAIN["categories"]

    from detect.data.coco import CocoDetection  # the merged file is a valid training file

    dataset = CocoDetection(tmp_path, out, keep_empty=False)
    assert len(dataset) == 3 and dataset.target(1)["labels"].tolist() == [dataset.label_of_category[3]]


def test_wrong_inputs_are_named(tmp_path, capsys):
    write_inputs(tmp_path)
    args = [str(tmp_path / "sub.csv"), str(tmp_path / "test.json")]
    # Exit 1 for what is wrong in an input file, 2 for what is wrong on the command line (detect/cli.py).
    assert pseudo_main([*args, "--out", str(tmp_path / "p.json")]) == 1  # test.json has no categories
    assert "lists no categories: pass --categories train.json" in capsys.readouterr().err
    train = str(tmp_path / "train.json")
    assert pseudo_main([*args, "--merge-into", train, "--out", train]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    clash = {**TRAIN, "images": [*TRAIN["images"], {"id": 11, "file_name": "test/0.jpg", "width": 1, "height": 1}]}
    (tmp_path / "clash.json").write_text(json.dumps(clash))
    assert pseudo_main([*args, "--merge-into", str(tmp_path / "clash.json"), "--out", str(tmp_path / "m.json")]) == 1
    assert "already in the training file, e.g. test/0.jpg" in capsys.readouterr().err
    (tmp_path / "exists.json").write_text("{}")
    assert pseudo_main([*args, "--categories", train, "--out", str(tmp_path / "exists.json")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_a_repeated_image_or_a_bad_label_is_refused(tmp_path, capsys):
    write_inputs(tmp_path)
    args = ["--categories", str(tmp_path / "train.json"), "--out", str(tmp_path / "p.json")]
    (tmp_path / "dup.csv").write_text(CSV + "0 0.9 1 1 5 5,test/0.jpg\n")
    assert pseudo_main([str(tmp_path / "dup.csv"), str(tmp_path / "test.json"), *args]) == 1
    assert "line 5: image_id 'test/0.jpg' again (first on line 2)" in capsys.readouterr().err
    (tmp_path / "label.csv").write_text("PredictionString,image_id\n2 0.9 1 1 5 5,test/0.jpg\n")
    assert pseudo_main([str(tmp_path / "label.csv"), str(tmp_path / "test.json"), *args]) == 1
    assert "label 2 is not a class index (0..1)" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_nan_score_is_refused_not_copied(tmp_path, capsys):
    write_inputs(tmp_path)
    (tmp_path / "nan.csv").write_text("PredictionString,image_id\n0 nan 1 1 5 5,test/0.jpg\n")
    args = ["--categories", str(tmp_path / "train.json"), "--out", str(tmp_path / "p.json")]
    assert pseudo_main([str(tmp_path / "nan.csv"), str(tmp_path / "test.json"), *args]) == 1
    assert "line 2: 'nan' is not a finite number" in capsys.readouterr().err and not (tmp_path / "p.json").exists()
