"""What every `python -m detect.<command>` shares: one message instead of a traceback, and the
same exit codes for the same kind of failure.

    0    done
    1    a failure during the work (any other DetectError): a file it reads is missing or damaged,
         the data, a checkpoint, the disk, ...
    2    a usage or config error found before any work (UsageError, the config check): an unknown
         option or key, a value of the wrong type or out of range, options that do not go together,
         an output that exists; nothing was written
    130  interrupted (Ctrl-C; 143 for SIGTERM: RunInterrupted carries its code)

The rule of thumb: what is wrong with the command line exits 2, what is wrong with the files it
names (or anything that happens after the work began) exits 1.

`run_command(main, argv)` calls `main(argv)` (which returns an exit code or None) under these rules;
`ArgumentParser` is argparse's, with its errors raised as UsageError so they take the same path
(one line, exit 2). The Hydra commands (train, test, browse) report through `report`.
Imports nothing heavy.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from detect.errors import DetectError, RunInterrupted, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("detect")
T = TypeVar("T")


def user_message(err: BaseException) -> str:
    """The error's own words. An error raised in a DataLoader worker comes back with the worker's
    traceback folded into its text; keep only the original message line. A file-system error that
    reached the command (a read-only or full disk, a path too long) names the path and the cause."""
    if isinstance(err, OSError) and not isinstance(err, DetectError):
        where = f" {err.filename}" if err.filename else ""
        return (f"Could not write or read{where}: {err.strerror or err}. Check that the folder exists, is writable "
                "and has free space (or choose another output folder).")
    text = str(err)
    if "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def reader_went_away() -> int:
    """`detect.runs | head`: the reader closed the pipe. Nothing is wrong; stop quietly (and keep
    Python from complaining about stdout at exit)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def exit_code_of(err: BaseException) -> int:
    """1 for DetectErrors of the work and for OSError (the file system failed the work)."""
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
    """main(argv) with the rules above; returns the exit code (for sys.exit). These commands keep
    no log file: the one message goes to stderr as `error: ...`."""
    if not logging.getLogger().handlers:  # a plain command: its progress messages as they are, on stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or EXIT_OK)
    except BrokenPipeError:
        return reader_went_away()
    except (DetectError, OSError, KeyboardInterrupt) as err:
        code = exit_code_of(err)
        print("Interrupted." if isinstance(err, KeyboardInterrupt) else f"error: {user_message(err)}",
              file=sys.stderr, flush=True)
        return code

def check_hydra_command_line(argv: Sequence[str], config_name: str, check_output: bool = True) -> None:
    """Before Hydra starts a train/test/browse command: answer `--help` ourselves (fast, no torch),
    find config errors (unknown keys, wrong values, missing options: exit 2) and check that the output
    folder can be written (exit 1), before any folder exists."""
    from detect.config.check import check_cli
    from detect.config.help import print_help_and_exit
    from detect.run.launch import check_output_folder

    print_help_and_exit(argv, config_name=config_name)
    check_cli(argv, config_name=config_name)
    if check_output:  # detect.train checks its folder while it settles it (detect.run.launch.prepare_single_run)
        or_exit(lambda: check_output_folder(argv, config_name))


def or_exit(work: Callable[[], T]) -> T:
    """work(), or its DetectError said in one line on stderr and the process ended with its exit code:
    for what a Hydra command settles before Hydra starts (nothing is logged to a file yet)."""
    try:
        return work()
    except BrokenPipeError:
        sys.exit(reader_went_away())
    except (DetectError, OSError, KeyboardInterrupt) as err:
        print("Interrupted." if isinstance(err, KeyboardInterrupt) else user_message(err), file=sys.stderr,
              flush=True)
        sys.exit(exit_code_of(err))


def run_hydra_job(work: Callable[[], T], on_failure: Callable[[], None] | None = None) -> T | None:
    """The body of a Hydra command's job under the rules above: the message goes through the `detect`
    logger (so it is in the job's log file too). In a multirun (-m) a failed job returns None and the
    sweep goes on; an interruption stops the sweep. `on_failure` tidies up (e.g. an empty folder) after
    a failure or an interruption."""
    try:
        return work()
    except (RunInterrupted, KeyboardInterrupt) as err:
        code = report(err)
        if on_failure is not None:
            on_failure()
        sys.exit(code)
    except (DetectError, OSError) as err:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        code = report(err)
        if on_failure is not None:
            on_failure()
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return None
        sys.exit(code)

class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `--iou 2` raises UsageError("--iou must be in (0, 1] (see
    python -m detect.X --help)") instead of printing the usage block and exiting by itself."""

    def __init__(self, prog: str, description: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, description=description, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_key_values(argv: list[str], defaults: dict, prog: str, lists: tuple[str, ...] = ()) -> dict:
    """`key=value` arguments (detect.predict, detect.export) over `defaults`, each typed like its default
    (true/false, whole numbers, numbers, text; `null` for none); keys in `lists` take `[512,640]`. An
    unknown key or a value of the wrong type is a UsageError naming it."""
    options = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise UsageError(f"{arg!r}: give key=value with a key among {', '.join(defaults)} (see {prog} --help)")
        default = defaults[key]
        try:
            if key in lists:
                options[key] = [int(v) for v in value.strip("[]").split(",") if v.strip()] or None
            elif isinstance(default, bool):
                if value.lower() not in ("true", "false"):
                    raise ValueError
                options[key] = value.lower() == "true"
            elif isinstance(default, int):
                options[key] = int(value)
            elif isinstance(default, float):
                options[key] = float(value)
            else:
                options[key] = None if value in ("", "null") else value
        except ValueError:
            kind = "list of sizes" if key in lists else type(default).__name__
            raise UsageError(f"{key}={value} is not a {kind} (default {default})") from None
    return options
