"""Write k-fold splits train{k}.json / val{k}.json of a COCO train.json, grouped by image and
stratified by class distribution, deterministic for a seed (the trash team used 5 folds, seed 411).

    python scripts/kfold_split.py /path/to/trash/train.json                # 5 folds, seed 411, beside it
    python scripts/kfold_split.py train.json --folds 5 --seed 411 --out /path/to/folds
    python -m detect.train model=cascade_rcnn data=trash data.fold=0       # then train a fold
"""

from __future__ import annotations

import argparse
import sys

from detect.data.kfold import write_splits
from detect.errors import DetectError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ann_file", help="the COCO annotation file to split (e.g. train.json)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    parser.add_argument("--seed", type=int, default=411, help="shuffle seed (default: 411)")
    parser.add_argument("--out", default=None, help="output folder (default: the annotation file's folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing fold files with other content")
    args = parser.parse_args()
    try:
        written, report = write_splits(args.ann_file, args.folds, args.seed, args.out, args.overwrite)
    except DetectError as err:
        sys.exit(f"error: {err}")
    print(report)
    print(f"wrote {len(written)} files to {next(iter(written.values())).parent}")


if __name__ == "__main__":
    main()
