"""Check a submission CSV against test.json before uploading it.

    python -m detect.check_submission outputs/.../submission.csv /path/to/trash/test.json
    python -m detect.check_submission submission.csv test.json --num-classes 10

Checks the header (`PredictionString,image_id`, no index column), that every image of test.json has
exactly one row and no other image appears, groups of 6 numbers, labels 0..num_classes-1, scores in
[0, 1], and boxes non-empty and inside their image. Prints every problem with its line and exits 1,
or says the file is valid and exits 0. The number of classes defaults to test.json's categories.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detect.evaluation.submission import check_submission


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect.check_submission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="the submission file")
    parser.add_argument("test_json", help="the competition's test.json (image list with file_name, width, height)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="number of classes (default: the number of categories in test.json)")
    args = parser.parse_args(argv)
    test_path = Path(args.test_json)
    try:
        test_coco = json.loads(test_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read {test_path}: {err}", file=sys.stderr)
        return 2
    num_classes = args.num_classes or len(test_coco.get("categories") or [])
    if not num_classes:
        print(f"error: {test_path} lists no categories: pass --num-classes N", file=sys.stderr)
        return 2
    problems = check_submission(args.csv, test_coco, num_classes)
    if problems:
        print(f"{args.csv}: {len(problems)} problem(s)")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print(f"{args.csv}: valid ({len(test_coco['images'])} images, {num_classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
