"""How far a poll may move the watermark when slurmdbd lags behind slurmctld.

A job's record reaches slurmdbd some seconds after slurmctld knows it (more under load, or while
slurmctld's link to slurmdbd is down but sacct still answers). The poll window re-reads
WINDOW_OVERLAP_S behind the watermark, which covers the usual lag; a longer one would let a job's end
fall behind the window for good: the job, or its stop, never seen. slurmctld still holds an ended job
for MinJobAge: while it says a job ended that accounting has not shown ended, the watermark stays at
that job's end, so the next windows read it again until its record is there.
"""

from __future__ import annotations

from typing import Iterable

from actors.slurm_records import JobKey

#: How long one job may hold the watermark: a job slurmdbd will never have (its record lost, or one
#: sacct cannot read) must not pin the window for good.
HOLD_MAX_S = 600


class AccountingLag:
    def __init__(self) -> None:
        self.ended_seen: dict[int, int] = {}  #: job id -> the latest end accounting showed
        self.lagging_since: dict[int, float] = {}  #: job id -> when it was first found lagging
        self.lagging: list[int] = []  #: job ids holding the watermark at the last check, earliest end first
        self.given_up: set[int] = set()  #: job ids still lagging that no longer hold it
        self.newly_given_up: list[int] = []  #: those that stopped holding it at the last check

    def saw(self, key: JobKey) -> None:
        """A sacct record: remember the job once it shows an end."""
        if key.time.end and key.time.end > self.ended_seen.get(key.job_id, 0):
            self.ended_seen[key.job_id] = key.time.end

    def unconfirmed(self, live_keys: Iterable[JobKey], before: float) -> list[int]:
        """Jobs slurmctld says ended before `before` (this poll's window start) that accounting has not
        shown ended to this process: after a restart, every job of the last MinJobAge. Earlier windows
        read them (the watermark could not pass them otherwise); one `sacct -j` confirms it, instead of
        holding the window back and reading them all again."""
        return [key.job_id for key in live_keys
                if 0 < key.ended_in_slurmctld_at < before and key.job_id not in self.given_up
                and self.ended_seen.get(key.job_id, 0) < key.ended_in_slurmctld_at]

    def hold_at(self, live_keys: Iterable[JobKey], now: float) -> float | None:
        """The earliest end of a job slurmctld says ended and accounting has not shown ended (for at
        most HOLD_MAX_S per job), or None when accounting is up to date with slurmctld."""
        ended = {key.job_id: key.ended_in_slurmctld_at for key in live_keys if key.ended_in_slurmctld_at}
        # what slurmctld no longer holds cannot hold the watermark: forget it (memory follows slurmctld)
        self.ended_seen = {job: end for job, end in self.ended_seen.items() if job in ended}
        # the same end in both (checked on real 22.05-26.05 records); a requeued job ends later
        lagging = {job: end for job, end in ended.items() if self.ended_seen.get(job, 0) < end}
        self.lagging_since = {job: self.lagging_since.get(job, now) for job in lagging}
        holding = {job: end for job, end in lagging.items() if now - self.lagging_since[job] <= HOLD_MAX_S}
        self.newly_given_up = sorted(job for job in lagging if job not in holding and job not in self.given_up)
        self.given_up = set(lagging) - set(holding)
        self.lagging = sorted(holding, key=holding.get)
        return float(min(holding.values())) if holding else None
