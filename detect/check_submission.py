"""Check a submission CSV against test.json before uploading it.

    python -m detect.check_submission outputs/.../submission.csv /path/to/trash/test.json
    python -m detect.check_submission submission.csv test.json --num-classes 10

Checks the header (`PredictionString,image_id`, no index column), that every image of test.json has
exactly one row and no other image appears, groups of 6 numbers, labels 0..num_classes-1, scores in
[0, 1], and boxes non-empty and inside their image. Prints every problem with its line and exits 1,
or says the file is valid and exits 0. The number of classes defaults to test.json's categories.
A bad command line exits 2, a test.json it cannot read 1 (detect/cli.py). The checks are
detect.evaluation.submission.check_submission.
"""

from __future__ import annotations

import sys

from detect.cli import ArgumentParser, run_command
from detect.errors import UsageError
from detect.evaluation.submission import check_submission
from detect.inputs import read_coco


def check(argv: list[str]) -> int:
    parser = ArgumentParser("python -m detect.check_submission", __doc__)
    parser.add_argument("csv", help="the submission file")
    parser.add_argument("test_json", help="the competition's test.json (image list with file_name, width, height)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="number of classes (default: the number of categories in test.json)")
    args = parser.parse_args(argv)
    if args.csv.lower().endswith(".json") and args.test_json.lower().endswith(".csv"):
        raise UsageError(f"the arguments are in the wrong order: the submission CSV comes first, then test.json "
                         f"(python -m detect.check_submission {args.test_json} {args.csv} ...).")
    if args.num_classes is not None and args.num_classes < 1:
        raise UsageError(f"--num-classes {args.num_classes} must be at least 1.")
    test_coco = read_coco(args.test_json, "test_json")
    num_classes = args.num_classes or len(test_coco.get("categories") or [])
    if not num_classes:
        raise UsageError(f"{args.test_json} lists no categories: pass --num-classes N")
    problems = check_submission(args.csv, test_coco, num_classes)
    if problems:
        print(f"{args.csv}: {len(problems)} problem(s)")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print(f"{args.csv}: valid ({len(test_coco['images'])} images, {num_classes} classes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(check, argv)


if __name__ == "__main__":
    sys.exit(main())
