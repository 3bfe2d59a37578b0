"""The pid file: one daemon per file, a stale file detected, a second start refused without harm.

The original checks /proc/<pid> (fooled by a reused pid) and, on refusal, deletes the running
daemon's socket. We hold an flock on the file for the daemon's lifetime: a lock cannot be stale.
"""

from __future__ import annotations

import fcntl
import os

from actors.errors import AdapterError


class AlreadyRunning(AdapterError):
    pass


class PidFile:
    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"a daemon with PID {other} already runs with pid file {self.path}: "
                "stop it first (systemctl stop cc-slurm-adapter) or use another pidFilePath"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    @property
    def fd(self) -> int | None:
        return self._fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
