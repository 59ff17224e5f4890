"""Augmentation pipelines (conf/data/aug, detect/data/augment.py, detect/data/pipeline.py): boxes stay
on their objects after every pipeline, mosaic shifts the four images' boxes right, mosaic/mixup stop at
close_at_epoch, (index, seed, epoch) fixes the result, the detector skips its training resize when the
pipeline sizes the images, bad pipeline keys give one message, and a short training run with
data/aug=strong finishes."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torchvision import tv_tensors

from detect.config.check import find_problems
from detect.data.augment import MixUp, Mosaic
from detect.data.build import build_dataset
from detect.data.pipeline import AugmentPipeline, build_train_pipeline
from detect.errors import ConfigError
from detect.models.parts import image_transform
from tests.conftest import TINY, compose_train, run_cli, tiny_train_args

PIPELINES = ["flip", "multiscale", "lsj", "photometric", "strong"]
# One colour per label, far from each other, from black (the background) and from the mean-colour fill.
COLOURS = {1: (230, 30, 30), 2: (30, 220, 60), 3: (40, 60, 240), 4: (240, 230, 30)}
# (height, width) and rectangles (x1, y1, x2, y2, label) of the synthetic images: apart, inside the image.
SCENES = [
    ((120, 160), [(10, 12, 50, 60, 1), (70, 20, 150, 50, 2), (60, 70, 110, 110, 3)]),
    ((160, 120), [(8, 10, 60, 40, 4), (20, 60, 100, 140, 1)]),
    ((140, 140), [(30, 30, 110, 110, 2)]),
    ((100, 180), [(5, 5, 45, 95, 3), (60, 30, 170, 80, 4)]),
]


def scene(height: int, width: int, rects: list) -> tuple[tv_tensors.Image, dict]:
    """A black image with filled rectangles, and their boxes and labels (uint8, xyxy pixels)."""
    image = torch.zeros((3, height, width), dtype=torch.uint8)
    for x1, y1, x2, y2, label in rects:
        image[:, y1:y2, x1:x2] = torch.tensor(COLOURS[label], dtype=torch.uint8)[:, None, None]
    boxes = torch.tensor([r[:4] for r in rects], dtype=torch.float32).reshape(-1, 4)
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([r[4] for r in rects]), "image_id": 0}


class Scenes:
    """The synthetic images as a data set for mosaic and mixup (what CocoDetection.load_sample gives)."""

    def __len__(self) -> int:
        return len(SCENES)

    def load_sample(self, index: int):
        return scene(*SCENES[index][0], SCENES[index][1])


def pipeline(aug: str, *overrides: str) -> AugmentPipeline:
    """The pipeline of data/aug=<aug> on the TINY sizes (96/128), uint8 output to compare pixels."""
    cfg = compose_train([f"data/aug={aug}", "data.min_size=96", "data.max_size=128", *overrides])
    return build_train_pipeline(cfg.data, float_output=False)


def check_boxes_on_their_rectangles(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                                    exact_colours: bool) -> int:
    """Every box inside the image; inside each (2 px in from its edges, where interpolation blends) one
    uniform colour, the label's colour when `exact_colours`; 2-3 px outside each edge that is not the
    image border, another colour (the box is tight). Returns how many boxes had an inside to check."""
    height, width = image.shape[-2:]
    assert len(boxes) == len(labels)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all(), boxes
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), (boxes, image.shape)
    assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all() and ((boxes[:, 3] - boxes[:, 1]) >= 1).all(), boxes
    pixels = image.float()
    checked = 0
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        ix1, iy1, ix2, iy2 = math.ceil(x1) + 2, math.ceil(y1) + 2, math.floor(x2) - 2, math.floor(y2) - 2
        if ix2 - ix1 < 2 or iy2 - iy1 < 2:
            continue  # too small to have an inside away from the blended edges
        inside = pixels[:, iy1:iy2, ix1:ix2].reshape(3, -1)
        colour = inside.mean(dim=1)
        assert (inside - colour[:, None]).abs().max() <= 3, f"box {x1, y1, x2, y2} covers more than one colour"
        if exact_colours:
            assert (colour - torch.tensor(COLOURS[label])).abs().max() <= 3, (colour, label)
        strips = []  # 2-3 px outside each edge, where the image goes on
        if x1 >= 4:
            strips.append(pixels[:, iy1:iy2, math.floor(x1) - 3:math.floor(x1) - 2])
        if x2 <= width - 4:
            strips.append(pixels[:, iy1:iy2, math.ceil(x2) + 2:math.ceil(x2) + 3])
        if y1 >= 4:
            strips.append(pixels[:, math.floor(y1) - 3:math.floor(y1) - 2, ix1:ix2])
        if y2 <= height - 4:
            strips.append(pixels[:, math.ceil(y2) + 2:math.ceil(y2) + 3, ix1:ix2])
        for strip in strips:
            outside = strip.reshape(3, -1).mean(dim=1)
            assert (outside - colour).abs().max() > 20, f"box {x1, y1, x2, y2} is not tight: same colour outside"
        checked += 1
    return checked


@pytest.mark.parametrize("aug", PIPELINES)
def test_every_pipeline_keeps_each_box_on_its_rectangle(aug):
    # Mixup blends two images, so no box covers one colour: checked on its own below.
    steps = pipeline(aug, *(["data.aug.transforms.1.p=0.0"] if aug == "strong" else []))
    source, checked = Scenes(), 0
    for seed in range(12):
        for index in range(len(source)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image, target = steps(*source.load_sample(index), source=source, epoch=0)
            assert image.dtype == torch.uint8 and type(image) is torch.Tensor  # plain tensors for the model
            checked += check_boxes_on_their_rectangles(image, target["boxes"], target["labels"],
                                                       exact_colours=aug in ("flip", "multiscale", "lsj"))
    assert checked >= 60, f"only {checked} boxes were large enough to check"


def test_flip_pipeline_is_todays_flip_draw_for_draw():
    from detect.data.transforms import detection_transforms

    flip, today = pipeline("flip"), detection_transforms(0.5, float_output=False)
    for seed in range(8):
        sample = Scenes().load_sample(0)
        torch.manual_seed(seed)
        image, target = flip(*sample)
        torch.manual_seed(seed)
        expected_image, expected_target = today(*sample)
        assert torch.equal(image, expected_image) and torch.equal(target["boxes"], expected_target["boxes"])


def test_mosaic_holds_the_four_images_boxes_shifted_by_their_corner():
    size, seed = 64, 5
    # Four size x size images (no fitting), one rectangle each, as the image and the 3 drawn ones.
    rects = [(10, 12, 30, 40, 1), (5, 20, 50, 44, 2), (16, 8, 40, 30, 3), (30, 30, 60, 60, 4)]
    pieces = [scene(size, size, [r]) for r in rects]
    mosaic = Mosaic(size=size, p=1.0, fill=(0, 0, 0))
    torch.manual_seed(seed)
    image, target = mosaic(*pieces[0], lambda n: pieces[1:1 + n])
    torch.manual_seed(seed)  # the same draws by hand: p, then the centre
    torch.rand(())
    centre_x, centre_y = torch.randint(size // 2, 3 * size // 2 + 1, (2,)).tolist()
    offsets = [(centre_x - size, centre_y - size), (centre_x, centre_y - size), (centre_x - size, centre_y),
               (centre_x, centre_y)]  # top-left corner of each piece on the 2 size canvas
    expected = []
    for (x1, y1, x2, y2, label), (dx, dy) in zip(rects, offsets):
        box = torch.tensor([x1 + dx, y1 + dy, x2 + dx, y2 + dy], dtype=torch.float32) - size // 2
        box[0::2], box[1::2] = box[0::2].clamp(0, size), box[1::2].clamp(0, size)
        if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
            expected.append((box.tolist(), label))
    assert image.shape == (3, size, size)
    assert [(b.tolist(), int(lab)) for b, lab in zip(target["boxes"], target["labels"])] == expected
    assert len(expected) >= 2  # this seed keeps pieces of several images in the window
    check_boxes_on_their_rectangles(image, target["boxes"].as_subclass(torch.Tensor), target["labels"], True)


def test_mixup_blends_two_images_and_keeps_both_sets_of_boxes():
    first, second = scene(100, 120, [(10, 10, 40, 40, 1)]), scene(100, 120, [(60, 50, 110, 90, 2)])
    torch.manual_seed(0)
    image, target = MixUp(p=1.0)(*first, lambda n: [second])
    torch.manual_seed(0)
    torch.rand(())
    ratio = float(torch.distributions.Beta(32.0, 32.0).sample())
    expected = (first[0].float() * ratio + second[0].float() * (1 - ratio)).round().to(torch.uint8)
    assert torch.equal(image, expected) and 0.3 < ratio < 0.7
    assert target["boxes"].tolist() == [[10, 10, 40, 40], [60, 50, 110, 90]] and target["labels"].tolist() == [1, 2]


def test_mosaic_and_mixup_stop_at_close_at_epoch():
    steps = AugmentPipeline([Mosaic(size=64), MixUp(p=1.0)], min_box_size=1, close_at_epoch=3, float_output=False)
    source = Scenes()
    sizes = []
    for epoch in range(4):  # 0-based, as the sampler's key: close_at_epoch=3 is the third epoch as logged
        torch.manual_seed(0)
        image, target = steps(*source.load_sample(0), source=source, epoch=epoch)
        sizes.append(tuple(image.shape[-2:]))
        if epoch >= 2:
            assert target["labels"].tolist() == [1, 2, 3]  # this image's own boxes only
    assert sizes == [(64, 64), (64, 64), SCENES[0][0], SCENES[0][0]]
    assert [steps.mixing_on(e) for e in range(4)] == [True, True, False, False]


def test_strong_closes_mosaic_for_the_last_epoch_by_default():
    cfg = compose_train(["data/aug=strong", "schedule.epochs=5"])
    assert cfg.data.aug.close_at_epoch == 5 and build_train_pipeline(cfg.data).mixing_on(3)
    assert not build_train_pipeline(cfg.data).mixing_on(4)


def test_the_same_index_seed_and_epoch_give_the_same_sample(tiny_demo_root):
    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, "data/aug=strong"])
    dataset = build_dataset(cfg.data, "train", train=True, float_output=False)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = [dataset[(index, 99 + index, 0)] for index in range(4)]
    assert torch.equal(torch.rand(3), before)  # the caller's RNG stream is untouched
    again = [dataset[(index, 99 + index, 0)] for index in reversed(range(4))][::-1]  # another order, as workers may
    for (image, target), (image2, target2) in zip(first, again):
        assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
        assert torch.equal(target["labels"], target2["labels"])
    other_seed, _ = dataset[(0, 100, 0)]
    closed, _ = dataset[(0, 99, cfg.schedule.epochs - 1)]  # the last epoch: no mosaic, another image
    assert not torch.equal(other_seed, first[0][0]) and not torch.equal(closed, first[0][0])
    assert first[0][0].shape[-1] <= cfg.data.max_size and first[0][0].shape[-2] <= cfg.data.max_size


def test_the_detector_does_not_resize_training_images_a_pipeline_sized():
    images = [torch.rand(3, 70, 150)]
    transform = image_transform(96, 128, [0.5] * 3, [0.2] * 3, 32, skip_train_resize=True)
    assert transform.train()(images)[0].image_sizes == [(70, 150)]  # normalized and padded only
    assert transform.eval()(images)[0].image_sizes == [(59, 128)]  # evaluation still resizes
    old_style = image_transform(96, 128, [0.5] * 3, [0.2] * 3, 32)  # a run config without the key
    assert old_style.train()(images)[0].image_sizes == [(59, 128)]


@pytest.mark.parametrize("model", ["retinanet", "fcos"])
def test_one_stage_models_get_the_switch_from_the_aug_config(model):
    from hydra.utils import instantiate

    cfg = compose_train([f"model={model}", "model.backbone.weights=null", "data/aug=lsj"])
    built = instantiate(cfg.model, num_classes=3, _convert_="all")
    assert built.transform.skip_train_resize and built.transform.min_size == (256,)
    assert compose_train([f"model={model}"]).model.skip_train_resize is False


def test_a_bad_step_is_one_config_error_naming_its_key():
    cfg = compose_train(["data/aug=photometric"])
    bad_target = OmegaConf.merge(cfg.data, {"aug": {"transforms": [{"_target_": "torchvision.transforms.v2.Nope"}]}})
    with pytest.raises(ConfigError, match=r"data\.aug\.transforms\[0\] of data/aug=photometric could not be built "
                                          r"from _target_=torchvision\.transforms\.v2\.Nope.*full import path"):
        build_train_pipeline(bad_target)
    bad_arg = compose_train(["data/aug=strong", "+data.aug.transforms.0.sides=4"])
    with pytest.raises(ConfigError, match=r"data\.aug\.transforms\[0\] of data/aug=strong .*Mosaic.*sides"):
        build_train_pipeline(bad_arg.data)
    assert find_problems(["data/aug=strong", "data.aug.close_at_epoch=0"], "train") == [
        "data.aug.close_at_epoch=0 must be a whole number >= 1 or null (e.g. data.aug.close_at_epoch=12)."]
    assert "Did you mean 'data.aug.transforms'?" in find_problems(["data.aug.transfroms=[]"], "train")[0]


def test_a_bad_target_on_the_command_line_stops_with_one_message(tiny_demo_root, tmp_path):
    proc = run_cli(tiny_train_args(tiny_demo_root, tmp_path / "run", "data.aug.transforms.0._target_=nope.Flip"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert "data.aug.transforms[0] of data/aug=flip could not be built from _target_=nope.Flip" in output


def test_a_short_training_run_with_the_strong_pipeline_finishes(tiny_demo_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, "data/aug=strong", "schedule.epochs=1",
                                   "runtime.max_iters_per_epoch=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "Training augmentation data/aug=strong: Mosaic, MixUp" in log
    assert (run_dir / "checkpoints" / "last.pth").is_file()
