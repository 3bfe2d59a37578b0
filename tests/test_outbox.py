"""The outbox keeps every obligation: one row per (sink, cluster, job, start time, event), a stop only
after its start, retries counted with the row, nothing lost when a process is killed."""

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from actors import outbox as outbox_module
from actors.errors import AdapterError
from actors.outbox import MIGRATIONS, SCHEMA_VERSION, START_REFUSED, Outbox, OutboxEvent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_000.0


def ev(job_id, event="start_job", sink="rest", start_time=1000, cluster="c1", body=None):
    return OutboxEvent(sink=sink, cluster=cluster, job_id=job_id, start_time=start_time, event=event,
                       body=body if body is not None else b'{"jobId":%d}' % job_id)


def both(job_id, sink="rest", start_time=1000):
    return [ev(job_id, "start_job", sink, start_time), ev(job_id, "stop_job", sink, start_time)]


@pytest.fixture
def box(tmp_path):
    ob = Outbox(str(tmp_path / "state" / "outbox.sqlite3"))
    yield ob
    ob.close()


def due_ids(box, sink="rest", now=NOW, limit=100):
    return [(r.job_id, r.event) for r in box.due(sink, now, limit)]


# --- schema --------------------------------------------------------------------------------------

def test_a_new_file_is_in_wal_mode_at_the_latest_schema_version(box):
    assert box.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    assert box.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_a_file_of_schema_1_is_migrated_in_place_and_keeps_its_rows(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO deliveries (sink, cluster, job_id, start_time, event, body, created_at, updated_at)"
               " VALUES ('rest', 'c1', 5, 1000, 'start_job', x'7b7d', 1, 1)")
    db.commit()
    db.close()

    ob = Outbox(path)

    assert ob.schema_version() == SCHEMA_VERSION
    assert [(r.job_id, r.state) for r in ob.rows()] == [(5, "pending")]
    ob.note_seen([("c1", 5, "poll", 1000, "RUNNING")])
    assert ob.seen("c1", 5)[0].last_slurm_state == "RUNNING"
    ob.close()


def test_opening_twice_migrates_once(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    Outbox(path).close()
    ob = Outbox(path)

    assert ob.db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    ob.close()


def test_a_file_from_a_newer_adapter_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    Outbox(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()

    with pytest.raises(AdapterError, match="schema 99, newer than"):
        Outbox(path)


# --- enqueue -------------------------------------------------------------------------------------

def test_the_same_job_seen_on_two_polls_is_one_row_per_sink_and_event(box):
    first = box.enqueue(both(1) + both(1, sink="nats"))
    second = box.enqueue(both(1) + both(1, sink="nats"))

    assert (first, second) == (4, 0)
    assert len(box.rows()) == 4


def test_a_requeued_run_with_a_new_start_time_is_a_new_row(box):
    assert box.enqueue([ev(1, start_time=1000), ev(1, start_time=2000)]) == 2


def test_a_batch_is_all_or_nothing(box):
    unbindable = OutboxEvent(sink="rest", cluster="c1", job_id=3, start_time=1, event="start_job", body=[1])

    with pytest.raises(sqlite3.Error):
        box.enqueue([ev(1), ev(2), unbindable])

    assert box.rows() == []


def test_enqueue_notes_the_jobs_seen_and_clears_a_kv_entry_in_the_same_transaction(box):
    box.kv_set("translator.inflight", b'["c1/1"]')

    box.enqueue(both(1), seen=[("c1", 1, "hook")], clear_kv="translator.inflight")

    assert box.kv_get("translator.inflight") is None
    [seen] = box.seen("c1", 1)
    assert (seen.last_source, seen.times_seen) == ("hook", 1)


# --- due rows ------------------------------------------------------------------------------------

def test_a_stop_is_not_due_before_its_start_is_delivered(box):
    box.enqueue(both(1))
    assert due_ids(box) == [(1, "start_job")]

    box.mark_delivered(box.due("rest", NOW, 1)[0].id, 201)

    assert due_ids(box) == [(1, "stop_job")]


def test_a_start_delivered_to_one_sink_does_not_release_the_stop_of_another(box):
    box.enqueue(both(1, "rest") + both(1, "nats"))
    box.mark_delivered(box.due("rest", NOW, 1)[0].id, 201)

    assert due_ids(box, "nats") == [(1, "start_job")]
    assert due_ids(box, "rest") == [(1, "stop_job")]


def test_the_stop_of_another_run_of_the_same_job_waits_for_its_own_start(box):
    box.enqueue(both(1, start_time=1000))
    box.enqueue([ev(1, "stop_job", start_time=2000)])
    box.mark_delivered(box.due("rest", NOW, 1)[0].id, 201)

    assert [(r.event, r.start_time) for r in box.due("rest", NOW, 10)] == [("stop_job", 1000)]


def test_due_rows_come_oldest_first_up_to_the_limit(box):
    box.enqueue([ev(3), ev(1), ev(2)])

    assert due_ids(box, limit=2) == [(3, "start_job"), (1, "start_job")]


def test_a_row_waiting_for_a_retry_is_not_due_before_its_time(box):
    box.enqueue([ev(1), ev(2)])
    row = box.due("rest", NOW, 1)[0]

    box.mark_retry(row.id, NOW + 30, 503, "Service Unavailable")

    assert due_ids(box, now=NOW) == [(2, "start_job")]
    assert due_ids(box, now=NOW + 30) == [(2, "start_job"), (1, "start_job")]
    again = box.get(row.id)
    assert (again.attempts, again.last_status, again.last_error, again.next_try_at) == (1, 503, "Service Unavailable",
                                                                                     NOW + 30)
    assert box.next_due_at("rest") == 0


def test_attempts_count_every_answer_so_a_restart_keeps_its_place(box, tmp_path):
    box.enqueue([ev(1)])
    row_id = box.due("rest", NOW, 1)[0].id
    for n in range(3):
        box.mark_retry(row_id, NOW + n, None, "timeout")
    box.close()

    reopened = Outbox(box.path)

    assert reopened.get(row_id).attempts == 3
    reopened.close()


def test_a_delivered_row_is_never_taken_back_by_a_late_retry_or_failure(box):
    box.enqueue([ev(1)])
    row_id = box.due("rest", NOW, 1)[0].id
    box.mark_delivered(row_id, 201)

    box.mark_retry(row_id, NOW, 500, "late")
    box.mark_failed(row_id, 400, "late")

    assert (box.get(row_id).state, box.get(row_id).last_status) == ("delivered", 201)


def test_many_rows_are_marked_delivered_in_one_transaction(box):
    box.enqueue([ev(i) for i in range(50)])

    box.mark_delivered_many([r.id for r in box.due("rest", NOW, 100)], 201)

    assert box.counts() == {"rest": {"pending": 0, "published": 0, "delivered": 50, "failed": 0}}


# --- failed rows ---------------------------------------------------------------------------------

def test_a_refused_start_sets_its_stop_aside_and_requeueing_the_start_brings_both_back(box):
    box.enqueue(both(1) + both(2))
    start = box.due("rest", NOW, 1)[0]

    box.mark_failed(start.id, 400, "no such cluster: c1")

    failed = box.rows(state="failed")
    assert [(r.job_id, r.event, r.last_error) for r in failed] == [(1, "start_job", "no such cluster: c1"),
                                                                  (1, "stop_job", START_REFUSED)]
    assert box.requeue(start.id) == 2
    assert [(r.job_id, r.event, r.attempts) for r in box.rows(state="pending")] == [
        (1, "start_job", 0), (1, "stop_job", 0), (2, "start_job", 0), (2, "stop_job", 0)]


def test_a_stop_that_comes_after_its_start_was_refused_is_set_aside_at_once(box):
    box.enqueue([ev(1), ev(2)])
    refused = [r for r in box.due("rest", NOW, 2) if r.job_id == 1][0]
    box.mark_failed(refused.id, 400, "no subcluster for host n9")

    box.enqueue([ev(1, "stop_job"), ev(2, "stop_job")])

    assert [(r.job_id, r.event, r.attempts, r.last_error) for r in box.rows(state="failed")] == [
        (1, "start_job", 1, "no subcluster for host n9"), (1, "stop_job", 0, START_REFUSED)]
    assert [(r.job_id, r.event) for r in box.rows(state="pending")] == [(2, "start_job"), (2, "stop_job")]
    assert box.requeue(refused.id) == 2


def test_requeue_of_everything_brings_every_failed_row_back_with_a_fresh_backoff(box):
    box.enqueue([ev(1), ev(2), ev(3)])
    for row in box.due("rest", NOW, 2):
        box.mark_failed(row.id, 400, "bad")

    assert box.requeue(None) == 2
    assert box.requeue(None) == 0
    assert {r.state for r in box.rows()} == {"pending"}


def test_requeue_of_a_row_that_is_not_failed_changes_nothing(box):
    box.enqueue([ev(1)])

    assert box.requeue(box.rows()[0].id) == 0


# --- what ccctl shows ----------------------------------------------------------------------------

def test_counts_per_sink_and_state_and_the_age_of_the_oldest_pending_row(box, monkeypatch):
    monkeypatch.setattr(outbox_module.time, "time", lambda: NOW)
    box.enqueue(both(1) + [ev(2, sink="nats")])
    monkeypatch.setattr(outbox_module.time, "time", lambda: NOW + 10)
    box.enqueue([ev(3)])
    box.mark_failed(box.due("rest", NOW + 10, 1)[0].id, 400, "bad")

    assert box.counts() == {"rest": {"pending": 1, "published": 0, "delivered": 0, "failed": 2},
                            "nats": {"pending": 1, "published": 0, "delivered": 0, "failed": 0}}
    assert box.oldest_pending_age_s("rest", NOW + 25) == 15.0
    assert box.oldest_pending_age_s("nats", NOW + 25) == 25.0
    assert box.oldest_pending_age_s("other", NOW) is None


def test_rows_filter_by_state_cluster_job_and_sink(box):
    box.enqueue(both(1) + [ev(2, cluster="c2"), ev(1, sink="nats")])

    assert [(r.job_id, r.event) for r in box.rows(state="pending", cluster="c1", sink="rest")] == [
        (1, "start_job"), (1, "stop_job")]
    assert [r.cluster for r in box.rows(job_id=2)] == ["c2"]
    assert len(box.rows(limit=2)) == 2


# --- pruning -------------------------------------------------------------------------------------

def test_prune_deletes_old_delivered_rows_but_keeps_a_start_whose_stop_still_waits(box, monkeypatch):
    monkeypatch.setattr(outbox_module, "PRUNE_CHUNK_ROWS", 2)  # several short transactions
    monkeypatch.setattr(outbox_module.time, "time", lambda: NOW)
    box.enqueue(both(1) + [ev(j) for j in range(2, 7)])
    box.mark_delivered_many([r.id for r in box.due("rest", NOW, 100)], 201)  # every start; stop 1 waits

    assert box.prune_delivered(NOW + 1) == 5
    assert [(r.job_id, r.event, r.state) for r in box.rows()] == [(1, "start_job", "delivered"),
                                                                  (1, "stop_job", "pending")]
    assert box.prune_delivered(NOW - 1) == 0


def test_a_pruned_start_comes_back_when_the_translator_writes_the_job_again(box):
    box.enqueue([ev(1)])
    box.mark_delivered(box.rows()[0].id, 201)
    box.prune_delivered(NOW * 2)

    assert box.enqueue(both(1)) == 2
    assert due_ids(box) == [(1, "start_job")]


# --- quarantine ----------------------------------------------------------------------------------

def test_quarantine_reports_news_once_per_reason_and_counts_sightings(box):
    assert box.quarantine_add("c1", 7, "$.jobs[0].nodes", "not a hostlist", b"{}", "24.11", start_time=1000)
    assert not box.quarantine_add("c1", 7, "$.jobs[0].nodes", "not a hostlist", b"{}", "24.11")
    assert box.quarantine_add("c1", 7, "$.jobs[0].tres", "negative", b"{}", "24.11")

    entry = box.quarantine_entry(7, "c1")
    assert (entry.json_path, entry.count, entry.state, entry.start_time) == ("$.jobs[0].tres", 3, "held", 1000)
    assert [e.job_id for e in box.quarantined()] == [7]


def test_quarantine_retry_and_release_change_the_state_and_keep_the_entry(box):
    box.quarantine_add("c1", 7, "$", "x", b"{}", "22.05")
    box.quarantine_add("c2", 7, "$", "x", b"{}", "22.05")

    assert box.quarantine_retry(7, "c1") == 1
    assert box.quarantine_retry(7, "c1") == 0
    assert box.quarantine_release(7) == 2
    assert box.quarantined() == []
    assert {e.cluster for e in box.quarantined("released")} == {"c1", "c2"}
    assert box.quarantine_add("c1", 7, "$", "x", b"{}", "22.05")  # held again: news


def test_retries_asked_for_are_taken_once_and_the_jobs_go_back_to_held(box):
    for job_id in (7, 8, 9):
        box.quarantine_add("c1", job_id, "$", "x", b"{}", "22.05")
    box.quarantine_release(9)

    assert box.quarantine_retry_all() == 2  # an upgrade: every held job once more
    assert sorted(box.quarantine_take_retries()) == [("c1", 7), ("c1", 8)]
    assert box.quarantine_take_retries() == []
    assert [e.job_id for e in box.quarantined("held")] == [7, 8]


def test_a_quarantined_job_translated_later_is_released(box):
    box.quarantine_add("c1", 7, "$", "x", b"{}", "22.05")

    box.enqueue([ev(7)], seen=[("c1", 7, "poll")])

    assert box.quarantine_entry(7).state == "released"


# --- jobs seen, kv -------------------------------------------------------------------------------

def test_jobs_seen_keeps_first_and_last_sighting_source_start_time_and_slurm_state(box):
    box.note_seen([("c1", 1, "poll", 1000, "PENDING")], now=NOW)
    box.note_seen([("c1", 1, "hook", None, "")], now=NOW + 5)
    box.note_seen([("c1", 1, "reconcile", 1010, "RUNNING"), ("c2", 1, "poll")], now=NOW + 9)

    [seen] = box.seen("c1", 1)
    assert (seen.first_seen_at, seen.last_seen_at, seen.last_source, seen.start_time, seen.last_slurm_state,
            seen.times_seen) == (NOW, NOW + 9, "reconcile", 1010, "RUNNING", 3)
    assert [s.cluster for s in box.seen(None, 1)] == ["c1", "c2"]


def test_kv_keeps_small_facts(box):
    assert box.kv_get("watermark.c1") is None
    box.kv_set("watermark.c1", b"1700000000")
    box.kv_set("watermark.c1", b"1700000060")

    assert box.kv_get("watermark.c1") == b"1700000060"
    box.kv_delete("watermark.c1")
    assert box.kv_get("watermark.c1") is None


def test_a_readonly_opener_sees_committed_rows(box):
    box.enqueue([ev(1)])
    reader = Outbox(box.path, readonly=True)

    assert reader.counts()["rest"]["pending"] == 1
    reader.close()


# --- processes -----------------------------------------------------------------------------------

def _child(code: str, path: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, path], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=REPO))


def test_a_committed_row_survives_the_kill_9_of_its_writer_and_an_open_transaction_leaves_nothing(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    done = _child("""
        import os, signal, sys
        from actors.outbox import Outbox, OutboxEvent
        ob = Outbox(sys.argv[1])
        ob.enqueue([OutboxEvent(sink="rest", cluster="c1", job_id=1, start_time=1, event="start_job", body=b"{}")])
        ob.db.execute("BEGIN IMMEDIATE")  # a transaction in flight when the process dies
        ob.db.execute("INSERT INTO kv VALUES ('half', x'00', 0)")
        os.kill(os.getpid(), signal.SIGKILL)
    """, path)
    assert done.returncode == -signal.SIGKILL, done.stderr

    ob = Outbox(path)

    assert [(r.job_id, r.state) for r in ob.rows()] == [(1, "pending")]
    assert ob.kv_get("half") is None
    ob.kv_set("after", b"1")  # and the file is not left locked
    ob.close()


def _enqueue_all(path: str, jobs: int) -> int:
    ob = Outbox(path)
    try:
        return sum(ob.enqueue(both(j) + both(j, "nats")) for j in range(jobs))
    finally:
        ob.close()


def test_processes_writing_the_same_jobs_at_once_make_each_row_exactly_once(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    Outbox(path).close()

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        new_rows = pool.starmap(_enqueue_all, [(path, 300)] * 4)

    assert sum(new_rows) == 1200
    ob = Outbox(path)
    assert len(ob.rows(limit=10_000)) == 1200
    ob.close()


def test_next_due_at_ignores_a_stop_that_waits_for_its_start(tmp_path):
    from actors.outbox import Outbox, OutboxEvent

    outbox = Outbox(str(tmp_path / "o.sqlite3"))
    start = OutboxEvent(sink="rest", cluster="c", job_id=1, start_time=10, event="start_job", body=b"{}")
    stop = OutboxEvent(sink="rest", cluster="c", job_id=1, start_time=10, event="stop_job", body=b"{}")
    outbox.enqueue([start, stop])
    start_row = outbox.due("rest", 1e12, 10)[0]
    outbox.mark_retry(start_row.id, 5000.0, 503, "down")
    assert outbox.next_due_at("rest") == 5000.0  # not 0.0 for the stop: it is not due before its start
    outbox.mark_delivered(start_row.id, 201)
    assert outbox.next_due_at("rest") == 0.0


def test_a_stop_held_after_its_start_is_due_only_once_the_hold_has_passed(tmp_path):
    from actors.outbox import Outbox, OutboxEvent

    outbox = Outbox(str(tmp_path / "o.sqlite3"))
    start = OutboxEvent(sink="rest", cluster="c", job_id=1, start_time=10, event="start_job", body=b"{}")
    stop = OutboxEvent(sink="rest", cluster="c", job_id=1, start_time=10, event="stop_job", body=b"{}")
    outbox.enqueue([start, stop])
    outbox.mark_delivered(outbox.due("rest", 1e12, 10, stop_hold_s=7.0)[0].id, 201)
    confirmed_at = outbox.rows(sink="rest", job_id=1)[0].delivered_at
    assert outbox.next_due_at("rest", stop_hold_s=7.0) == confirmed_at + 7.0
    assert outbox.due("rest", confirmed_at + 6.9, 10, stop_hold_s=7.0) == []
    assert [r.event for r in outbox.due("rest", confirmed_at + 7.0, 10, stop_hold_s=7.0)] == ["stop_job"]
