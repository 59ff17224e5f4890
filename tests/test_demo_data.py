"""The embedded demo set: deterministic, COCO-valid, the 10 trash classes, a real detection task."""

from __future__ import annotations

import hashlib
import json

from PIL import Image

from detect.data.demo import TRASH_CLASSES, ensure_demo_data


def digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    a = ensure_demo_data(tmp_path / "a", seed=3, num_train=6, num_val=2, min_px=96, max_px=128)
    b = ensure_demo_data(tmp_path / "b", seed=3, num_train=6, num_val=2, min_px=96, max_px=128)
    c = ensure_demo_data(tmp_path / "c", seed=4, num_train=6, num_val=2, min_px=96, max_px=128)
    assert digest(a) == digest(b) != digest(c)


def test_existing_set_is_reused_and_a_changed_spec_regenerates(tmp_path):
    root = ensure_demo_data(tmp_path / "d", seed=0, num_train=4, num_val=2, min_px=96, max_px=128)
    stamp = (root / "train.json").stat().st_mtime_ns
    ensure_demo_data(root, seed=0, num_train=4, num_val=2, min_px=96, max_px=128)
    assert (root / "train.json").stat().st_mtime_ns == stamp
    ensure_demo_data(root, seed=0, num_train=5, num_val=2, min_px=96, max_px=128)
    assert len(json.loads((root / "train.json").read_text())["images"]) == 5


def test_annotations_are_valid_coco_with_the_trash_classes(tiny_demo_root):
    coco = json.loads((tiny_demo_root / "train.json").read_text())
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == TRASH_CLASSES
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for img in coco["images"]:
        with Image.open(tiny_demo_root / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"]) and im.format == "JPEG"
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height


def test_default_set_has_many_objects_all_classes_overlaps_and_scale_variation(tmp_path):
    root = ensure_demo_data(tmp_path / "demo", seed=0, num_train=60, num_val=2)
    coco = json.loads((root / "train.json").read_text())
    per_image = {}
    for ann in coco["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    assert sum(len(v) for v in per_image.values()) / len(coco["images"]) >= 3  # several objects per image
    assert {a["category_id"] for a in coco["annotations"]} == set(range(10))
    areas = sorted(a["area"] for a in coco["annotations"])
    assert areas[-1] / areas[0] > 20  # small and large objects

    def overlap(a, b):
        ax, ay, aw, ah = a["bbox"]
        bx, by, bw, bh = b["bbox"]
        return min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by)

    overlapping = sum(any(overlap(a, b) for b in anns if b is not a) for anns in per_image.values() for a in anns)
    assert overlapping >= 10  # some objects occlude others


def test_two_processes_generating_at_once_both_end_with_the_complete_set(tmp_path):
    import multiprocessing as mp

    root = tmp_path / "race"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=ensure_demo_data, args=(root,),
                         kwargs={"seed": 1, "num_train": 6, "num_val": 2, "min_px": 96, "max_px": 128})
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(json.loads((root / "train.json").read_text())["images"]) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-")]  # no temp folders left


def test_a_users_own_folder_is_never_replaced_by_demo_data(tmp_path):
    import pytest

    from detect.errors import DataConfigError

    own = tmp_path / "my_data"
    own.mkdir()
    (own / "train.json").write_text('{"images": []}')
    with pytest.raises(DataConfigError, match="is not a generated demo set"):
        ensure_demo_data(own, seed=0, num_train=2, num_val=1, min_px=64, max_px=64)
    assert (own / "train.json").read_text() == '{"images": []}' and len(list(own.iterdir())) == 1


def test_files_added_beside_a_demo_set_survive_a_change_of_settings(tmp_path):
    import pytest

    from detect.errors import DataConfigError

    root = ensure_demo_data(tmp_path / "demo", seed=0, num_train=2, num_val=1, min_px=64, max_px=64)
    (root / "train0.json").write_text("{}")  # e.g. k-fold files written into the demo folder
    with pytest.raises(DataConfigError, match=r"holds files it did not generate: \['train0.json'\]"):
        ensure_demo_data(root, seed=1, num_train=2, num_val=1, min_px=64, max_px=64)
    assert (root / "train0.json").read_text() == "{}"
