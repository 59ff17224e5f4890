"""Errors a user can meet and fix. Every command turns them into one message without a traceback
and an exit code (detect/cli.py): 2 for a usage or config error (UsageError, ConfigError: change
the command line or the config), 1 for a failure during the work (any other DetectError: the data,
a file, a checkpoint, the disk), 130/143 when interrupted (RunInterrupted). Anything else is a bug
and keeps its traceback."""


class DetectError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class UsageError(DetectError, ValueError):
    """The command line itself is wrong (an unknown option, a bad value): nothing was done. Exit 2."""


class ConfigError(UsageError):
    """A config value is out of range or inconsistent (exit 2). Most are found by the config check
    before any run dir exists; those only building can find (a neck that does not fit its backbone)
    are found after, and the run dir records the run as failed."""


class DataConfigError(DetectError, ValueError):
    """The data configuration points at something that is missing or inconsistent."""


class WeightsUnavailableError(DetectError, RuntimeError):
    """Pretrained weights could not be loaded (no internet, bad name or bad file)."""


class CheckpointError(DetectError, RuntimeError):
    """A checkpoint cannot be read (missing, truncated, or not one of ours)."""


class NonFiniteLossError(DetectError, FloatingPointError):
    """A loss became NaN or infinite: training cannot go on meaningfully."""


class RunInterrupted(DetectError):
    """Ctrl-C or SIGTERM stopped the run; the message says where it stopped and how to resume."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class RunFilesError(DetectError, ValueError):
    """A run directory's file (summary.json, metrics.jsonl, a test folder) is missing or damaged."""


class HookError(DetectError, RuntimeError):
    """A training hook (checkpoints, plots, logging, ...) failed; the message names the hook and the event."""
