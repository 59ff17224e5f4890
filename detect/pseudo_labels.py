"""Pseudo-labels: the confident boxes of a submission CSV as a COCO annotation file, optionally merged
into a training file.

    python -m detect.pseudo_labels submission.csv /path/to/trash/test.json --score-thr 0.5 --out pseudo.json
    python -m detect.pseudo_labels submission.csv test.json --merge-into train.json --out train_pseudo.json

- The CSV's labels are class indices: label k is class k of `--classes` (the run dir that wrote
  the CSV, or comma-separated names), by default the k-th category (sorted by id) of `--categories`,
  which defaults to the `--merge-into` file, else test.json (a test.json without categories needs it).
- Kept: boxes scoring >= --score-thr; images left without a box are left out (they would teach
  "nothing here" for objects the model merely missed). Each annotation gets `area`, `iscrowd: 0`
  and `score` (its confidence, for weighting or auditing).
- With --merge-into the test images and boxes are appended to a copy of that file with fresh ids
  (above its largest image and annotation ids: no collisions); an image whose file_name is already
  in it is an error. The file named by --out is never an input and is not overwritten unless
  --overwrite is given. Train on the result with `data.train_ann=train_pseudo.json`.

The work is in detect/data/pseudo_labels.py; this module parses, calls and reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from detect.cli import ArgumentParser, run_command
from detect.data.pseudo_labels import PseudoLabelError, merge_into, pseudo_label_coco
from detect.errors import UsageError
from detect.evaluation.submission import classes_option
from detect.inputs import read_coco


def parse_args(argv: list[str]):
    parser = ArgumentParser("python -m detect.pseudo_labels", __doc__)
    parser.add_argument("csv", help="a submission CSV (python -m detect.test mode=predict)")
    parser.add_argument("test_json", help="the test.json it predicts")
    parser.add_argument("--out", required=True, help="the COCO json to write")
    parser.add_argument("--score-thr", type=float, default=0.5, help="keep boxes scoring at least this (0.5)")
    parser.add_argument("--merge-into", help="a training file to append the pseudo-labels to (written to --out)")
    parser.add_argument("--categories", help="json whose categories give the class order (default: --merge-into, "
                                             "else test.json)")
    parser.add_argument("--classes", help="class order of the CSV labels: the run dir that wrote it, or comma-"
                                          "separated names (default: the categories sorted by id)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.csv.lower().endswith(".json") and args.test_json.lower().endswith(".csv"):
        raise UsageError(f"the arguments are in the wrong order: the submission CSV comes first, then test.json "
                         f"(python -m detect.pseudo_labels {args.test_json} {args.csv} ...).")
    out = Path(args.out)
    inputs = [Path(p).resolve() for p in (args.csv, args.test_json, args.merge_into, args.categories) if p]
    if out.resolve() in inputs:
        raise UsageError(f"--out {out} is one of the inputs: write the result to a new file.")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it, or choose another --out.")
    if not 0 <= args.score_thr <= 1:
        raise UsageError(f"--score-thr {args.score_thr} must be in [0, 1].")
    return args


def pseudo_labels(argv: list[str]) -> int:
    args = parse_args(argv)
    test_coco = read_coco(args.test_json, "test_json")
    train = read_coco(args.merge_into, "--merge-into") if args.merge_into else None
    if args.categories:
        source, categories = args.categories, read_coco(args.categories, "--categories").get("categories")
    else:
        source = args.merge_into or args.test_json
        categories = (train or test_coco).get("categories")
    if not categories:
        raise PseudoLabelError(f"{source} lists no categories: pass --categories train.json (the class order).")
    pseudo = pseudo_label_coco(Path(args.csv), test_coco, categories, args.score_thr, classes_option(args.classes))
    result = merge_into(train, pseudo) if train is not None else pseudo
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n")
    what = f"merged into a copy of {args.merge_into}" if train is not None else "pseudo-labels only"
    print(f"Wrote {out}: {len(pseudo['annotations'])} boxes (score >= {args.score_thr}) on {len(pseudo['images'])} "
          f"of {len(test_coco['images'])} test images, {what}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every command's (detect/cli.py): 2 for a bad command line, 1 for a bad input file."""
    return run_command(pseudo_labels, argv)


if __name__ == "__main__":
    sys.exit(main())
