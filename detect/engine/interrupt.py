"""Ctrl-C and SIGTERM (SLURM's scancel or time limit, a `kill`) stop a run cleanly.

The first signal only asks the trainer to stop: the current step finishes, `last.pth` is written
with the position inside the epoch, `summary.json` says `interrupted`, the loggers close and the
process exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second Ctrl-C
stops at once, without a new checkpoint (the previous `last.pth` stays).
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("detect")


class StopRequest:
    """Context manager installing the handlers; calling it says whether a stop was asked for."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists: stop now
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: stopping after the current step and writing last.pth "
                        "(press Ctrl-C again to stop at once, without a new checkpoint)", self.name)

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)
