"""Embedded demo data: a synthetic 10-class trash-detection set, generated on first use.

Every class of the trash competition gets a shape and texture of its own (a paper sheet with text
lines, a carton with a gable top, a can, a translucent bottle, ...). Colours, sizes and rotations
vary within each class, so colour alone does not tell the classes apart; objects overlap (the box
always covers the whole object, as a human annotator would draw it) and the background carries
clutter that looks like no class. A detector has to learn shapes, not pixels of one colour.

The generator is deterministic: the same seed and counts give the same JPEG bytes and the same
COCO json. It writes into a temporary folder and renames it into place, so two runs starting at
once never see a half-written data set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detect.errors import DataConfigError

log = logging.getLogger("detect")

TRASH_CLASSES = [
    "General trash",
    "Paper",
    "Paper pack",
    "Metal",
    "Glass",
    "Plastic",
    "Styrofoam",
    "Plastic bag",
    "Battery",
    "Clothing",
]

# Bump when the drawing code changes, so stale folders are regenerated instead of reused.
GENERATOR_VERSION = 3
STAMP_FILE = "demo_stamp.json"
GENERATED = {"train", "val", "train.json", "val.json", "test.json", STAMP_FILE}  # all a demo folder holds


# --------------------------------------------------------------------------------------------
# One drawing function per class. Each draws the object filling a canvas of (w, h) pixels on a
# transparent RGBA image; the box is later taken from the alpha channel, so it is always tight.
# --------------------------------------------------------------------------------------------


def _rand_colour(rng: np.random.Generator, low: int = 30, high: int = 230) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 25) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _draw_general_trash(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """An irregular crumpled blob with speckles."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    n = int(rng.integers(7, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.55, 1.0, n)
    pts = [(w / 2 + math.cos(a) * r * w / 2, h / 2 + math.sin(a) * r * h / 2) for a, r in zip(angles, radii)]
    base = _rand_colour(rng, 40, 170)
    d.polygon(pts, fill=base + (255,))
    for _ in range(int(w * h / 60)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if img.getpixel((int(x) % w, int(y) % h))[3]:
            d.point((x, y), fill=_jitter(base, rng, 60) + (255,))
    return img


def _draw_paper(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A light sheet with dark text lines."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    paper = tuple(int(c) for c in rng.integers(205, 256, size=3))
    d.rectangle([0, 0, w - 1, h - 1], fill=paper + (255,))
    ink = _rand_colour(rng, 10, 90)
    step = max(3, int(h / rng.integers(6, 11)))
    for y in range(step, h - 2, step):
        x_end = w * rng.uniform(0.55, 0.92)
        d.line([(w * 0.08, y), (x_end, y)], fill=ink + (255,), width=1)
    return img


def _draw_paper_pack(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A drink carton: a box with a gable top and a white band."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    body = _rand_colour(rng, 40, 230)
    top = int(h * rng.uniform(0.15, 0.25))
    d.polygon([(0, top), (w / 2, 0), (w - 1, top)], fill=_jitter(body, rng) + (255,))
    d.rectangle([0, top, w - 1, h - 1], fill=body + (255,))
    band_y = int(h * rng.uniform(0.45, 0.65))
    d.rectangle([0, band_y, w - 1, band_y + max(2, h // 8)], fill=(245, 245, 240, 255))
    d.line([(w / 2, top), (w / 2, h - 1)], fill=_jitter(body, rng, 50) + (255,), width=1)
    return img


def _draw_metal(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A can seen from above: metallic rings and a pull tab."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    grey = int(rng.integers(120, 200))
    tint = rng.integers(-20, 21, size=3)
    rings = 6
    for i in range(rings):
        f = i / rings
        level = int(np.clip(grey + (40 if i % 2 else -40) * (1 - f), 0, 255))
        colour = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
        d.ellipse([f * w / 2, f * h / 2, w - 1 - f * w / 2, h - 1 - f * h / 2], fill=colour + (255,))
    d.ellipse([w * 0.42, h * 0.2, w * 0.58, h * 0.38], fill=(60, 60, 60, 255))
    return img


def _draw_glass(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A translucent bottle: body, shoulders, neck and a highlight streak."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    palette = [(40, 120, 50), (120, 70, 20), (150, 190, 200), (30, 80, 60)]
    colour = _jitter(palette[int(rng.integers(len(palette)))], rng, 20)
    alpha = int(rng.integers(150, 215))
    neck_w = w * 0.32
    shoulder = h * rng.uniform(0.3, 0.4)
    d.rectangle([(w - neck_w) / 2, 0, (w + neck_w) / 2, shoulder], fill=colour + (alpha,))
    d.polygon([((w - neck_w) / 2, shoulder * 0.8), ((w + neck_w) / 2, shoulder * 0.8),
               (w - 1, shoulder * 1.4), (0, shoulder * 1.4)], fill=colour + (alpha,))
    d.rounded_rectangle([0, shoulder * 1.35, w - 1, h - 1], radius=max(1, int(w * 0.15)), fill=colour + (alpha,))
    d.line([(w * 0.25, shoulder * 1.5), (w * 0.25, h * 0.9)], fill=(235, 245, 245, alpha), width=max(1, w // 10))
    return img


def _draw_plastic(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A ribbed cup or tub: a trapezoid with vertical ribs."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = _rand_colour(rng, 30, 240)
    inset = w * rng.uniform(0.12, 0.25)
    d.polygon([(0, 0), (w - 1, 0), (w - 1 - inset, h - 1), (inset, h - 1)], fill=colour + (255,))
    d.rectangle([0, 0, w - 1, max(2, h // 10)], fill=_jitter(colour, rng, 60) + (255,))
    rib = _jitter(colour, rng, 70)
    n_ribs = int(rng.integers(4, 8))
    for i in range(1, n_ribs):
        x = w * i / n_ribs
        d.line([(x, h * 0.12), (inset + (x - inset) * (1 - 2 * inset / w) + inset * 0.5, h * 0.95)],
               fill=rib + (255,), width=1)
    return img


def _draw_styrofoam(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A white block with bumpy edges and a fine dotted texture."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    white = int(rng.integers(215, 250))
    d.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(1, min(w, h) // 5), fill=(white, white, white - 5, 255))
    for _ in range(int(w * h / 12)):
        x, y = rng.uniform(2, w - 2), rng.uniform(2, h - 2)
        g = white - int(rng.integers(25, 55))
        d.point((x, y), fill=(g, g, g, 255))
    for _ in range(int((w + h) / 6)):
        x, y = rng.choice([rng.uniform(0, w), 0, w - 1]), rng.uniform(0, h)
        r = rng.uniform(1, 3)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 0, 0, 0))
    return img


def _draw_plastic_bag(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A translucent bag with two handles and wrinkle lines."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = _rand_colour(rng, 60, 250)
    alpha = int(rng.integers(120, 190))
    handle_h = h * 0.28
    lw = max(2, w // 12)
    d.arc([w * 0.1, 0, w * 0.45, handle_h * 2], 180, 360, fill=colour + (alpha,), width=lw)
    d.arc([w * 0.55, 0, w * 0.9, handle_h * 2], 180, 360, fill=colour + (alpha,), width=lw)
    pts = [(w * 0.05, handle_h), (w * 0.95, handle_h)]
    pts += [(w - 1 - rng.uniform(0, w * 0.08), h * f) for f in (0.5, 0.8)]
    pts += [(w * 0.5, h - 1)]
    pts += [(rng.uniform(0, w * 0.08), h * f) for f in (0.8, 0.5)]
    d.polygon(pts, fill=colour + (alpha,))
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.uniform(w * 0.15, w * 0.85), rng.uniform(handle_h, h * 0.9)
        d.line([(x0, y0), (x0 + rng.uniform(-w, w) * 0.25, y0 + rng.uniform(-h, h) * 0.2)],
               fill=_jitter(colour, rng, 70) + (alpha,), width=1)
    return img


def _draw_battery(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A cylindrical cell lying sideways: two colour bands and a terminal nub."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    nub = max(2, int(w * 0.08))
    body_a = _rand_colour(rng, 10, 120)
    body_b = [(200, 120, 40), (230, 200, 40), (200, 40, 40), (60, 120, 220)][int(rng.integers(4))]
    split = int((w - nub) * rng.uniform(0.3, 0.5))
    d.rectangle([0, 0, split, h - 1], fill=body_b + (255,))
    d.rectangle([split, 0, w - 1 - nub, h - 1], fill=body_a + (255,))
    d.rectangle([w - nub, h * 0.3, w - 1, h * 0.7], fill=(190, 190, 190, 255))
    d.line([(0, h * 0.25), (w - nub, h * 0.25)], fill=(255, 255, 255, 140), width=1)
    return img


def _draw_clothing(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A T-shirt silhouette with stripes or checks."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    pattern = Image.new("RGBA", (w, h), _rand_colour(rng) + (255,))
    p = ImageDraw.Draw(pattern)
    second = _rand_colour(rng)
    step = max(3, int(min(w, h) / rng.integers(4, 8)))
    checks = rng.random() < 0.5
    for i in range(0, max(w, h), step * 2):
        p.rectangle([0, i, w, i + step - 1], fill=second + (255,))
        if checks:
            p.rectangle([i, 0, i + step - 1, h], fill=_jitter(second, rng, 40) + (255,))
    mask = Image.new("L", (w, h), 0)
    m = ImageDraw.Draw(mask)
    m.polygon([(w * 0.3, 0), (w * 0.7, 0), (w - 1, h * 0.18), (w * 0.88, h * 0.38), (w * 0.78, h * 0.32),
               (w * 0.78, h - 1), (w * 0.22, h - 1), (w * 0.22, h * 0.32), (w * 0.12, h * 0.38), (0, h * 0.18)],
              fill=255)
    m.ellipse([w * 0.4, -h * 0.08, w * 0.6, h * 0.08], fill=0)
    img.paste(pattern, (0, 0), mask)
    return img


DRAWERS = [
    _draw_general_trash,
    _draw_paper,
    _draw_paper_pack,
    _draw_metal,
    _draw_glass,
    _draw_plastic,
    _draw_styrofoam,
    _draw_plastic_bag,
    _draw_battery,
    _draw_clothing,
]

# Typical aspect ratio (w / h) of each class before rotation: bottles tall, batteries wide, ...
ASPECT = [1.0, 0.75, 0.6, 1.0, 0.45, 0.9, 1.3, 0.85, 2.2, 1.0]
# Relative frequency, mildly unbalanced like real trash data (Battery and Clothing are rare).
FREQUENCY = np.array([12, 14, 8, 9, 8, 12, 8, 12, 4, 5], dtype=float)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A floor-like gradient with noise and clutter (lines, small blobs) that belongs to no class."""
    top, bottom = np.array(_rand_colour(rng, 60, 200)), np.array(_rand_colour(rng, 60, 200))
    t = np.linspace(0, 1, h)[:, None, None]
    arr = top * (1 - t) + bottom * t + rng.normal(0, 12, size=(h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(-80, 80), y0 + rng.uniform(-80, 80)
        d.line([(x0, y0), (x1, y1)], fill=_rand_colour(rng), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(5, 15))):
        x0, y0, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 9)
        d.ellipse([x0 - r, y0 - r * rng.uniform(0.5, 1.5), x0 + r, y0 + r], fill=_rand_colour(rng))
    return img


def _make_object(label: int, size: float, rng: np.random.Generator) -> Image.Image:
    """Draw one object of about `size` pixels (square root of its area), rotated a little."""
    aspect = ASPECT[label] * rng.uniform(0.8, 1.25)
    w = max(6, int(round(size * math.sqrt(aspect))))
    h = max(6, int(round(size / math.sqrt(aspect))))
    obj = DRAWERS[label](w, h, rng)
    # Paper and bags lie at any angle; upright things lean a little.
    max_angle = 180 if label in (1, 7) else 25
    angle = float(rng.uniform(-max_angle, max_angle))
    return obj.rotate(angle, resample=Image.BICUBIC, expand=True)


def render_scene(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """Compose one image. Returns it and its objects as dicts with `label` and `bbox` (x, y, w, h)."""
    canvas = _background(width, height, rng).convert("RGBA")
    owner = np.full((height, width), -1, dtype=np.int32)  # which object is visible at each pixel
    objects: list[dict] = []
    n_wanted = int(rng.integers(3, 9))
    probs = FREQUENCY / FREQUENCY.sum()
    for _ in range(n_wanted * 4):  # a few attempts per object; crowded images stop early
        if len(objects) == n_wanted:
            break
        label = int(rng.choice(len(DRAWERS), p=probs))
        size = float(np.exp(rng.uniform(math.log(28), math.log(128))))
        obj = _make_object(label, size, rng)
        ow, oh = obj.size
        if ow >= width - 2 or oh >= height - 2:
            continue
        x, y = int(rng.integers(0, width - ow)), int(rng.integers(0, height - oh))
        alpha = np.asarray(obj.getchannel("A")) > 40
        ys, xs = np.nonzero(alpha)
        if len(xs) < 30:
            continue
        # Reject a placement that would hide more than 55% of an object already placed.
        region = owner[y:y + oh, x:x + ow]
        covered = region[alpha]
        ok = True
        for idx in np.unique(covered[covered >= 0]):
            still_visible = (owner == idx).sum() - (covered == idx).sum()
            if still_visible < 0.45 * objects[idx]["area_px"]:
                ok = False
                break
        if not ok:
            continue
        region[alpha] = len(objects)
        canvas.alpha_composite(obj, (x, y))
        box = (x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        objects.append({"label": label, "bbox": box, "area_px": int(alpha.sum())})
    image = canvas.convert("RGB").filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), objects


def _write_split(root: Path, split: str, n_images: int, seed: int, min_px: int, max_px: int) -> None:
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(n_images):
        width, height = (int(v) for v in rng.integers(min_px, max_px + 1, size=2))
        image, objects = render_scene(width, height, rng)
        file_name = f"{split}/{image_id:04d}.jpg"
        image.save(root / file_name, quality=90)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            x, y, w, h = obj["bbox"]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["label"],  # the competition numbers its categories from 0
                "bbox": [x, y, w, h],
                "area": float(w * h),
                "iscrowd": 0,
            })
    categories = [{"id": i, "name": name, "supercategory": "trash"} for i, name in enumerate(TRASH_CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / f"{split}.json").write_text(json.dumps(coco))


def demo_spec(seed: int, num_train: int, num_val: int, min_px: int, max_px: int) -> dict:
    return {"version": GENERATOR_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val,
            "min_px": min_px, "max_px": max_px}


def _matches(root: Path, spec: dict) -> bool:
    stamp = root / STAMP_FILE
    return stamp.is_file() and json.loads(stamp.read_text()) == spec


def ensure_demo_data(root: str | os.PathLike, seed: int = 0, num_train: int = 320, num_val: int = 100,
                     min_px: int = 256, max_px: int = 320) -> Path:
    """Generate the demo set into `root` unless an identical one is already there.

    Writes `train.json`, `val.json` and `test.json` (the val images, as the competition's test
    file: image list without the need for labels) and the JPEGs under `train/` and `val/`.
    Returns the root as a Path.
    """
    root = Path(root)
    spec = demo_spec(seed, num_train, num_val, min_px, max_px)
    if _matches(root, spec):
        return root
    if root.exists() and any(root.iterdir()) and not (root / STAMP_FILE).is_file():
        # Only a demo set we generated (it has the stamp) is ever replaced: never a user's folder.
        raise DataConfigError(
            f"data.root={root} is not empty and is not a generated demo set ({STAMP_FILE} is missing), so the "
            "demo data is not written there. Use data=coco (or data=trash) for your own data, or point "
            "data.root of data=demo at a new folder."
        )
    added = sorted(p.name for p in root.iterdir() if p.name not in GENERATED) if root.exists() else []
    if added:  # e.g. fold files or pseudo-labels someone wrote beside the generated set: keep them
        raise DataConfigError(
            f"The demo set in {root} was generated with other data.demo settings and would be replaced, but the "
            f"folder also holds files it did not generate: {added}. Move them away (or delete the folder), or "
            "point data.root at a new folder for the new settings."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root.parent))
    try:
        _write_split(tmp, "train", num_train, seed, min_px, max_px)
        _write_split(tmp, "val", num_val, seed + 1, min_px, max_px)
        shutil.copyfile(tmp / "val.json", tmp / "test.json")
        (tmp / STAMP_FILE).write_text(json.dumps(spec))
        if root.exists():
            if _matches(root, spec):  # another process finished the same data meanwhile: keep theirs
                return root
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _matches(root, spec):  # lost a race to a process writing the same set: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def demo_data_ready(root: str | os.PathLike, seed: int = 0, num_train: int = 320, num_val: int = 100,
                    min_px: int = 256, max_px: int = 320) -> bool:
    """Whether `root` holds the demo set these settings generate."""
    return _matches(Path(root), demo_spec(seed, num_train, num_val, min_px, max_px))


def prepare_demo_data(data, place=None) -> Path | None:
    """The explicit start-up step of the commands that read data (train, browse): with `data=demo`
    (a data section that has `demo:` settings), generate the set when it is missing or was made with
    other settings, saying so in the log. Building a data set never writes files; it only checks."""
    if data.get("demo") is None or data.get("root") in (None, ""):
        return None
    settings = dict(data.demo)
    if demo_data_ready(data.root, **settings):
        return Path(data.root)
    log.info("Generating the demo data set in %s (data=demo, data.demo=%s; scripts/make_demo_data.py does the same "
             "ahead of time)", data.root, settings)
    return ensure_demo_data(data.root, **settings)
