"""Generate the demo data set ahead of time (python -m detect.train and detect.browse do it at
start-up when data=demo and the set is missing).

    python scripts/make_demo_data.py --root data/demo --seed 0 --num-train 320 --num-val 100
"""

from __future__ import annotations

import argparse

from detect.data.demo import ensure_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument("--num-train", type=int, default=320, help="training images (default: 320)")
    parser.add_argument("--num-val", type=int, default=100, help="validation images (default: 100)")
    parser.add_argument("--min-px", type=int, default=256, help="smallest image side (default: 256)")
    parser.add_argument("--max-px", type=int, default=320, help="largest image side (default: 320)")
    args = parser.parse_args()
    root = ensure_demo_data(args.root, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                            min_px=args.min_px, max_px=args.max_px)
    print(f"demo data ready in {root}")


if __name__ == "__main__":
    main()
