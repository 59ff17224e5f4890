"""How training shows its progress: a bar in a terminal, log lines everywhere else.

runtime.progress:
- `bar`: a tqdm bar per epoch on stderr (ETA of the epoch, the current losses, lr, it/s) and one
  during each evaluation. The per-interval loss lines still go to train.log, but not to the
  terminal, where the bar shows them; other log lines (evaluation tables, warnings) are printed
  above the bar instead of through it.
- `lines`: no bar; one log line per runtime.log_interval iterations with the losses, lr, s/it and
  the ETA of the run. Nothing is redrawn, so a CI log or a SLURM output file holds no carriage
  returns.
- `auto`: bar when stderr is a terminal, lines otherwise.
Under torchrun only rank 0 shows anything.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator

FILE_ONLY = {"terminal": False}  # logging `extra=`: the record goes to train.log, not to the terminal (bar mode)


def resolve_mode(mode: str, is_main: bool = True) -> str:
    """'bar' or 'lines' for runtime.progress (auto, bar, lines) on this process."""
    if not is_main:
        return "lines"
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


def _is_terminal_handler(handler: logging.Handler) -> bool:
    return (type(handler) is logging.StreamHandler  # not a FileHandler (a subclass)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr))


class _AboveTheBar:
    """A stream for logging handlers: each write goes through tqdm.write, which clears the bar,
    prints the text and redraws the bar below it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


def _not_file_only(record: logging.LogRecord) -> bool:
    return getattr(record, "terminal", True)


@contextlib.contextmanager
def terminal_logging_above_bars() -> Iterator[None]:
    """While a bar may be shown: terminal log handlers print above it and skip FILE_ONLY records.
    The handlers are restored afterwards (train.log's file handler is never touched)."""
    handlers = [h for h in logging.getLogger().handlers if _is_terminal_handler(h)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(_AboveTheBar(handler.stream))
        handler.addFilter(_not_file_only)
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams):
            handler.setStream(stream)
            handler.removeFilter(_not_file_only)


class EpochBar:
    """The bar of one training epoch (or nothing in lines mode). `step()` after every iteration."""

    def __init__(self, mode: str, epoch: int, epochs: int, total: int, initial: int = 0):
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="it",
                            dynamic_ncols=True, leave=True, file=sys.stderr)

    def step(self, losses: dict[str, float], lr: float) -> None:
        if self.bar is None:
            return
        shown = {k.removeprefix("loss_") if k != "loss" else k: v for k, v in losses.items()}
        text = " ".join(f"{k}={v:.3f}" for k, v in shown.items()) + f" lr={lr:.2e}"
        self.bar.set_postfix_str(text, refresh=False)  # the update below redraws (at most ~10 times a second)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eval_bar(mode: str, batches: Iterable, total: int, what: str = "evaluate") -> Iterable:
    """`batches`, shown as a transient bar in bar mode."""
    if mode != "bar":
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=what, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
