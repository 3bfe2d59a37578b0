"""A Slurm command that runs while an actor's loop goes on: the loop's Poller watches its pipes.

slurm_querier runs the `sacct -j` of hook nudges this way, so that the events arriving meanwhile
are received (and go into the next call) and heartbeats go on. Same rules as actors.slurm_cli:
a timeout, TZ=UTC, an error names the command and its stderr.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time

from actors.errors import SlurmError

log = logging.getLogger("slurm_querier")
READ_BYTES = 1 << 16


class SlurmCall:
    def __init__(self, argv: list[str], env: dict, timeout_s: float):
        log.debug("running %s", " ".join(argv))
        self.argv = argv
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        try:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL, env=env)
        except OSError as e:
            raise SlurmError(f"{argv[0]} cannot be started: {e.strerror}") from None
        self.stdout_fd, self.stderr_fd = self.process.stdout.fileno(), self.process.stderr.fileno()
        self.output: dict[int, list[bytes]] = {self.stdout_fd: [], self.stderr_fd: []}
        for fd in self.output:
            os.set_blocking(fd, False)
        self.open_fds = list(self.output)

    def fds(self) -> list[int]:
        """The pipes to watch for POLLIN until pump() says the command is done."""
        return list(self.open_fds)

    def pump(self) -> bool:
        """Reads what the command wrote so far; True once it closed its output (or ran out of time)."""
        for fd in list(self.open_fds):
            while True:
                try:
                    data = os.read(fd, READ_BYTES)
                except BlockingIOError:
                    break
                if not data:
                    self.open_fds.remove(fd)
                    break
                self.output[fd].append(data)
        return not self.open_fds or time.monotonic() >= self.deadline

    def result(self) -> bytes:
        """The standard output of a command pump() found done; SlurmError if it failed or timed out."""
        timed_out = bool(self.open_fds)
        if timed_out:
            self.process.kill()
        returncode = self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()
        if timed_out:
            raise SlurmError(f"{self.argv[0]} did not finish within {self.timeout_s:g} s (slurmCommandTimeout)")
        if returncode != 0:
            message = b"".join(self.output[self.stderr_fd]).decode(errors="replace").strip().replace("\n", " | ")
            raise SlurmError(f"{' '.join(self.argv[:3])} ... exited {returncode}: {message[:500]}")
        return b"".join(self.output[self.stdout_fd])

    def abandon(self) -> None:
        """Kill the command (the actor is stopping)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()
