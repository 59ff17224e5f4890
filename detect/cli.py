"""What every `python -m detect.<command>` shares: one message instead of a traceback, and the
same exit codes for the same kind of failure.

    0    done
    1    a failure during the work (DetectError): data, checkpoint, disk, ...
    2    a usage or config error before any work (UsageError, argparse's own, the config check)
    130  interrupted (Ctrl-C; 143 for SIGTERM: RunInterrupted carries its code)

`run_command(main, argv)` calls `main(argv)` (which returns an exit code or None) under these rules.
Imports nothing heavy.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from detect.errors import DetectError, RunInterrupted, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("detect")


def user_message(err: BaseException) -> str:
    """The error's own words. An error raised in a DataLoader worker comes back with the worker's
    traceback folded into its text; keep only the original message line."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def exit_code_of(err: BaseException) -> int:
    if isinstance(err, RunInterrupted):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, UsageError):
        return EXIT_USAGE
    return EXIT_FAILURE


def report(err: BaseException) -> int:
    """Say what went wrong in one message (through the `detect` logger, so it also reaches the
    command's log file) and return the exit code."""
    if isinstance(err, KeyboardInterrupt):
        log.warning("Interrupted.")
    elif isinstance(err, RunInterrupted):
        log.warning("%s", user_message(err))
    else:
        log.error("%s", user_message(err))
    return exit_code_of(err)


def run_command(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """main(argv) with the rules above; returns the exit code (for sys.exit)."""
    if not logging.getLogger().handlers:  # a plain command: messages as they are, on stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or EXIT_OK)
    except (DetectError, KeyboardInterrupt) as err:
        return report(err)
