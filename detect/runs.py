"""Leaderboard of every run under `outputs/`: `python -m detect.runs [--root outputs] [options]`.

Statuses, columns and how run dirs are found: detect/run/leaderboard.py (this module parses, calls
and prints). `--diff RUN_A RUN_B` prints the config keys that differ. Reads only run files: no torch.
A bad option exits 2; a --root or run dir that is not there exits 1 (detect/cli.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from detect.cli import ArgumentParser, run_command
from detect.errors import RunFilesError
from detect.run import RunDir
from detect.run.leaderboard import (
    STATUSES,
    TABLE_COLUMNS,
    config_diff,
    filter_runs,
    format_table,
    plot_cost,
    read_runs,
    sort_runs,
    write_csv,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        "python -m detect.runs",
        description="Leaderboard of every run under --root: who ran what, its status and best score.",
        epilog="status: finished | failed | interrupted (as summary.json says); running (summary says running\n"
               "and a run file changed within --stale-minutes); stale (summary says running but nothing was\n"
               "written for longer: the process probably died; resume with runtime.resume_from=<run dir>);\n"
               "no-summary (died before training started); unreadable (summary.json is damaged).")
    parser.add_argument("--root", type=Path, default=Path("outputs"), help="folder of run dirs (default: outputs)")
    parser.add_argument("--member", help="only this member's runs (exact or glob)")
    parser.add_argument("--experiment", help="only these experiments (run_name; exact or glob, e.g. 'cascade_*')")
    parser.add_argument("--status", choices=STATUSES, help="only runs with this status")
    parser.add_argument("--sort", choices=TABLE_COLUMNS, default="best",
                        help="column to sort by (default: best score, best first; runs without a score last)")
    parser.add_argument("--reverse", action="store_true", help="reverse the sort order")
    parser.add_argument("--stale-minutes", type=float, default=30,
                        help="a 'running' run with no file written for this long is shown as stale (default: 30)")
    parser.add_argument("--csv", action="store_true", help="write CSV to stdout (all columns, absolute run dirs)")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="also draw the listed runs' best score against GFLOPs and latency into this PNG")
    parser.add_argument("--diff", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                        help="print the config keys that differ between two run dirs, and their overrides")
    return parser


def leaderboard(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.diff:
        for run in args.diff:
            if not RunDir(run).config_file.is_file():
                raise RunFilesError(f"{run} is not a run dir: it has no {RunDir(run).config_file.relative_to(run)}")
        print(config_diff(*args.diff))
        return 0
    if not args.root.is_dir():
        raise RunFilesError(f"no such folder: {args.root} (run from the repository root or pass --root)")
    runs = read_runs(args.root, args.stale_minutes)
    rows = sort_runs(filter_runs(runs, args.member, args.experiment, args.status), args.sort, args.reverse)
    if args.csv:
        write_csv(rows)
    elif not runs:
        print(f"No runs under {args.root} yet (a run dir holds summary.json or .hydra/config.yaml).")
    elif not rows:
        print(f"No run matches the filters ({len(runs)} runs under {args.root}).")
    else:
        print(format_table(rows))
    if args.plot and rows:
        drawn = plot_cost(rows, args.plot)
        print(f"Wrote {args.plot}: {drawn} of {len(rows)} runs have a cost and a score "
              "(python -m detect.profile run=<run dir> measures an older run).", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(leaderboard, argv)


if __name__ == "__main__":
    sys.exit(main())
