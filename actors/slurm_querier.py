"""slurm_querier: reads Slurm on the poll interval and when the hook nudges, hands jobs to the translator.

A poll reads the window since the last acknowledged poll (lastRunPath's mtime, as the original;
clamped to slurmQueryMaxSpan) in chunks of slurmQueryChunk seconds, plus one snapshot of the jobs
slurmctld still holds (their resources). The window only moves on once the translator has
acknowledged every batch of the poll, so a crash anywhere re-reads it: the outbox makes that
harmless.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import time

import msgspec
import zmq

from actors import VERSION, metric_counts
from actors.accounting_lag import HOLD_MAX_S, AccountingLag
from actors.backoff import compute_backoff
from actors.errors import SlurmError
from actors.logs import job_tag
from actors.messages import NULL_RAW, BatchDone, JobNudge, QuerierInbox, SlurmBatch, SlurmJobRecord
from actors.node_states import nodestate_body
from actors.nudge_queue import MAX_JOBS_PER_QUERY, NudgeQueue, Query
from actors.outbox import NODESTATE_KEY, Outbox
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime
from actors.slurm_call import SlurmCall
from actors.slurm_cli import SlurmCommands, SlurmRelease, sacct_jobs_argv
from actors.slurm_records import JobKey, split_jobs

RECORDS_PER_BATCH = 500  #: bounds one message; a busy week arrives as many batches
ACK_TIMEOUT_S = 15.0  #: a batch the translator did not acknowledge by then is sent again (it died)
#: Each poll re-reads this far behind the watermark. slurmdbd learns of a job, and of its end, some
#: seconds after slurmctld (measured here: up to 5 s, more under load); a window that ran before the
#: record arrived must be read again, or the job (or its stop) is never seen. The original re-reads
#: 1 s, which lost jobs on the test bench; the outbox makes re-reading harmless.
WINDOW_OVERLAP_S = 60
MAX_RETRY_DELAY_S = 60.0
VERSION_KEY = "adapter.version"  #: kv: the adapter version that last ran on this store
_NO_LIVE = (None, NULL_RAW)  #: a job slurmctld does not hold (any more)


class Querier:
    def __init__(self, rt: ActorRuntime, to_translator: zmq.Socket, outbox: Outbox):
        self.rt = rt
        self.outbox = outbox
        self.config = rt.config
        self.log = rt.log
        self.to_translator = to_translator
        self.slurm = SlurmCommands(rt.config.slurm_command_timeout, while_waiting=rt.beat)
        self.release: SlurmRelease | None = None
        self.cluster = ""
        self.ignore_hosts = re.compile(rt.config.ignore_hosts) if rt.config.ignore_hosts else None
        self.batch_ids = itertools.count(int(time.time() * 1000))
        self.outstanding: dict[int, tuple[SlurmBatch, float, int | None]] = {}  # id -> (batch, sent_at, poll)
        self.poll_pending: dict[int, tuple[float, set[int]]] = {}  # poll id -> (window end, batch ids)
        self.acknowledged: dict[tuple[str, int], tuple] = {}  # job -> progress the translator has
        self.lag = AccountingLag()
        self.lag_logged: tuple[list[int], float] = ([], 0.0)  # the lagging jobs last logged, and when
        self.progress_sent: dict[int, dict[tuple[str, int], tuple]] = {}  # poll id -> job -> progress
        self.in_window: set[tuple[str, int]] = set()  # jobs of the current poll's window
        self.nudges = NudgeQueue(rt.config.slurm_query_delay, rt.config.slurm_max_retries)
        self.nudge_calls: list[tuple[SlurmCall, Query]] = []  # the sacct -j of nudges running now
        self.failures = 0
        self.next_poll_at = time.time() + self.config.slurm_query_delay
        self.facts = rt.facts
        self.facts.update({"polls": 0, "last_poll_at": None, "last_error": "", "slurm_release": None,
                           "watermark": self.watermark(), "pending_nudges": 0, "slurm_calls": 0})

    def retry_quarantined_after_upgrade(self) -> None:
        if (self.outbox.kv_get(VERSION_KEY) or b"").decode() != VERSION:
            count = self.outbox.quarantine_retry_all()
            if count:
                self.log.info("adapter %s: translating %d quarantined job(s) again", VERSION, count)
            self.outbox.kv_set(VERSION_KEY, VERSION.encode())

    def nudge_quarantine_retries(self, now: float) -> None:
        for cluster, job_id in self.outbox.quarantine_take_retries():
            self.on_nudge(JobNudge(cluster=cluster, job_id=job_id, source="ctl", at=now), now)

    # --- the watermark: lastRunPath's mtime, as the original ----------------------------------

    def watermark(self) -> float:
        try:
            return os.stat(self.config.last_run_path).st_mtime
        except FileNotFoundError:
            return 0.0

    def set_watermark(self, unix_s: float) -> None:
        path = self.config.last_run_path
        try:
            if not os.path.exists(path):
                open(path, "a").close()
            os.utime(path, (unix_s, unix_s))
        except OSError as e:  # stateDir read-only or full: the window stays, the next poll reads it again
            self.facts["store_error"] = f"lastRunPath {path}: {e.strerror or e}"
            self.log.error("cannot move the poll watermark, lastRunPath %s: %s; the next poll reads the window again",
                           path, e.strerror or e)
            return
        self.facts.pop("store_error", None)
        self.facts["watermark"] = unix_s

    # --- Slurm ----------------------------------------------------------------------------------

    def ensure_release(self) -> SlurmRelease:
        if self.release is None:
            release = self.slurm.release()
            if release.newer_than_known:
                self.log.warning("Slurm %s is newer than the releases we know; reading it like the newest", release)
            elif not release.known:
                self.log.warning("Slurm %s is not a release we know; reading it like its nearest", release)
            self.cluster = self.slurm.cluster_name()
            self.log.info("Slurm release %s, cluster %s", release, self.cluster)
            self.release = release
            self.facts["slurm_release"] = release.text
        return self.release

    def record_node_states(self) -> None:
        """sinfo's node states, for rest_submitter to pass on to cc-backend (a failure costs only this)."""
        try:
            body = nodestate_body(self.slurm.sinfo(), self.cluster, self.ignore_hosts)
        except SlurmError as e:
            self.log.warning("node states not updated: %s", e)
            return
        try:
            self.outbox.kv_set(NODESTATE_KEY, body)
        except sqlite3.Error as e:  # stateDir full or read-only
            self.log.warning("node states not kept: %s", e)

    def live_index(self) -> dict[int, tuple[JobKey, msgspec.Raw]]:
        document = self.slurm.live_jobs(self.ensure_release())
        return {key.job_id: (key, raw) for key, raw in split_jobs(document, "live jobs") if key is not None}

    # --- polls ----------------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        release = self.ensure_release()
        start = max(self.watermark() - WINDOW_OVERLAP_S, 0)
        if start < now - self.config.slurm_query_max_span:
            if start > 0:
                self.log.warning("last poll was %d s ago; reading only the last %d s (slurmQueryMaxSpan)",
                                 now - start, self.config.slurm_query_max_span)
            start = now - self.config.slurm_query_max_span
        poll_id = next(self.batch_ids)
        batch_ids: set[int] = set()
        self.in_window = set()
        chunk = max(60, self.config.slurm_query_chunk)
        chunk_start = start
        live: dict[int, tuple[JobKey, msgspec.Raw]] = {}
        while chunk_start < now:
            chunk_end = min(now, chunk_start + chunk)
            rows = split_jobs(self.slurm.sacct_window(chunk_start, chunk_end), "sacct")
            # slurmctld's view is taken after the accounting one: a job sacct shows running is then
            # running there too, with its allocation (taken before, it could still be pending).
            live = self.live_index()
            for part in _batches(self.records(rows, live, poll_id)):
                batch_ids.add(self.send_batch(part, release, "poll", poll_id))
            chunk_start = chunk_end
        self.confirm_ended_before(start, live)
        self.poll_pending[poll_id] = (self.window_end(now, live), batch_ids)
        self.record_node_states()
        self.facts["polls"] += 1
        self.facts["last_poll_at"] = now
        self.log.info("poll %s..%s: %d batches to the translator", int(start), int(now), len(batch_ids))
        self.finish_poll_if_done(poll_id)

    def confirm_ended_before(self, start: float, live: dict[int, tuple[JobKey, msgspec.Raw]]) -> None:
        """One `sacct -j` for the jobs slurmctld ended before this window that this process has not
        seen ended (after a restart: the last MinJobAge of jobs), so that they do not hold the window."""
        job_ids = self.lag.unconfirmed((key for key, _ in live.values()), before=start)[:MAX_JOBS_PER_QUERY]
        if job_ids:
            for key, _ in split_jobs(self.slurm.sacct_jobs(job_ids), "sacct -j"):
                if key is not None:
                    self.lag.saw(key)

    def window_end(self, now: float, live: dict[int, tuple[JobKey, msgspec.Raw]]) -> float:
        """Where the watermark goes once this poll is acknowledged: now, or the end of the earliest
        job slurmctld says ended that accounting has not shown ended yet (actors/accounting_lag.py)."""
        hold = self.lag.hold_at((key for key, _ in live.values()), now)
        self.facts["accounting_lagging_jobs"] = len(self.lag.lagging)
        self.facts["accounting_lag_s"] = round(now - hold) if hold is not None and hold < now else 0
        if self.lag.newly_given_up:
            self.log.warning("sacct has not shown the end of job(s) %s for %d s though slurmctld shows them ended; "
                             "the poll window no longer waits for them", ", ".join(map(str, self.lag.newly_given_up[:10])),
                             HOLD_MAX_S)
        if hold is None or hold >= now:
            return now
        # logged when the set of jobs changes, else once a minute: a poll every few seconds would repeat it
        if now - hold > WINDOW_OVERLAP_S and (self.lag_logged[0] != self.lag.lagging or now - self.lag_logged[1] >= 60):
            self.lag_logged = (list(self.lag.lagging), now)
            shown = ", ".join(str(job_id) for job_id in self.lag.lagging[:10])
            self.log.warning("slurmdbd lags: %d job(s) slurmctld ended up to %d s ago are not ended in sacct yet "
                             "(%s%s); the next polls read again from their end", len(self.lag.lagging), now - hold,
                             shown, ", ..." if len(self.lag.lagging) > 10 else "")
        return hold

    def records(self, rows, live: dict[int, tuple[JobKey, msgspec.Raw]], poll_id: int) -> list[SlurmJobRecord]:
        """The jobs whose progress changed since the translator last acknowledged them; a long
        running job is sent once while it runs and once when it ends, not at every poll."""
        records = []
        for key, raw in rows:
            if key is None:
                self.log.warning("%s", raw)
                continue
            job = (key.cluster or "", key.job_id)
            self.in_window.add(job)
            self.lag.saw(key)
            if self.acknowledged.get(job) == key.progress:
                continue
            self.progress_sent.setdefault(poll_id, {})[job] = key.progress
            records.append(SlurmJobRecord(job_id=key.job_id, cluster=key.cluster or "", sacct=raw,
                                          live=live.get(key.job_id, _NO_LIVE)[1]))
        return records

    def send_batch(self, records: list[SlurmJobRecord], release: SlurmRelease, source: str, poll_id: int | None) -> int:
        batch = SlurmBatch(batch_id=next(self.batch_ids), release=release.text, source=source,
                           polled_at=time.time(), records=records)
        self.outstanding[batch.batch_id] = (batch, time.time(), poll_id)
        metric_counts.count(self.facts, f"{metric_counts.JOBS_SEEN}.{source}", len(records))
        if not self.rt.send(self.to_translator, batch):
            self.log.warning("translator queue full; batch %d will be sent again", batch.batch_id)
        return batch.batch_id

    def on_batch_done(self, done: BatchDone) -> None:
        entry = self.outstanding.pop(done.batch_id, None)
        if entry is None:
            return
        poll_id = entry[2]
        if poll_id in self.poll_pending:
            self.poll_pending[poll_id][1].discard(done.batch_id)
            self.finish_poll_if_done(poll_id)

    def finish_poll_if_done(self, poll_id: int) -> None:
        window_end, batch_ids = self.poll_pending[poll_id]
        if not batch_ids:
            del self.poll_pending[poll_id]
            self.set_watermark(window_end)
            self.acknowledged.update(self.progress_sent.pop(poll_id, {}))
            # forget jobs that left the window, so the memory follows the window, not the history
            self.acknowledged = {job: p for job, p in self.acknowledged.items() if job in self.in_window}

    def resend_unacknowledged(self, now: float) -> None:
        for batch_id, (batch, sent_at, poll_id) in list(self.outstanding.items()):
            if now - sent_at > ACK_TIMEOUT_S:
                self.log.warning("batch %d not acknowledged in %d s; sending it again", batch_id, ACK_TIMEOUT_S)
                self.outstanding[batch_id] = (batch, now, poll_id)
                self.rt.send(self.to_translator, batch)

    # --- hook nudges ------------------------------------------------------------------------------

    def on_nudge(self, nudge: JobNudge, now: float) -> None:
        self.nudges.add(nudge, now)  # the same job again costs nothing (actors/nudge_queue.py)
        self.facts["nudges_received"] = self.facts.get("nudges_received", 0) + 1
        self.facts["pending_nudges"] = len(self.nudges)

    def start_nudge_queries(self, now: float) -> None:
        """Start the sacct -j calls the nudge queue asks for; they run while the loop goes on receiving."""
        while (query := self.nudges.start(now)) is not None:
            try:
                self.ensure_release()
                call = SlurmCall(sacct_jobs_argv(query.job_ids), self.slurm.env, self.config.slurm_command_timeout)
            except SlurmError:
                self.nudges.fail(query, now)
                raise
            self.slurm.calls += 1
            self.nudge_calls.append((call, query))
            self.facts["nudge_sacct_calls"] = self.facts.get("nudge_sacct_calls", 0) + 1
            self.facts["nudge_jobs_asked"] = self.facts.get("nudge_jobs_asked", 0) + len(query.nudges)

    def pump_nudge_queries(self, now: float) -> None:
        """Read what the running calls wrote; settle those that are done."""
        for call, query in list(self.nudge_calls):
            if call.pump():
                self.nudge_calls.remove((call, query))
                try:
                    self.settle_nudge_query(query, call.result())
                except SlurmError:
                    self.nudges.fail(query, now)
                    raise
                self.failures = 0  # Slurm answers again: the next error backs off from the start

    def settle_nudge_query(self, query: Query, document: bytes) -> None:
        """The jobs that show what their event promised go to the translator, the others try again later."""
        release = self.ensure_release()
        found = {key.job_id: (key, raw) for key, raw in split_jobs(document, "sacct -j") if key is not None}
        for key, _ in found.values():
            self.lag.saw(key)
        asked = [n for n in query.nudges if n.job_id in found]
        # slurmctld's view after sacct's, as in a poll; only when a job may go on. An ended job that
        # sacct still shows as its placeholder goes on when slurmctld's record has what it lacks.
        live = self.live_index() if any(found[n.job_id][0].ready_for(n.context)
                                         or found[n.job_id][0].may_be_completed_by_live for n in asked) else {}
        ready = {n.key: found[n.job_id] for n in asked
                 if found[n.job_id][0].ready_for(n.context, live.get(n.job_id, _NO_LIVE)[0])}
        given_up = self.nudges.settle(query, set(ready), time.time())
        if given_up:
            tags = [job_tag(n.cluster, n.job_id) for n in given_up[:10]]
            self.log.warning("sacct has no final record of %d nudged job(s) after %d tries; the next poll will "
                             "pick them up: %s%s", len(given_up), self.nudges.max_retries, ", ".join(tags),
                             ", ..." if len(given_up) > len(tags) else "")
        if ready:
            records = [SlurmJobRecord(job_id=key.job_id, cluster=key.cluster or "", sacct=raw,
                                      live=live.get(key.job_id, _NO_LIVE)[1]) for key, raw in ready.values()]
            for part in _batches(records):
                self.send_batch(part, release, "hook", None)
            self.nudges.went_on_ended([job for job, (key, _) in ready.items() if key.time.end], time.time())
        self.log.debug("sacct -j for %d nudged job(s): %d to the translator, %d waiting",
                       len(query.nudges), len(ready), len(self.nudges))
        self.facts["pending_nudges"] = len(self.nudges)

    def next_wakeup_ms(self, now: float) -> int:
        due_at = self.nudges.next_due_at()
        wake_at = self.next_poll_at if due_at is None else min(self.next_poll_at, due_at)
        return max(0, min(POLL_TIMEOUT_MS, int((wake_at - now) * 1000)))

    def on_slurm_error(self, error: SlurmError, now: float) -> None:
        self.failures += 1
        metric_counts.count(self.facts, metric_counts.SLURM_ERRORS)
        self.release = None  # Slurm may have been upgraded or restarted: ask again
        delay = compute_backoff(self.failures, base_s=self.config.slurm_query_delay, cap_s=min(
            MAX_RETRY_DELAY_S, self.config.slurm_poll_interval))
        self.facts["last_error"] = str(error)
        self.log.error("%s; retrying in %.0f s", error, delay)
        self.next_poll_at = min(self.next_poll_at, now + delay)
        self.nudges.postpone(now + delay)


def _batches(records: list[SlurmJobRecord]):
    for i in range(0, len(records), RECORDS_PER_BATCH):
        yield records[i:i + RECORDS_PER_BATCH]


def run(rt: ActorRuntime) -> int:
    inbox = rt.socket(zmq.PULL, bind=rt.pipes.querier)
    to_translator = rt.socket(zmq.PUSH, connect=rt.pipes.translator)
    decoder = msgspec.json.Decoder(QuerierInbox)
    outbox = Outbox(rt.config.outbox_path)
    querier = Querier(rt, to_translator, outbox)
    querier.retry_quarantined_after_upgrade()
    while rt.keep_running():
        now = time.time()
        poller = zmq.Poller()  # the inbox, and the pipes of the sacct -j calls running for nudges
        poller.register(inbox, zmq.POLLIN)
        for call, _ in querier.nudge_calls:
            for fd in call.fds():
                poller.register(fd, zmq.POLLIN)
        if poller.poll(querier.next_wakeup_ms(now)):
            for message in rt.receive_all(inbox, decoder):
                match message:
                    case JobNudge():
                        querier.on_nudge(message, time.time())
                    case BatchDone():
                        querier.on_batch_done(message)
        now = time.time()
        try:
            querier.pump_nudge_queries(now)
            querier.start_nudge_queries(now)
            if now >= querier.next_poll_at:
                querier.next_poll_at = now + rt.config.slurm_poll_interval
                querier.nudge_quarantine_retries(now)
                querier.poll(now)
                querier.failures = 0
                querier.facts["last_error"] = ""
        except SlurmError as e:
            querier.on_slurm_error(e, now)
        querier.resend_unacknowledged(time.time())
        querier.facts["slurm_calls"] = querier.slurm.calls
    for call, _ in querier.nudge_calls:
        call.abandon()
    outbox.close()
    return 0
