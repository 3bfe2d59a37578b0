"""The hook nudges slurm_querier waits on: when a `sacct -j` starts and for which jobs, and what
becomes of each nudged job once sacct answered. Policy only (no Slurm, no sockets): tests feed it
timelines directly.

- One nudge per job: the same event again (the hook and its spooled copy, a flood) costs nothing;
  an epilog event for a job still waiting for its start record makes it wait for its end, afresh.
  An epilog event for a job whose ended record went to the translator already (a query found the
  end before the event came) costs nothing either; a prolog event (a requeue) makes it new.
- A fresh nudge is due GATHER_S after its hook sent it (at most slurmQueryDelay), so the events of
  one scheduler pass share a call.
- A query asks for the due jobs, fresh ones first, then due retries, and fills up with the other
  waiting jobs (they ride along: the call costs the same). A rider whose record is not there yet
  keeps its own schedule; only a due job spends one of its slurmMaxRetries tries.
- While a query with fresh events runs, new events wait and then all go into the next query. While
  only retries run, fresh events start their own query at once: retries never hold them up. At most
  MAX_RUNNING queries at a time; a job is in one query at most.
- A try that does not find the record the event promised is repeated RETRY_S after sacct answered,
  doubling up to slurmQueryDelay; after slurmMaxRetries tries the job is left to the next poll.
"""

from __future__ import annotations

from actors.messages import JobNudge

EPILOG = "epilog_slurmctld"
GATHER_S = 0.05  #: a fresh nudge waits this long for the others of its scheduler pass
RETRY_S = 0.25  #: first retry of a job whose record sacct does not show yet
MAX_JOBS_PER_QUERY = 2000  #: job ids in one sacct -j (they form one argument: Linux caps it at 128 KiB)
MAX_RUNNING = 2  #: queries at once: one of fresh events beside one of retries
ENDED_MEMORY_S = 600.0  #: how long a job whose ended record went on is remembered


class Nudge:
    def __init__(self, nudge: JobNudge, due_at: float):
        self.cluster, self.job_id, self.context = nudge.cluster, nudge.job_id, nudge.context
        self.due_at = due_at
        self.attempts = 0
        self.asked = False  #: in a query that has not been answered yet

    @property
    def key(self) -> tuple[str, int]:
        return (self.cluster, self.job_id)


class Query:
    """One sacct -j on its way: the jobs it asks for, when, and whether fresh events are among them."""

    def __init__(self, nudges: list[Nudge], asked_at: float):
        self.nudges = nudges
        self.asked_at = asked_at
        self.fresh = any(n.attempts == 0 and n.due_at <= asked_at for n in nudges)

    @property
    def job_ids(self) -> list[int]:
        return [n.job_id for n in self.nudges]


class NudgeQueue:
    def __init__(self, query_delay_s: float, max_retries: int):
        self.gather_s = min(query_delay_s, GATHER_S)
        self.max_retry_delay_s = query_delay_s
        self.max_retries = max_retries
        self.nudges: dict[tuple[str, int], Nudge] = {}
        self.running: list[Query] = []
        self.ended: dict[tuple[str, int], float] = {}  #: job -> when its ended record went on, oldest first

    def __len__(self) -> int:
        return len(self.nudges)

    def add(self, nudge: JobNudge, now: float) -> None:
        # gathered from when the hook sent the event: one that waited in the inbox while a call ran
        # has gathered long enough (the sender's clock may differ, hence the clamp to [now, now + GATHER_S])
        due_at = max(now, min(now, nudge.at) + self.gather_s)
        key = (nudge.cluster, nudge.job_id)
        if key in self.ended:
            if nudge.context == EPILOG:
                return
            del self.ended[key]  # a prolog again: the job was requeued
        waiting = self.nudges.get(key)
        if waiting is None:
            self.nudges[key] = Nudge(nudge, due_at)
        elif nudge.context == EPILOG and waiting.context != EPILOG:
            waiting.context, waiting.attempts, waiting.due_at = EPILOG, 0, due_at

    def next_due_at(self) -> float | None:
        """When the next query may start; None when nothing waits or nothing may start before an answer."""
        if len(self.running) >= MAX_RUNNING or any(q.fresh for q in self.running):
            return None
        fresh_only = bool(self.running)
        return min((n.due_at for n in self.nudges.values()
                    if not n.asked and (n.attempts == 0 or not fresh_only)), default=None)

    def start(self, now: float) -> Query | None:
        """The next query, if one should start now."""
        if len(self.running) >= MAX_RUNNING or any(q.fresh for q in self.running):
            return None
        waiting = [n for n in self.nudges.values() if not n.asked]
        due = [n for n in waiting if n.due_at <= now and (n.attempts == 0 or not self.running)]
        if not due:
            return None
        due.sort(key=lambda n: (n.attempts > 0, n.due_at))
        if len(due) < MAX_JOBS_PER_QUERY:
            riders = sorted((n for n in waiting if n.due_at > now), key=lambda n: n.due_at)
            due += riders[:MAX_JOBS_PER_QUERY - len(due)]
        query = Query(due[:MAX_JOBS_PER_QUERY], now)
        for nudge in query.nudges:
            nudge.asked = True
        self.running.append(query)
        return query

    def settle(self, query: Query, ready: set[tuple[str, int]], answered_at: float) -> list[Nudge]:
        """After sacct answered: the `ready` jobs are done, the others try again later; returns those
        that used up their tries (they are dropped: the next poll finds them)."""
        self.running.remove(query)
        given_up = []
        for nudge in query.nudges:
            nudge.asked = False
            if nudge.key in ready:
                del self.nudges[nudge.key]
            elif nudge.due_at <= query.asked_at:  # not a rider, and no new event came meanwhile
                nudge.attempts += 1
                if nudge.attempts >= self.max_retries:
                    given_up.append(self.nudges.pop(nudge.key))
                else:
                    nudge.due_at = answered_at + min(self.max_retry_delay_s, RETRY_S * 2 ** (nudge.attempts - 1))
        return given_up

    def went_on_ended(self, keys, now: float) -> None:
        """These jobs' records with an end went to the translator: their epilog events say nothing new."""
        for key in keys:
            self.ended.pop(key, None)
            self.ended[key] = now
        while self.ended:
            key, at = next(iter(self.ended.items()))
            if at > now - ENDED_MEMORY_S:
                break
            del self.ended[key]

    def fail(self, query: Query, retry_at: float) -> None:
        """Slurm failed this query: its jobs, and all others, are asked again at `retry_at` at the earliest."""
        self.running.remove(query)
        for nudge in query.nudges:
            nudge.asked = False
        self.postpone(retry_at)

    def postpone(self, until: float) -> None:
        for nudge in self.nudges.values():
            nudge.due_at = max(nudge.due_at, until)
