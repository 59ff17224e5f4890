"""Summarize a finished multirun by hand: `python -m detect.sweep <sweep folder>`.

Writes sweep_summary.md/.json (and cv_report.md/.json for k-fold sweeps) into the folder and prints
the table; the same happens by itself at the end of every `-m` run (detect/run/sweep_summary.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from detect.cli import run_command
from detect.errors import RunFilesError, UsageError

USAGE = "usage: python -m detect.sweep <sweep folder>  (outputs/<member>/<run_name>/multirun_<time>)"


def sweep(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\n" + USAGE)
        return 0
    if len(argv) != 1:
        raise UsageError(f"give one sweep folder. {USAGE}")
    from detect.run.sweep_summary import summarize_sweep  # hydra: only once the command line is fine

    folder = Path(argv[0])
    if not folder.is_dir():
        raise RunFilesError(f"{folder} is not a folder: give a multirun folder (python -m detect.runs lists runs).")
    print(summarize_sweep(folder))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(sweep, argv)


if __name__ == "__main__":
    sys.exit(main())
