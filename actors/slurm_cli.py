"""Slurm's command-line tools, each call with a timeout, batched: never one process per job.

What each release offers (see shared/reference/slurm-json-across-releases.md):
`sacct --json` and `squeue --json` everywhere; `scontrol show job --json` from 23.02 on.
All times go to Slurm in UTC (TZ=UTC), so a daylight-saving change never inverts a window.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from typing import Callable

import msgspec

from actors.errors import SlurmError

log = logging.getLogger("slurm_querier")

#: Releases whose JSON we know, oldest first. A newer one is read like the newest we know.
KNOWN_RELEASES = ((22, 5), (23, 2), (23, 11), (24, 5), (24, 11), (25, 5), (25, 11), (26, 5))
SCONTROL_JSON_SINCE = (23, 2)
SLICE_S = 1.0  #: while a command runs, the caller is called back this often (heartbeats)
SLURM_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class SlurmRelease:
    def __init__(self, text: str):
        match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not match:
            raise SlurmError(f"cannot read a Slurm version from {text.strip()[:80]!r}")
        self.major, self.minor = int(match.group(1)), int(match.group(2))
        self.micro = int(match.group(3) or 0)
        self.text = f"{self.major}.{self.minor:02d}.{self.micro}"

    @property
    def known(self) -> bool:
        return (self.major, self.minor) in KNOWN_RELEASES

    @property
    def newer_than_known(self) -> bool:
        return (self.major, self.minor) > KNOWN_RELEASES[-1]

    @property
    def has_scontrol_json(self) -> bool:
        return (self.major, self.minor) >= SCONTROL_JSON_SINCE

    def __str__(self) -> str:
        return self.text


def slurm_time(unix_s: float) -> str:
    return time.strftime(SLURM_TIME_FORMAT, time.gmtime(unix_s))


def sacct_jobs_argv(job_ids: list[int]) -> list[str]:
    """The allocation records of these jobs, of every user."""
    return ["sacct", "--json", "--allusers", "--allocations", "--jobs", ",".join(str(j) for j in sorted(set(job_ids)))]


class SlurmCommands:
    """Runs Slurm clients. `while_waiting` is called about once a second during a long command."""

    def __init__(self, timeout_s: float, while_waiting: Callable[[], None] = lambda: None):
        self.timeout_s = timeout_s
        self.while_waiting = while_waiting
        self.env = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8")
        self.calls = 0  #: how many Slurm processes we started (for status and tests)

    def run(self, argv: list[str]) -> bytes:
        self.calls += 1
        log.debug("running %s", " ".join(argv))
        try:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                       stdin=subprocess.DEVNULL)
        except OSError as e:
            raise SlurmError(f"{argv[0]} cannot be started: {e.strerror}") from None
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                out, err = process.communicate(timeout=SLICE_S)
                break
            except subprocess.TimeoutExpired:
                self.while_waiting()
                if time.monotonic() >= deadline:
                    process.kill()
                    process.communicate()
                    raise SlurmError(f"{argv[0]} did not finish within {self.timeout_s:g} s (slurmCommandTimeout)") from None
        if process.returncode != 0:
            message = err.decode(errors="replace").strip().replace("\n", " | ")[:500]
            raise SlurmError(f"{' '.join(argv[:3])} ... exited {process.returncode}: {message}")
        return out

    def release(self) -> SlurmRelease:
        return SlurmRelease(self.run(["sacct", "--version"]).decode(errors="replace"))

    def cluster_name(self) -> str:
        for line in self.run(["scontrol", "show", "config"]).decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip()
        raise SlurmError("scontrol show config names no ClusterName")

    def sinfo(self) -> bytes:
        return self.run(["sinfo", "--json"])

    def sacct_window(self, start_s: float, end_s: float) -> bytes:
        """Every allocation (no steps) active between start and end, of every user."""
        return self.run(["sacct", "--json", "--allusers", "--allocations",
                         "--starttime", slurm_time(start_s), "--endtime", slurm_time(end_s)])

    def sacct_jobs(self, job_ids: list[int]) -> bytes:
        return self.run(sacct_jobs_argv(job_ids))

    def live_jobs(self, release: SlurmRelease) -> bytes:
        """Every job slurmctld still holds in memory (running, and finished within MinJobAge).

        Raises SlurmError when the answer lists errors: slurmctld unreachable, 22.05's squeue
        still exits 0 after 9 s with `"errors": [...]` and no job, which must not read as "no jobs"."""
        argv = ["scontrol", "show", "job", "--json"] if release.has_scontrol_json else ["squeue", "--json"]
        out = self.run(argv)  # 22.05 squeue: ignores filters, dumps every job in memory
        errors = _listed_errors(out)
        if errors:
            raise SlurmError(f"{' '.join(argv)} answered with errors: {errors}")
        return out


class _Reply(msgspec.Struct):
    errors: list | None = None


def _listed_errors(document: bytes) -> str:
    """The `errors` a Slurm --json answer lists, as one line ("" when none or not readable)."""
    try:
        errors = msgspec.json.decode(document, type=_Reply).errors or []
    except msgspec.DecodeError:
        return ""  # not JSON at all: the caller's decoder says so
    texts = [str(e.get("description") or e.get("error") or e) + (f" ({e['source']})" if e.get("source") else "")
             if isinstance(e, dict) else str(e) for e in errors]
    return "; ".join(texts)[:500]
