"""The competition's submission CSV: write it from COCO results, read it back, check it.

Format (one row per image of test.json, in its order, images without detections included):

    PredictionString,image_id
    "0 0.91 10.5 20.0 110.25 220.0 3 0.40 ...",test/0000.jpg

PredictionString is a space-separated run of groups `label score xmin ymin xmax ymax`: label is the
0-based index of the class in the configured class list, score in [0, 1], the box in pixels of the
original image (xyxy). image_id is the image's `file_name` in test.json. No index column.
Imports no torch: the checker answers at once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from detect.errors import DetectError

HEADER = ["PredictionString", "image_id"]
BOX_TOLERANCE_PX = 0.01  # boxes are written with 2 decimals; a box clipped to the border may round onto it


class SubmissionError(DetectError, ValueError):
    """A submission file that cannot be read at all (missing, wrong header)."""


def submission_rows(results: list[dict], images: list[dict], category_ids: list[int]) -> list[list[str]]:
    """CSV rows (without header) from COCO results (`bbox` xywh in pixels, `category_id`, `score`).

    `images`: test.json's image entries, whose order the rows keep. `category_ids[k]` is the json
    category id of class k (the k-th configured class), so label k in the CSV means that class.
    Detections of an image are written by descending score.
    """
    index_of_category = {cat: k for k, cat in enumerate(category_ids)}
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in images}
    for r in results:
        per_image[r["image_id"]].append(r)
    rows = []
    for img in images:
        groups = [(index_of_category[r["category_id"]], r["score"], *xywh_to_xyxy(r["bbox"]))
                  for r in sorted(per_image[img["id"]], key=lambda r: -r["score"])]
        rows.append([prediction_string(groups), img["file_name"]])
    return rows


def xywh_to_xyxy(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def prediction_string(groups) -> str:
    """`label score xmin ymin xmax ymax ...` from (label, score, x1, y1, x2, y2) tuples (score 5
    decimals, pixels 2 decimals: the precision of the COCO results the trainer evaluates)."""
    return " ".join(f"{int(label)} {score:.5f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}"
                    for label, score, x1, y1, x2, y2 in groups)


def write_submission(path: str | Path, rows: list[list[str]]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    tmp.replace(path)  # a crash mid-write never leaves half a submission under the real name


def read_rows(path: str | Path) -> list[tuple]:
    """(line number, PredictionString, image_id) of each data row, or (line number, None, cells) for a
    row that is not two columns; SubmissionError when the file or its header is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path} is not a file." if path.exists() else f"{path} does not exist.")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != HEADER:
                found = repr(header)
                raise SubmissionError(f"{path}: line 1 must be the header {','.join(HEADER)} (no index column); "
                                      f"found {found[:80] + '...' if len(found) > 80 else found}.")
            rows = []
            for row in reader:
                # A row that is not two columns keeps its cells in the image_id place, for the message.
                rows.append((reader.line_num, row[0], row[1]) if len(row) == 2 else (reader.line_num, None, row))
            return rows
    except (UnicodeDecodeError, csv.Error) as err:
        raise SubmissionError(f"{path} is not a UTF-8 CSV file ({err}).") from err


def class_category_ids(categories: list[dict], classes: list[str] | None = None) -> list[int]:
    """json category id of each class index: of `classes` (names, the run's `data.classes` order)
    when given, else of the categories sorted by id (what `data.classes: null` means)."""
    by_id = sorted(categories, key=lambda c: c["id"])
    if classes is None:
        return [c["id"] for c in by_id]
    id_of_name = {c["name"]: c["id"] for c in by_id}
    missing = [name for name in classes if name not in id_of_name]
    if missing:
        raise SubmissionError(f"classes {missing} are not among the json's categories {list(id_of_name)}.")
    return [id_of_name[name] for name in classes]


def classes_option(value: str | None) -> list[str] | None:
    """The `--classes` option of the file commands: a run dir (its `data.classes`, null meaning the
    json's order) or comma-separated class names. None keeps the json's categories sorted by id."""
    if not value:
        return None
    from detect.run import RunDir

    config = RunDir(Path(value)).config_file
    if Path(value).is_dir():
        if not config.is_file():
            raise SubmissionError(f"--classes {value} is a folder without .hydra/config.yaml: give a run dir or "
                                  "comma-separated class names.")
        import yaml  # only here: a run's composed config

        classes = ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("classes")
        return list(classes) if classes else None
    return [name.strip() for name in value.split(",") if name.strip()]


def label_index(label: float, num_classes: int | None, where: str) -> int:
    """A CSV label as a class index; SubmissionError unless it is a whole number in 0..num_classes-1."""
    if label != int(label) or label < 0 or (num_classes is not None and label >= num_classes):
        valid = f"0..{num_classes - 1}" if num_classes is not None else "a whole number >= 0"
        raise SubmissionError(f"{where}: label {label:g} is not a class index ({valid}).")
    return int(label)


def parse_groups(text: str) -> list[tuple[float, ...]]:
    """`label score x1 y1 x2 y2 ...` -> tuples of 6 floats; ValueError says what is wrong."""
    tokens = text.split()
    if len(tokens) % 6:
        raise ValueError(f"{len(tokens)} numbers, not a multiple of 6 (label score xmin ymin xmax ymax)")
    try:
        numbers = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise ValueError(f"'{bad}' is not a number") from None
    if not all(math.isfinite(n) for n in numbers):  # 'nan' and 'inf' parse as floats: never a score or a box
        bad = next(t for t, n in zip(tokens, numbers) if not math.isfinite(n))
        raise ValueError(f"'{bad}' is not a finite number (a NaN or infinite score or box)")
    return [tuple(numbers[i:i + 6]) for i in range(0, len(numbers), 6)]


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def check_submission(path: str | Path, test_coco: dict, num_classes: int) -> list[str]:
    """Every problem of the CSV against test.json, each naming its line; an empty list means valid."""
    try:
        rows = read_rows(path)
    except SubmissionError as err:
        return [str(err)]
    images = {img["file_name"]: img for img in test_coco["images"]}
    problems, seen = [], {}
    for line, text, image_id in rows:
        if text is None:
            problems.append(f"line {line}: {len(image_id)} columns, expected 2 ({','.join(HEADER)})")
            continue
        if image_id not in images:
            problems.append(f"line {line}: image_id '{image_id}' is not a file_name of test.json")
            continue
        if image_id in seen:
            problems.append(f"line {line}: image_id '{image_id}' again (first on line {seen[image_id]})")
            continue
        seen[image_id] = line
        try:
            groups = parse_groups(text)
        except ValueError as err:
            problems.append(f"line {line} ({image_id}): {err}")
            continue
        width, height = images[image_id].get("width"), images[image_id].get("height")
        if width is None or height is None:
            problems.append(f"line {line} ({image_id}): test.json gives this image no width/height to check "
                            "the boxes against")
            continue
        for n, (label, score, x1, y1, x2, y2) in enumerate(groups, 1):
            where = f"line {line} ({image_id}), box {n}"
            if not all(math.isfinite(v) for v in (label, score, x1, y1, x2, y2)):
                problems.append(f"{where}: a value is not finite")
                continue
            if label != int(label) or not 0 <= label < num_classes:
                problems.append(f"{where}: label {label:g} is not a class index 0..{num_classes - 1}")
            if not 0 <= score <= 1:
                problems.append(f"{where}: score {score:g} is outside [0, 1]")
            tol = BOX_TOLERANCE_PX
            if not (-tol <= x1 < x2 <= width + tol and -tol <= y1 < y2 <= height + tol):
                problems.append(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or outside the "
                                f"{width}x{height} image")
    missing = [name for name in images if name not in seen]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.append(f"{len(missing)} image(s) of test.json have no row: {shown}")
    return problems


def submission_to_results(path: str | Path, test_coco: dict, category_ids: list[int]) -> list[dict]:
    """COCO results (bbox xywh) from a submission CSV; `category_ids[k]` is the json id of label k."""
    image_ids = {img["file_name"]: img["id"] for img in test_coco["images"]}
    results = []
    for line, text, image_id in read_rows(path):
        if text is None or image_id not in image_ids:
            raise SubmissionError(f"{path} line {line}: not a valid row; run the checker first.")
        for label, score, x1, y1, x2, y2 in parse_groups(text):
            label = label_index(label, len(category_ids), f"{path} line {line}")
            results.append({"image_id": image_ids[image_id], "category_id": category_ids[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results
