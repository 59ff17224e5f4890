"""`python -m detect.predict`: any folder, glob, image or video, no annotation json. One result per
readable image with boxes in original pixels (the same as detect.test's), drawn files, a corrupt file
named and skipped, one result per video frame, and never an earlier output overwritten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, run_cli, tiny_train_args


def run_predict(*args: str, timeout: int = 600):
    env = {"WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "detect.predict", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tiny_demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    done = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.profile.enabled=false"))
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def write_video(path, frames: list[np.ndarray], fps: int = 5) -> None:
    import av

    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=Fraction(fps))
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def test_a_folder_gives_one_result_per_readable_image_as_detect_test_does(trained_run, tiny_demo_root, tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    for image in sorted((tiny_demo_root / "val").glob("*.jpg")):
        shutil.copy(image, source / image.name)
    (source / "corrupt.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    (source / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "out"
    done = run_predict(f"run={trained_run}", "checkpoint=last", f"source={source}", f"out={out}",
                       "score_threshold=0.05", f"coco_json={tiny_demo_root / 'test.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "predictions.json").read_text())
    readable = sorted((tiny_demo_root / "val").glob("*.jpg"))
    assert [r["file"] for r in results["images"]] == [str(source / p.name) for p in readable]
    assert [u["file"] for u in results["unreadable"]] == [str(source / "corrupt.jpg")]
    assert "1 unreadable file(s): corrupt.jpg" in done.stderr
    for record in results["images"]:
        with Image.open(record["file"]) as image:
            assert (record["width"], record["height"]) == image.size  # original pixels, non-square images
        for det in record["detections"]:
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]
            assert det["class"] == results["classes"][det["label"] - 1]
    assert sorted(p.name for p in (out / "drawn").iterdir()) == [p.name for p in readable]

    # detect.test's predictions of the same images (its test.json lists them) hold the same boxes.
    tested = subprocess.run([sys.executable, "-m", "detect.test", f"run={trained_run}", "checkpoint=last",
                             "mode=predict", "workers=0"], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={"WANDB_MODE": "disabled", "DETECT_MEMBER": "tester", "PATH": "/usr/bin:/bin"})
    assert tested.returncode == 0, tested.stderr[-3000:]
    theirs = json.loads(next(trained_run.glob("test/predict_*/predictions.bbox.json")).read_text())
    ours = json.loads((out / "coco_results.bbox.json").read_text())

    def boxes(results):
        return sorted((r["image_id"], r["category_id"], round(r["score"], 3), *r["bbox"]) for r in results)

    assert ours and len(ours) == len(theirs)
    for mine, test in zip(boxes(ours), boxes(theirs)):  # both round to 0.01 px, one before xyxy -> xywh
        assert mine[:3] == test[:3] and np.allclose(mine[3:], test[3:], atol=0.03), (mine, test)


def test_a_video_gives_one_result_per_frame_and_a_drawn_video(trained_run, tiny_demo_root, tmp_path):
    image = np.asarray(Image.open(sorted((tiny_demo_root / "val").glob("*.jpg"))[0]).convert("RGB").resize((128, 96)))
    write_video(tmp_path / "clip.mp4", [np.roll(image, 4 * i, axis=1).copy() for i in range(7)])
    out = tmp_path / "out"
    done = run_predict(f"run={trained_run}", "checkpoint=last", f"source={tmp_path / 'clip.mp4'}", f"out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    video = json.loads((out / "predictions.json").read_text())["videos"][0]
    assert [f["frame"] for f in video["frames"]] == list(range(7)) and video["fps"] == 5
    assert (out / "drawn" / "clip.mp4").stat().st_size > 1000
    every = run_predict(f"run={trained_run}", "checkpoint=last", f"source={tmp_path / 'clip.mp4'}",
                        f"out={tmp_path / 'every3'}", "every=3", "draw=false")
    assert every.returncode == 0, every.stderr[-3000:]
    frames = json.loads((tmp_path / "every3" / "predictions.json").read_text())["videos"][0]["frames"]
    assert [f["frame"] for f in frames] == [0, 3, 6] and not (tmp_path / "every3" / "drawn").exists()


def test_an_earlier_output_is_never_overwritten_and_bad_keys_name_themselves(trained_run, tiny_demo_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text("earlier")
    done = run_predict(f"run={trained_run}", f"source={tiny_demo_root / 'val'}", f"out={out}")
    assert done.returncode == 2 and "already holds files" in done.stderr and "Traceback" not in done.stderr
    assert (out / "predictions.json").read_text() == "earlier"
    wrong = run_predict(f"run={trained_run}", f"source={tiny_demo_root / 'val'}", "score_treshold=0.5")
    assert wrong.returncode == 2 and "'score_treshold=0.5'" in wrong.stderr
    nothing = run_predict(f"run={trained_run}", f"source={tmp_path / 'empty' / '*.jpg'}")
    assert nothing.returncode == 2 and "no image or video there" in nothing.stderr


def test_tta_predicts_through_detect_tests_fusion_at_the_models_scales(trained_run, tiny_demo_root, tmp_path):
    out = tmp_path / "tta"
    done = run_predict(f"run={trained_run}", "checkpoint=last", f"source={tiny_demo_root / 'val'}", f"out={out}",
                       "tta=true", "tta_flip=false", "score_threshold=0.05", "draw=false")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "predictions.json").read_text())
    assert results["tta"]["scales"] == [64, 96, 128]  # 0.8x, 1x, 1.2x the run's 96 px, rounded to 32
    detections = [d for image in results["images"] for d in image["detections"]]
    assert detections and all(d["score"] >= 0.05 and 1 <= d["label"] <= len(results["classes"]) for d in detections)
