"""nats_publisher in the real daemon against a real nats-server: every outbox row goes out as one
line-protocol event that decodes to its body, in every auth mode, and NATS outages lose nothing.

The tests write "nats" rows straight into the daemon's outbox and read what reached the broker back
from a JetStream stream on the subject (it keeps messages while no test client is connected, also
across a broker restart). Dual mode (ccRestSubmitJobs true): a row is delivered once flushed.
"""

import asyncio
import json
import logging
import os
import sqlite3
import time
from types import SimpleNamespace

import pytest

from actors import nats_publisher
from actors.line_protocol import decode_lines
from actors.outbox import Outbox, OutboxEvent, Row
from tests.conftest import service_unavailable
from tests.support import wait_for

pytestmark = [pytest.mark.nats]

SUBJECT = "ccsa.test.jobs"
STREAM = "CAPTURE"
HOST = "ctl-test"


# --- pure decisions --------------------------------------------------------------------------------

def row(event="start_job", job_id=1, start_time=1000, body=b"{}", attempts=0, next_try_at=0.0, cluster="c"):
    return Row(1, "nats", cluster, job_id, start_time, event, body, "published", attempts, next_try_at, None, "",
               0.0, 0.0, None)


def test_the_line_time_is_the_start_time_for_a_start_and_the_stop_time_for_a_stop():
    assert nats_publisher.event_time_s(row(body=b'{"startTime":1000,"stopTime":0}'), now=5) == 1000
    assert nats_publisher.event_time_s(row("stop_job", body=b'{"startTime":1000,"stopTime":1500}'), now=5) == 1500
    assert nats_publisher.event_time_s(row("stop_job", body=b'{"jobId":1}'), now=5) == 1000  # the row's start
    assert nats_publisher.event_time_s(row(start_time=0, body=b"not json"), now=5.7) == 5  # never zero


def test_a_start_is_confirmed_when_listed_and_a_stop_when_listed_and_no_longer_running():
    listed = {("c", 1, 1000): "running", ("c", 2, 1000): "completed"}

    assert nats_publisher.is_confirmed(row("start_job", 1), listed)
    assert not nats_publisher.is_confirmed(row("stop_job", 1), listed)
    assert nats_publisher.is_confirmed(row("stop_job", 2), listed)
    assert not nats_publisher.is_confirmed(row("start_job", 3), listed)
    assert not nats_publisher.is_confirmed(row("start_job", 1, start_time=1001), listed)


def test_read_back_windows_are_per_cluster_and_at_most_an_hour_wide():
    rows = [row(start_time=t, cluster=c) for t, c in [(100, "a"), (3700, "a"), (3701, "a"), (50, "b"), (200, "a")]]

    assert nats_publisher.lookup_windows(rows) == [("a", 100, 3700), ("a", 3701, 3701), ("b", 50, 50)]


def test_the_confirm_by_time_follows_observed_visibility_within_bounds():
    assert nats_publisher.confirm_after_s([]) == nats_publisher.CONFIRM_AFTER_S
    assert nats_publisher.confirm_after_s([1.0, 6.0]) == 22.0  # 2 x the slowest + 10
    assert nats_publisher.confirm_after_s([0.1]) == nats_publisher.CONFIRM_AFTER_MIN_S
    assert nats_publisher.confirm_after_s([5000.0]) == nats_publisher.CONFIRM_AFTER_MAX_S


class FullDiskOutbox:
    """An outbox whose writes fail like a full stateDir until `full` is cleared; reads work."""

    def __init__(self, due_rows, published_rows=()):
        self.due_rows, self.published_rows, self.full, self.written = list(due_rows), list(published_rows), True, []

    def due(self, sink, now, limit):
        return [r for r in self.due_rows if r.id not in self.written]

    def published(self, sink, limit):
        return [r for r in self.published_rows if r.id not in self.written]

    def rows(self, **where):
        return []

    def _write(self, ids):
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        self.written += ids

    def mark_published(self, ids, confirm_by):
        self._write(ids)

    def mark_delivered_many(self, ids):
        self._write(ids)


def publisher_on(outbox, rest=None):
    """A connected publisher without sockets: publish and flush only record the lines."""
    async def publish(subject, line):
        lines.append(line)

    async def flush(timeout):
        pass

    lines = []
    rt = SimpleNamespace(log=logging.getLogger("test.nats_publisher"), facts={},
                         config=SimpleNamespace(nats_subject=SUBJECT))
    publisher = nats_publisher.NatsPublisher(rt, outbox, rest)
    publisher.nc = SimpleNamespace(is_connected=True, publish=publish, flush=flush)
    return publisher, lines


def due_row(row_id: int) -> Row:
    return Row(row_id, "nats", "c", row_id, 1000, "start_job", b'{"startTime":1000}', "pending", 0, 0.0, None, "",
               0.0, 0.0, None)


@pytest.mark.parametrize("mode", ["dual", "nats-only"])
def test_an_outbox_that_cannot_be_written_pauses_publishing_and_shows_in_the_facts_instead_of_crashing(mode, caplog):
    # Given a connected publisher with two due rows and a full stateDir
    outbox = FullDiskOutbox([due_row(1), due_row(2)])
    publisher, lines = publisher_on(outbox, SimpleNamespace() if mode == "nats-only" else None)
    try:
        # When a pass publishes them and cannot mark them
        assert asyncio.run(publisher.work_once(100.0)) == 0
        # Then the actor lives on, says why (for ccctl status's store section) and waits STORE_RETRY_S
        assert publisher.rt.facts["store_error"] == "outbox: database or disk is full"
        assert "cannot write the outbox (database or disk is full); trying again in 5 s" in caplog.text
        resume_at = pytest.approx(time.time() + nats_publisher.STORE_RETRY_S, abs=1)
        assert (publisher.paused_until, publisher.next_check_at) == (resume_at, resume_at)
        assert len(lines) == 2 and outbox.written == []
        # And a pass during the pause sends nothing and keeps the error shown
        assert asyncio.run(publisher.work_once(publisher.paused_until - 1)) == 0
        assert len(lines) == 2 and publisher.rt.facts["store_error"]
        # When there is space again and the pause is over
        outbox.full = False
        publisher.paused_until = publisher.next_check_at = 0.0
        publisher.rest = None  # NATS-only: no read-back in this pass (none of the rows is published yet)
        assert asyncio.run(publisher.work_once(200.0)) == 2
        # Then both rows are sent again (cc-backend refuses a second start) and marked; the error is gone
        assert len(lines) == 4 and outbox.written == [1, 2]
        assert "store_error" not in publisher.rt.facts
    finally:
        publisher.pool.shutdown()


def test_a_read_back_that_cannot_mark_confirmed_rows_pauses_it_and_shows_in_the_facts():
    # Given a NATS-only publisher with one published row cc-backend lists, and a full stateDir
    published = due_row(7)
    outbox = FullDiskOutbox([], [published])
    rest = SimpleNamespace(list_jobs=lambda cluster, start_time: [
        {"cluster": "c", "jobId": 7, "startTime": 1000, "jobState": "running"}])
    publisher, _ = publisher_on(outbox, rest)
    try:
        # When the read-back confirms it and cannot mark it delivered
        assert asyncio.run(publisher.work_once(100.0)) == 0
        # Then the error is in the facts, the read-back waits STORE_RETRY_S and the row stays published
        assert publisher.rt.facts["store_error"] == "outbox: database or disk is full"
        assert publisher.next_check_at == pytest.approx(time.time() + nats_publisher.STORE_RETRY_S, abs=1)
        assert outbox.written == [] and publisher.rt.facts["delivered"] == 0
        # When there is space again: the next read-back marks it, and the error is gone
        outbox.full = False
        publisher.paused_until = publisher.next_check_at = 0.0
        asyncio.run(publisher.work_once(200.0))
        assert outbox.written == [7] and publisher.rt.facts["delivered"] == 1
        assert "store_error" not in publisher.rt.facts
    finally:
        publisher.pool.shutdown()


# --- the real daemon against a real broker -------------------------------------------------------

@pytest.fixture
def broker():
    from tests.bench.nats import NatsServer, free_port

    made = []

    def make(auth="userpass", start=True):
        server = NatsServer(auth=auth)
        made.append(server)
        server.port = free_port()  # known before the first start: the daemon may come up first
        if start:
            try:
                server.start()
            except Exception as e:  # noqa: BLE001
                service_unavailable(f"nats-server ({auth})", e)
        return server

    yield make
    for server in made:
        server.close()


def nats_config(server) -> dict:
    config = {"natsServer": "127.0.0.1", "natsPort": server.port, "natsSubject": SUBJECT}
    if server.auth == "userpass":
        config.update(natsUser=server.user, natsPassword=server.password)
    elif server.auth == "nkey":
        config["natsNKeySeedFile"] = server.nkey_seed_file
    elif server.auth == "creds":
        config["natsCredsFile"] = server.creds_file
    return config


def start_daemon(daemon, server, **config):
    d = daemon(**nats_config(server), **config).start()
    d.wait_all_running()
    return d


def publisher_facts(d, predicate) -> dict | None:
    """nats_publisher's facts as ccctl status shows them (heartbeated each second), when predicate holds."""
    facts = d.actors().get("nats_publisher", {}).get("facts") or {}
    return facts if facts and predicate(facts) else None


def outbox_of(d) -> Outbox:
    return Outbox(os.path.join(json.loads(open(d.config_path).read())["stateDir"], "outbox.sqlite3"))


async def _capture(server, create: bool) -> list[bytes]:
    import nats

    nc = await nats.connect(server.url, **server.connect_options())
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(name=STREAM, subjects=[SUBJECT])
            return []
        info = await js.stream_info(STREAM)
        return [bytes((await js.get_msg(STREAM, seq)).data)
                for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages]
    finally:
        await nc.close()


def capture_subject(server) -> None:
    asyncio.run(_capture(server, create=True))


def captured(server) -> list[bytes]:
    return asyncio.run(_capture(server, create=False))


def job_events(job_id: int, start_time: int, partition: str = "batch") -> list[OutboxEvent]:
    start = {"jobId": job_id, "cluster": "testcluster", "startTime": start_time, "partition": partition,
             "metaData": {"jobScript": '#!/bin/bash\necho "héllo \\ wörld" 😀\n'}}
    stop = {"jobId": job_id, "cluster": "testcluster", "startTime": start_time, "stopTime": start_time + 60,
            "jobState": "completed"}
    return [OutboxEvent(sink="nats", cluster="testcluster", job_id=job_id, start_time=start_time, event=event,
                        body=json.dumps(body, ensure_ascii=False).encode())
            for event, body in (("start_job", start), ("stop_job", stop))]


def nats_states(outbox) -> list[str]:
    return [r.state for r in outbox.rows(sink="nats")]


def assert_lines_match(messages: list[bytes], events: list[OutboxEvent]):
    """One message per row; each decodes to exactly the row's body, with time and tags; stop after start."""
    lines = [line for message in messages for line in decode_lines(message)]
    assert len(messages) == len(lines) == len(events)
    by_body = {line.fields["event"].encode(): line for line in lines}
    for event in events:
        line = by_body[event.body]
        body = json.loads(event.body)
        assert line.measurement == "job"
        assert line.fields == {"event": event.body.decode()}
        if event.event == "start_job":
            assert line.tags == {"function": "start_job", "hostname": line.tags["hostname"]}
            assert line.timestamp_ns == body["startTime"] * 10**9
        else:
            assert line.tags == {"function": "stop_job", "hostname": line.tags["hostname"], "partition": "batch"}
            assert line.timestamp_ns == body["stopTime"] * 10**9
    order = [(json.loads(line.fields["event"])["jobId"], line.tags["function"]) for line in lines]
    for job_id in {e.job_id for e in events}:
        assert order.index((job_id, "start_job")) < order.index((job_id, "stop_job"))


@pytest.mark.parametrize("auth", ["userpass", "nkey", "creds"])
def test_each_row_is_published_once_as_a_line_that_decodes_to_its_body(daemon, broker, auth):
    # Given a broker with this auth mode and a daemon in dual mode
    server = broker(auth)
    capture_subject(server)
    d = start_daemon(daemon, server, ccRestSubmitJobs=True)
    # When two jobs' starts and stops land in the outbox
    events = job_events(101, 1_700_000_000) + job_events(102, 1_700_000_100)
    outbox = outbox_of(d)
    outbox.enqueue(events)
    # Then all four rows end delivered, and the broker got exactly one line per row
    wait_for(lambda: nats_states(outbox) == ["delivered"] * 4, 20, message="four delivered nats rows")
    assert_lines_match(captured(server), events)
    facts = wait_for(lambda: publisher_facts(d, lambda f: f["delivered"] == 4), 5, message="facts heartbeated")
    assert (facts["mode"], facts["connected"], facts["published"], facts["delivered"]) == ("dual", True, 4, 4)


def test_nats_down_at_start_the_daemon_runs_and_everything_arrives_once_it_is_up(daemon, broker):
    # Given a broker that is down while the daemon starts
    server = broker("userpass", start=False)
    d = start_daemon(daemon, server, ccRestSubmitJobs=True)
    outbox = outbox_of(d)
    events = job_events(201, 1_700_000_000)
    outbox.enqueue(events)
    facts = wait_for(lambda: publisher_facts(d, lambda f: f["last_error"]), 15, message="a connect error in the facts")
    # Then nothing counts as sent, the rows wait
    assert (facts["connected"], facts["published"]) == (False, 0)
    assert nats_states(outbox) == ["pending", "pending"]
    # When the broker comes up
    server.start()
    capture_subject(server)
    # Then both rows are published and delivered (the first connect is retried with backoff, <= 60 s)
    wait_for(lambda: nats_states(outbox) == ["delivered", "delivered"], 90, 0.2, "both rows delivered")
    assert_lines_match(captured(server), events)


def test_nats_stopped_then_started_again_delivers_what_waited_meanwhile(daemon, broker):
    # Given a daemon that delivered one job over NATS
    server = broker("userpass")
    capture_subject(server)
    d = start_daemon(daemon, server, ccRestSubmitJobs=True)
    outbox = outbox_of(d)
    first = job_events(301, 1_700_000_000)
    outbox.enqueue(first)
    wait_for(lambda: nats_states(outbox) == ["delivered"] * 2, 20, message="the first job delivered")
    # When the broker stops, jobs arrive, and the broker starts again
    server.stop()
    wait_for(lambda: publisher_facts(d, lambda f: f["connected"] is False), 15, message="a disconnect")
    later = job_events(302, 1_700_000_100) + job_events(303, 1_700_000_200)
    outbox.enqueue(later)
    assert nats_states(outbox)[2:] == ["pending"] * 4
    server.start()
    # Then everything is delivered and the stream holds one line per row (its store survived the restart)
    wait_for(lambda: nats_states(outbox) == ["delivered"] * 6, 60, 0.2, "all six rows delivered")
    assert_lines_match(captured(server), first + later)
    assert wait_for(lambda: publisher_facts(d, lambda f: f["connected"] and f["delivered"] == 6), 5,
                    message="facts: connected, six delivered")
