"""One writer per run folder: `<run dir>/.lock`, created exclusively (O_CREAT | O_EXCL) by the process
that trains there and removed when it ends. A second process that wants to write the same folder (a
resume of a run that is still training, two launches naming one folder) is refused with a message
naming the holder. A lock left by a process that died (kill -9, a lost node) is taken over when its
process is gone: on the same host that is checked (the pid no longer runs); a lock from another host
is never taken over silently (the message says to delete the file once that run is surely dead)."""

from __future__ import annotations

import json
import os
import socket
import time

from detect.errors import RunFilesError
from detect.run.paths import RunDir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_holder(run: RunDir) -> dict | None:
    """{pid, host, since} of the lock's holder; None when there is no lock. A damaged lock file reads
    as held by nobody known (pid 0), so it is never taken for a live one by mistake of parsing."""
    try:
        text = run.lock_file.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {"pid": 0, "host": "?", "since": "?"}
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {"pid": 0, "host": "?", "since": "?"}
    except json.JSONDecodeError:
        return {"pid": 0, "host": "?", "since": "?"}


def holder_is_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume the other machine's process still runs
    try:
        pid = int(holder.get("pid") or 0)
    except (TypeError, ValueError):
        return False  # a damaged lock on this host: nobody we could wait for
    return pid > 0 and _pid_alive(pid)


def _is_mine(holder: dict | None) -> bool:
    return bool(holder) and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


class RunLock:
    """The lock of one run folder for this process (re-entrant: acquiring a lock this pid holds is a no-op)."""

    def __init__(self, run: RunDir, enabled: bool = True):
        self.run, self.enabled, self.held = run, enabled, False

    def acquire(self) -> None:
        """Take the lock or raise RunFilesError naming its holder. Creates the folder if needed."""
        if not self.enabled or self.held:
            return
        self.run.root.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(2):  # a second try after removing a dead holder's lock
            try:
                fd = os.open(self.run.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.run) or {}
                if _is_mine(holder):
                    self.held = True  # taken earlier by this process (detect.train's start-up)
                    return
                if holder_is_alive(holder):
                    raise RunFilesError(
                        f"{self.run} is being written by another process (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}). Wait for it to end, or start a new "
                        f"run; if that process is surely gone, delete {self.run.lock_file}.") from None
                self._take_over(holder)  # its process died: the run is free again
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record + "\n")
            self.held = True
            return
        raise RunFilesError(f"Could not take the lock {self.run.lock_file}: another process took it meanwhile.")

    def _take_over(self, dead: dict) -> None:
        """Remove a dead holder's lock so that only one of several processes doing the same wins: the
        file is renamed to a name of this process's own first, and removed only if it is still the dead
        holder's (another process may have taken it over and written its own meanwhile)."""
        aside = self.run.lock_file.with_name(f"{self.run.lock_file.name}.{os.getpid()}")
        try:
            os.rename(self.run.lock_file, aside)
        except FileNotFoundError:
            return  # someone else moved it: try O_EXCL again
        try:
            if json.loads(aside.read_text() or "{}") != dead and not os.path.exists(self.run.lock_file):
                os.rename(aside, self.run.lock_file)  # it was a live one's after all: put it back
                return
        except (OSError, json.JSONDecodeError):
            pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process still holds it. Never raises: a release runs while another
        error is reported (a read-only remount), and that error is the one to see."""
        if not self.held:
            return
        self.held = False
        try:
            if _is_mine(read_holder(self.run)):
                self.run.lock_file.unlink(missing_ok=True)
        except OSError:
            pass
