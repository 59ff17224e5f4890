"""k-fold splits of a COCO annotation file: grouped by image, stratified by class distribution.

Every image (with all its boxes) lands in exactly one validation fold; the folds are chosen so that
each class's boxes spread over the folds as evenly as the images allow (the greedy rule of
scikit-learn's StratifiedGroupKFold). Images without boxes are spread to balance the fold sizes.
Deterministic: the same file, `num_folds` and `seed` give byte-identical `train{k}.json`/`val{k}.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detect.errors import DataConfigError


def class_counts(coco: dict) -> tuple[list[int], np.ndarray]:
    """Image ids in file order and their (images, categories) box-count matrix."""
    image_ids = [img["id"] for img in coco["images"]]
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    column = {cat["id"]: j for j, cat in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    counts = np.zeros((len(image_ids), len(column)), dtype=np.int64)
    for ann in coco["annotations"]:
        if ann["image_id"] not in row or ann["category_id"] not in column:
            raise DataConfigError(
                f"Annotation {ann.get('id')} refers to image {ann['image_id']} / category {ann['category_id']}, "
                "which the file does not list; fix the file before splitting it.")
        counts[row[ann["image_id"]], column[ann["category_id"]]] += 1
    return image_ids, counts


def assign_folds(counts: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..num_folds-1) of each image (row of `counts`).

    Images are taken in a seeded shuffle, those with the most uneven class mix first; each goes to the
    fold where the per-class spread over folds (std of each class's fold share, averaged over classes)
    stays lowest, ties to the fold with the fewest images, then the lowest index.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order].std(axis=1), kind="stable")]
    totals = np.maximum(counts.sum(axis=0), 1)
    per_fold = np.zeros((num_folds, counts.shape[1]), dtype=np.int64)
    fold_sizes = np.zeros(num_folds, dtype=np.int64)
    folds = np.empty(len(counts), dtype=np.int64)
    for index in order:
        spreads = []
        for fold in range(num_folds):
            per_fold[fold] += counts[index]
            spreads.append((per_fold / totals).std(axis=0).mean())
            per_fold[fold] -= counts[index]
        best = min(range(num_folds), key=lambda f: (round(spreads[f], 12), fold_sizes[f], f))
        folds[index] = best
        per_fold[best] += counts[index]
        fold_sizes[best] += 1
    return folds


def split_files(coco: dict, num_folds: int, seed: int) -> dict[str, dict]:
    """{"train0.json": {...}, "val0.json": {...}, ...}: COCO dicts keeping every other key of the input."""
    if num_folds < 2:
        raise DataConfigError(f"--folds {num_folds}: a k-fold split needs at least 2 folds")
    if len(coco["images"]) < num_folds:
        raise DataConfigError(f"{len(coco['images'])} images cannot fill {num_folds} folds")
    image_ids, counts = class_counts(coco)
    folds = dict(zip(image_ids, assign_folds(counts, num_folds, seed).tolist()))
    files = {}
    for k in range(num_folds):
        for name, keep in ((f"train{k}.json", lambda f, k=k: f != k), (f"val{k}.json", lambda f, k=k: f == k)):
            files[name] = {
                **coco,
                "images": [img for img in coco["images"] if keep(folds[img["id"]])],
                "annotations": [ann for ann in coco["annotations"] if keep(folds[ann["image_id"]])],
            }
    return files


def fold_report(coco: dict, files: dict[str, dict], num_folds: int) -> str:
    """Per val fold: images, boxes and each class's share of its boxes (1/k is perfectly even)."""
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    per_fold = [class_counts(files[f"val{k}.json"])[1].sum(axis=0) for k in range(num_folds)]
    totals = np.maximum(sum(per_fold), 1)  # the val folds together hold every box once
    lines = [f"{'fold':<6}{'images':>8}{'boxes':>8}  share of each class's boxes (even = {1 / num_folds:.3f})"]
    for k, counts in enumerate(per_fold):
        val = files[f"val{k}.json"]
        lines.append(f"{k:<6}{len(val['images']):>8}{len(val['annotations']):>8}  "
                     + " ".join(f"{share:.3f}" for share in counts / totals))
    lines.append("classes: " + ", ".join(names))
    return "\n".join(lines)


def write_splits(ann_file: str | os.PathLike, num_folds: int = 5, seed: int = 411,
                 out_dir: str | os.PathLike | None = None, overwrite: bool = False) -> tuple[dict[str, Path], str]:
    """Split `ann_file` and write the files next to it (or into `out_dir`). Existing files with other
    content are never replaced unless `overwrite`: a team's folds must not change under its runs."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataConfigError(f"Annotation file {ann_file} does not exist; pass the COCO train.json to split")
    try:
        coco = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise DataConfigError(
            f"{ann_file} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    out_dir = Path(out_dir) if out_dir else ann_file.parent
    files = split_files(coco, num_folds, seed)
    texts = {name: json.dumps(data, ensure_ascii=False) + "\n" for name, data in files.items()}
    clashes = [name for name, text in texts.items() if (out_dir / name).is_file()
               and (out_dir / name).read_text() != text]
    if clashes and not overwrite:
        raise DataConfigError(
            f"{out_dir} already holds {', '.join(clashes)} with other folds (another seed, fold count or "
            "train.json). Runs trained on them would no longer be comparable; write elsewhere with --out, "
            "or replace them with --overwrite.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in texts.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
        written[name] = out_dir / name
    return written, fold_report(coco, files, num_folds)
