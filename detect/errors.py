"""Errors a user can meet and fix. The CLI prints their message (no traceback) and exits with 1;
anything else is a bug and keeps its traceback."""


class DetectError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class ConfigError(DetectError, ValueError):
    """A config value is out of range or inconsistent."""


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
