"""nats_publisher: delivers the outbox's "nats" rows as line-protocol job events (contract §9).

A row counts as sent only after `flush()` came back: the broker has it. Then:
* dual mode (ccRestSubmitJobs true): delivered. cc-backend gets the job over REST; NATS is for others.
* NATS-only mode: cc-backend reads the subject at most once and answers nothing, so the row becomes
  `published` and is delivered once cc-backend's REST read API lists the job (a stop: listed and no
  longer running). Not listed by its confirm-by time, it goes back to pending and out again;
  cc-backend refuses a second start or stop of the same run, so re-sending is safe.
The outbox hands out a stop only after its start was delivered, which also keeps a start and its
stop out of cc-backend's concurrent workers at the same time (v1.5.2+ may reorder them, §9.1).
NATS down: rows stay pending, nats-py reconnects forever; the first connect is retried with backoff.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING

import msgspec

from actors import metric_counts
from actors.backoff import compute_backoff
from actors.errors import BackendUnavailable
from actors.line_protocol import LineProtocolError, encode_job_event
from actors.logs import job_tag
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime

if TYPE_CHECKING:
    from actors.outbox import Outbox, Row

# asyncio (~6 MB), sqlite3, nats-py and requests are imported where they are used: a daemon without
# natsServer keeps this process as small as the placeholder it replaces.

SINK = "nats"
ROWS_PER_PASS = 200
TICK_S = 0.25  #: heartbeat and stop check, whatever the worker is waiting for
IDLE_S = 0.5  #: outbox look-up period when there was nothing to send
CONNECT_TIMEOUT_S = 5  #: one TCP + handshake attempt
RECONNECT_WAIT_S = 2  #: nats-py's pause between attempts to one server
FLUSH_TIMEOUT_S = 5.0
RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0  #: longest pause after failed connects or flushes
STORE_RETRY_S = 5.0  #: after the outbox could not be written (stateDir full or read-only)
#: NATS-only: re-send an unconfirmed row after this long while no visibility has been observed yet.
#: A start shows up in GET /api/jobs/ only after cc-backend's commit worker (default every 2 min).
CONFIRM_AFTER_S = 300.0
CONFIRM_AFTER_MIN_S = 15.0
CONFIRM_AFTER_MAX_S = 1800.0
VISIBILITY_SAMPLES = 50  #: recent publish-to-listed delays the confirm-by time is derived from
CONFIRM_CHECK_S = 3.0  #: shortest pause between two read-backs
CONFIRM_ROWS = 1000  #: published rows looked up per read-back
CONFIRM_WINDOW_S = 3600  #: widest start-time range read in one GET /api/jobs/
MAX_PUBLISHES = 10  #: a row cc-backend never lists after this many sends is set aside


class _Times(msgspec.Struct):
    """The few body fields the line needs (start and stop bodies alike)."""
    startTime: int = 0
    stopTime: int = 0
    partition: str = ""


_times_decoder = msgspec.json.Decoder(_Times)


def times_of(body: bytes) -> _Times:
    try:
        return _times_decoder.decode(body)
    except msgspec.DecodeError:  # not ours to judge here: cc-backend's log will say what is wrong
        return _Times()


def event_time_s(row: Row, now: float) -> int:
    """The line's timestamp: the start time for a start, the stop time for a stop; never zero."""
    times = times_of(row.body)
    return (times.stopTime if row.event == "stop_job" else times.startTime) or row.start_time or int(now)


def confirm_after_s(visible_after_s) -> float:
    """How long a published row may stay unlisted before it is sent again."""
    if not visible_after_s:
        return CONFIRM_AFTER_S
    return min(CONFIRM_AFTER_MAX_S, max(CONFIRM_AFTER_MIN_S, 2 * max(visible_after_s) + 10))


def lookup_windows(rows: list[Row]) -> list[tuple[str, int, int]]:
    """(cluster, first, last start time) ranges covering the rows, each at most CONFIRM_WINDOW_S wide."""
    windows: list[tuple[str, int, int]] = []
    for row in sorted(rows, key=lambda r: (r.cluster, r.start_time)):
        if windows and windows[-1][0] == row.cluster and row.start_time - windows[-1][1] <= CONFIRM_WINDOW_S:
            windows[-1] = (row.cluster, windows[-1][1], row.start_time)
        else:
            windows.append((row.cluster, row.start_time, row.start_time))
    return windows


def is_confirmed(row: Row, listed: dict[tuple[str, int, int], str]) -> bool:
    """listed: (cluster, jobId, startTime) -> jobState, as cc-backend shows them."""
    state = listed.get((row.cluster, row.job_id, row.start_time))
    return state is not None and (row.event == "start_job" or state != "running")


def connect_options(config, name: str) -> dict:
    options = {"servers": [f"nats://{config.nats_server}:{config.nats_port}"], "name": name,
               "connect_timeout": CONNECT_TIMEOUT_S, "reconnect_time_wait": RECONNECT_WAIT_S,
               "max_reconnect_attempts": -1, "allow_reconnect": True}
    for key, value in (("user", config.nats_user), ("password", config.nats_password),
                       ("user_credentials", config.nats_creds_file), ("nkeys_seed", config.nats_n_key_seed_file)):
        if value:
            options[key] = value
    return options


class NatsPublisher:
    def __init__(self, rt: ActorRuntime, outbox: Outbox, rest=None):
        import concurrent.futures
        import socket

        self.rt, self.log, self.outbox, self.rest = rt, rt.log, outbox, rest  # rest: CcRest in NATS-only mode
        self.subject = rt.config.nats_subject
        self.hostname = socket.gethostname()
        self.nc = None
        self.closing = False
        self.failures = 0
        self.paused_until = 0.0
        self.next_check_at = 0.0
        self.visible_after_s: collections.deque = collections.deque(maxlen=VISIBILITY_SAMPLES)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="confirm")
        rt.facts.update({"mode": "nats-only" if rest else "dual", "connected": False, "last_success_at": None,
                         "last_error": "", "published": 0, "delivered": 0})

    # --- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        import asyncio

        from nats.aio.client import Client

        options = connect_options(self.rt.config, f"cc-slurm-adapter@{self.hostname}")
        attempts = 0
        while True:
            nc = Client()
            try:
                await asyncio.wait_for(nc.connect(**options, error_cb=self._on_error,
                                                  disconnected_cb=self._on_disconnected,
                                                  reconnected_cb=self._on_reconnected), 2 * CONNECT_TIMEOUT_S)
                self.nc = nc
                self.rt.facts.update(connected=True, last_error="")
                self.log.info("connected to NATS at %s, publishing on %s (%s mode)", options["servers"][0],
                              self.subject, self.rt.facts["mode"])
                return
            except (Exception, asyncio.TimeoutError) as e:  # noqa: BLE001 - every failure is retried
                await _close_quietly(nc)
                attempts += 1
                delay = compute_backoff(attempts, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)
                reason = self.rt.facts["last_error"] or f"{type(e).__name__}: {e}"
                level = self.log.warning if attempts % 10 == 0 else self.log.debug
                level("cannot connect to NATS at %s (%s); attempt %d, next in %.0f s; rows wait in the outbox",
                      options["servers"][0], reason, attempts, delay)
                await asyncio.sleep(delay)

    def _note_error(self, text: str) -> None:
        if text != self.rt.facts["last_error"]:  # logged once per new reason, not once per attempt
            self.log.warning("%s", text)
        self.rt.facts["last_error"] = text

    async def _on_error(self, error: Exception) -> None:
        self._note_error(f"NATS: {type(error).__name__}: {error}")

    async def _on_disconnected(self) -> None:
        if self.nc is not None and not self.closing:
            self.rt.facts["connected"] = False
            self.log.warning("disconnected from NATS; reconnecting (rows wait in the outbox)")

    async def _on_reconnected(self) -> None:
        self.rt.facts["connected"] = True
        self.log.info("reconnected to NATS")

    # --- the work ----------------------------------------------------------------------------------

    async def work(self) -> None:
        import asyncio

        await self.connect()
        while True:
            if await self.work_once(time.time()) < ROWS_PER_PASS:
                await asyncio.sleep(IDLE_S)

    async def work_once(self, now: float) -> int:
        """One pass: publish what is due, read published rows back. An outbox that cannot be written
        (stateDir full or read-only) pauses both for STORE_RETRY_S instead of crashing the actor: its
        rows stay as they were, and a row published but not marked goes out again (cc-backend refuses
        a second start or stop of the same run)."""
        import sqlite3

        sent = 0
        try:
            if now >= self.paused_until and self.nc.is_connected:
                sent = await self.publish_due(now)
            if self.rest is not None and now >= self.next_check_at:
                await self.confirm_published(now)
        except sqlite3.Error as e:
            self.rt.facts["store_error"] = f"outbox: {e}"
            self.log.error("cannot write the outbox (%s); trying again in %.0f s", e, STORE_RETRY_S)
            self.paused_until = self.next_check_at = time.time() + STORE_RETRY_S
            return 0
        if time.time() >= self.paused_until:
            self.rt.facts.pop("store_error", None)
        return sent

    async def publish_due(self, now: float) -> int:
        import asyncio

        import nats.errors

        rows = self.outbox.due(SINK, now, ROWS_PER_PASS)
        sent = []
        for row in rows:
            try:
                await self.nc.publish(self.subject, self.line_for(row, now))
            except (LineProtocolError, nats.errors.MaxPayloadError) as e:
                self.outbox.mark_failed(row.id, None, f"cannot be published: {type(e).__name__} {e}")
                metric_counts.outcome(self.rt.facts, "failed")
                self.log.error("%s: %s cannot be published (%s); set aside", job_tag(row.cluster, row.job_id),
                               row.event, e)
                continue
            except nats.errors.Error as e:
                self.log.warning("publish failed (%s); the rest of the batch waits", e)
                break
            sent.append(row.id)
        if not sent:
            return len(rows)
        try:
            await self.nc.flush(FLUSH_TIMEOUT_S)
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            metric_counts.outcome(self.rt.facts, "unreachable", len(sent))
            self._pause(now, f"flush failed: {type(e).__name__} {e}")
            return 0
        self.failures = 0
        if self.rest is not None:
            self.outbox.mark_published(sent, time.time() + confirm_after_s(self.visible_after_s))
        else:
            self.outbox.mark_delivered_many(sent)
            self.rt.facts["delivered"] += len(sent)
            metric_counts.observe_job_ends(self.rt.facts, [r for r in rows if r.id in sent], time.time())
        self.rt.facts.update(published=self.rt.facts["published"] + len(sent), last_success_at=time.time())
        self.log.debug("published %d events on %s", len(sent), self.subject)
        return len(rows)

    def line_for(self, row: Row, now: float) -> bytes:
        tags = {"hostname": self.hostname}
        if row.event == "stop_job":
            tags["partition"] = self._partition_of(row)
        return encode_job_event(row.event, row.body, event_time_s(row, now), tags)

    def _partition_of(self, row: Row) -> str:
        """The stop body has no partition; its start row (if not pruned yet) has."""
        for other in self.outbox.rows(cluster=row.cluster, job_id=row.job_id, sink=SINK, limit=20):
            if other.event == "start_job" and other.start_time == row.start_time:
                return times_of(other.body).partition
        return ""

    def _pause(self, now: float, reason: str) -> None:
        self.failures += 1
        delay = compute_backoff(self.failures, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)
        self.paused_until = now + delay
        self._note_error(f"{reason}; rows stay pending, next try in {delay:.0f} s")

    async def confirm_published(self, now: float) -> None:
        """NATS-only: read the published rows back through cc-backend's REST API."""
        rows = self.outbox.published(SINK, CONFIRM_ROWS)
        if not rows:
            self.next_check_at = now + CONFIRM_CHECK_S
            return
        import asyncio

        try:
            listed = await asyncio.get_running_loop().run_in_executor(self.pool, self._lookup, lookup_windows(rows))
        except BackendUnavailable as e:  # unknown is not "missing": nothing is re-sent on this
            self._note_error(f"cannot read published jobs back from cc-backend: {e}")
            self.next_check_at = time.time() + CONFIRM_CHECK_S
            return
        done = time.time()
        self.next_check_at = done + max(CONFIRM_CHECK_S, 5 * (done - now))  # the read-back's own load stays small
        confirmed = [row for row in rows if is_confirmed(row, listed)]
        self.visible_after_s.extend(done - row.updated_at for row in confirmed)
        if confirmed:
            self.outbox.mark_delivered_many([row.id for row in confirmed])
            self.rt.facts["delivered"] += len(confirmed)
            metric_counts.observe_job_ends(self.rt.facts, confirmed, done)
        for row in rows:
            if row.next_try_at <= done and not is_confirmed(row, listed):
                self._resend_later(row, done)

    def _lookup(self, windows: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
        listed = {}
        for cluster, first, last in windows:
            for job in self.rest.list_jobs(cluster=cluster, start_time=(first - 1, last + 1)):
                listed[(job.get("cluster"), job.get("jobId"), job.get("startTime"))] = job.get("jobState")
        return listed

    def _resend_later(self, row: Row, now: float) -> None:
        tag, sends = job_tag(row.cluster, row.job_id), (row.attempts + 1) // 2  # a publish and a retry per round
        metric_counts.outcome(self.rt.facts, "failed" if sends >= MAX_PUBLISHES else "retry")
        if sends >= MAX_PUBLISHES:
            self.outbox.mark_failed(row.id, None, f"cc-backend did not list it after {sends} publishes")
            self.log.error("%s: cc-backend did not take the %s after %d publishes (see its log); set aside",
                           tag, row.event, sends)
            return
        self.outbox.mark_retry(row.id, now, None, "not listed by cc-backend in time")
        self.log.warning("%s: cc-backend does not list the %s yet; publishing it again", tag, row.event)

    async def close(self) -> None:
        self.closing = True
        if self.nc is not None:
            await _close_quietly(self.nc)
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _close_quietly(nc) -> None:
    import asyncio

    try:
        await asyncio.wait_for(nc.close(), 1.0)
    except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - closing on the way out
        pass


async def _main(rt: ActorRuntime) -> int:
    import asyncio

    from actors.outbox import Outbox

    config = rt.config
    outbox = Outbox(config.outbox_path)
    rest = None
    if not config.cc_rest_submit_jobs:
        from actors.cc_rest import CcRest

        rest = CcRest(config.cc_rest_url, config.cc_rest_jwt, timeout_s=config.cc_rest_timeout)
    publisher = NatsPublisher(rt, outbox, rest)
    worker = asyncio.create_task(publisher.work())
    try:
        while rt.keep_running():
            if worker.done():
                worker.result()  # a crash leaves the actor with it; the supervisor restarts us
            await asyncio.sleep(TICK_S)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await publisher.close()
        outbox.close()
    return 0


def run(rt: ActorRuntime) -> int:
    if not rt.config.nats_server:
        rt.facts.update({"mode": "off", "connected": None})
        while rt.keep_running():
            time.sleep(POLL_TIMEOUT_MS / 1000)
        return 0
    import asyncio

    return asyncio.run(_main(rt))
