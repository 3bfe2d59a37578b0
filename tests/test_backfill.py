"""ccctl backfill: the jobs that started in a stretch of the past and that cc-backend lacks go into
the outbox (or, with --dry-run, onto the screen) — read from sacct in windows, compared with
cc-backend's paged job list, never one call per job. Also the other half of rest_submitter's
reconciliation: a job Slurm runs that cc-backend does not list as running gets its start again."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import msgspec
import pytest

from actors import backfill
from actors.backfill import (NEW, RECENT, RESEND, SET_ASIDE, WAITING, Backfill, Summary, missing_events,
                             outbox_action, owns, parse_when, progress_text, summary_lines, windows)
from actors.config import Config
from actors.errors import SlurmError
from actors.outbox import Outbox, OutboxEvent
from actors.rest_submitter import START_GRACE_S, RestSubmitter
from actors.slurm_cli import SlurmRelease
from tests.support import REPO, ccctl_command, python_env, wait_for
from tests.test_delivery_faults import assert_exactly_once
from tests.test_translate_mapping import sacct_record

NOW = 1_800_000_000


# --- policy -------------------------------------------------------------------------------------------------


def test_dates_are_read_as_iso_local_time_unix_seconds_or_an_age():
    assert parse_when("now", NOW + 0.7) == NOW
    assert parse_when("@1700000000", NOW) == 1_700_000_000
    assert [parse_when(t, NOW) for t in ("90m", "12h", "30d", "2w")] == [
        NOW - 5400, NOW - 43200, NOW - 30 * 86400, NOW - 14 * 86400]
    utc = datetime(2025, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_when("2025-05-01T10:00:00+00:00", NOW) == int(utc.timestamp())
    assert parse_when("2025-05-01", NOW) == int(datetime(2025, 5, 1).timestamp())  # local midnight, like sacct
    assert parse_when("2025-05-01 10:30", NOW) == int(datetime(2025, 5, 1, 10, 30).timestamp())
    with pytest.raises(ValueError, match="cannot read 'last tuesday' as a time"):
        parse_when("last tuesday", NOW)


def test_the_range_is_cut_into_windows_of_the_chunk_the_last_one_shorter():
    assert windows(0, 50_000, 21_600) == [(0, 21_600), (21_600, 43_200), (43_200, 50_000)]
    assert windows(100, 220, 10) == [(100, 160), (160, 220)]  # never narrower than a minute
    assert windows(100, 100, 3600) == []
    assert len(windows(NOW - 365 * 86400, NOW, 21_600)) == 4 * 365  # far beyond the original's 7 days


def test_a_job_belongs_to_the_window_it_started_in_and_only_the_last_window_includes_its_end():
    assert [owns(t, (100, 200), last=False) for t in (99, 100, 199, 200)] == [False, True, True, False]
    assert [owns(t, (100, 200), last=True) for t in (99, 100, 200, 201)] == [False, True, True, False]


def test_cc_backend_lacks_the_start_of_an_absent_job_and_the_stop_of_one_it_still_lists_running():
    assert missing_events(finished=True, listed_state=None) == ("start_job", "stop_job")
    assert missing_events(finished=False, listed_state=None) == ("start_job",)
    assert missing_events(finished=True, listed_state="running") == ("stop_job",)
    assert missing_events(finished=False, listed_state="running") == ()
    assert missing_events(finished=True, listed_state="completed") == ()
    assert missing_events(finished=True, listed_state="failed") == ()  # it keeps the first stop it got


def test_the_outbox_row_of_a_missing_event_decides_whether_it_is_queued():
    assert outbox_action(None, NOW) == NEW
    assert outbox_action(("pending", None), NOW) == WAITING
    assert outbox_action(("published", None), NOW) == WAITING
    assert outbox_action(("failed", None), NOW) == SET_ASIDE
    assert outbox_action(("delivered", NOW - 299), NOW) == RECENT  # cc-backend may not have committed it yet
    assert outbox_action(("delivered", NOW - 301), NOW) == RESEND


def test_the_summary_names_every_count_and_what_happens_to_the_queued_rows():
    s = Summary(since=NOW - 86400, until=NOW, dry_run=False, windows=4, jobs=7, skipped=1, start_bodies=6,
                stop_bodies=5, in_cc_backend=3, missing_starts=3, missing_stops=2, queued=6, waiting=1,
                quarantined=0, daemon="not running")
    lines = summary_lines(s)
    assert lines[1:] == [
        "jobs read:      7 started in the range (1 with nothing to send)",
        "bodies:         6 start, 5 stop",
        "in cc-backend:  3 job(s) already there as Slurm has them",
        "missing:        3 start(s), 2 stop(s)",
        "queued:         6 outbox row(s); 1 already waiting there",
        "quarantined:    0",
        "daemon:         not running: the queued rows wait in the outbox until it starts"]
    dry = summary_lines(Summary(since=0, until=60, dry_run=True, queued=2, stopped_at=60))
    assert dry[0].endswith("(dry run: nothing written)") and dry[5] == "would queue:    2 outbox row(s)"
    assert dry[-1].endswith("run again with --since @60") and not any(line.startswith("daemon") for line in dry)


def test_progress_is_a_bar_on_a_terminal_and_a_plain_line_elsewhere():
    bar = progress_text(3, 4, NOW, jobs=10, missing=2, tty=True)
    assert bar.startswith("backfill [" + "#" * 18 + "." * 6 + "] 3/4 windows, up to ")
    assert bar.endswith(": 10 jobs, 2 missing")
    assert progress_text(3, 4, NOW, 10, 2, tty=False) == bar.replace(" [" + "#" * 18 + "." * 6 + "] ", ": ", 1)


# --- the plumbing, with Slurm and cc-backend played by fakes ------------------------------------------------


def slurm_job(job_id: int, start: int, end: int = 0, state: str = "COMPLETED") -> dict:
    """A real 22.05 sacct record of the sandbox with its id, times and state changed."""
    job = sacct_record("22.05", "completed")
    job["job_id"] = job_id
    job["time"].update(start=start, eligible=start, submission=start, end=end)
    job["state"]["current"] = state if end else "RUNNING"
    return job


class FakeSlurm:
    """sacct's window rule: a job is listed when it ran during [start, end]."""

    def __init__(self, jobs, fail_after: int | None = None):
        self.jobs, self.fail_after, self.windows = jobs, fail_after, []

    def release(self):
        return SlurmRelease("22.05.8")

    def live_jobs(self, release):
        return b'{"jobs": []}'

    def sacct_window(self, start, end):
        if self.fail_after is not None and len(self.windows) == self.fail_after:
            raise SlurmError("sacct --json ... exited 1: slurmdbd is down")
        self.windows.append((start, end))
        ran = [j for j in self.jobs
               if j["time"]["start"] <= end and (not j["time"]["end"] or j["time"]["end"] >= start)]
        return json.dumps({"jobs": ran}).encode()


class FakeBackend:
    def __init__(self, listed=()):
        self.listed, self.queries = list(listed), []

    def clusters_raw(self):
        from tests.golden import SANDBOX_CLUSTERS
        return json.dumps(SANDBOX_CLUSTERS).encode()

    def list_jobs(self, *, cluster, start_time):
        self.queries.append((cluster, start_time))
        return [j for j in self.listed if j["cluster"] == cluster and start_time[0] <= j["startTime"] <= start_time[1]]


def translator_start_body(job: dict) -> dict:
    from actors.topology import parse_clusters
    from actors.translate import TranslateContext, translate_record

    ctx = TranslateContext.from_config(Config(), parse_clusters(FakeBackend().clusters_raw()))
    return json.loads(msgspec.json.encode(translate_record(json.dumps(job).encode(), None, None, ctx).start))


def listed(job_id, start, state):
    return {"jobId": job_id, "cluster": "testcluster", "startTime": start, "jobState": state}


def run_backfill(tmp_path, slurm, backend, since, until, dry_run=False, as_json=False, chunk=3600, outbox=None):
    config = Config(state_dir=str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    box = outbox if outbox is not None else Outbox(config.outbox_path)
    run = Backfill(config, since, until, dry_run=dry_run, slurm=slurm, client=backend, outbox=box, chunk_s=chunk,
                   as_json=as_json, out=out, err=err)
    code = run.run(daemon_running=False)
    return code, out.getvalue(), err.getvalue(), box


def rows(box):
    return sorted((r.job_id, r.event, r.state) for r in box.rows(limit=100))


T0 = NOW - 10 * 3600  #: --since of the plumbing tests; their windows are an hour wide


def test_what_cc_backend_lacks_is_queued_once_per_job_and_what_it_has_is_left_alone(tmp_path):
    # Given four jobs that started in the range: one cc-backend lacks, one it has as Slurm has it,
    # one it still lists as running although Slurm ended it, one still running in both
    jobs = [slurm_job(11, T0 + 100, T0 + 200), slurm_job(12, T0 + 300, T0 + 400),
            slurm_job(13, T0 + 3700, T0 + 3800, "FAILED"), slurm_job(14, T0 + 3900)]
    backend = FakeBackend([listed(12, T0 + 300, "completed"), listed(13, T0 + 3700, "running"),
                           listed(14, T0 + 3900, "running")])
    # When backfill runs over three windows
    code, out, err, box = run_backfill(tmp_path, FakeSlurm(jobs), backend, T0, T0 + 3 * 3600)
    # Then job 11 gets start and stop, job 13 its stop (and its start again: cc-backend answers "already
    # exists"), and the others nothing
    assert rows(box) == [(11, "start_job", "pending"), (11, "stop_job", "pending"),
                         (13, "start_job", "pending"), (13, "stop_job", "pending")]
    summary = dict(line.split(":", 1) for line in out.splitlines()[1:])
    assert {k: v.strip() for k, v in summary.items()} == {
        "jobs read": "4 started in the range (0 with nothing to send)", "bodies": "4 start, 3 stop",
        "in cc-backend": "2 job(s) already there as Slurm has them", "missing": "1 start(s), 2 stop(s)",
        "queued": "4 outbox row(s)", "quarantined": "0",
        "daemon": "not running: the queued rows wait in the outbox until it starts"}
    # and cc-backend was asked once per window that had jobs, never per job
    assert backend.queries == [("testcluster", (T0, T0 + 3599)), ("testcluster", (T0 + 3600, T0 + 7199))]
    assert err.splitlines() == [progress_text(n, 3, T0 + n * 3600, j, m, tty=False)
                                for n, j, m in ((1, 2, 2), (2, 4, 3), (3, 4, 3))]
    assert code == backfill.EXIT_OK
    assert box.seen("testcluster", 11)[0].last_source == "backfill"


def test_a_job_that_spans_several_windows_is_compared_and_queued_once(tmp_path):
    slurm = FakeSlurm([slurm_job(21, T0 + 10, T0 + 3 * 3600 - 10)])
    code, out, err, box = run_backfill(tmp_path, slurm, FakeBackend(), T0, T0 + 3 * 3600)
    assert len(slurm.windows) == 3  # sacct saw it in every window
    assert rows(box) == [(21, "start_job", "pending"), (21, "stop_job", "pending")]
    assert "jobs read:      1 started in the range" in out


def test_a_dry_run_prints_one_line_per_missing_event_and_writes_nothing(tmp_path):
    jobs = [slurm_job(31, T0 + 100, T0 + 200, "TIMEOUT"), slurm_job(32, T0 + 300, T0 + 400)]
    backend = FakeBackend([listed(32, T0 + 300, "running")])
    code, out, err, box = run_backfill(tmp_path, FakeSlurm(jobs), backend, T0, T0 + 3600, dry_run=True, as_json=True)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["event"], d.get("jobId"), d.get("ccBackend"), d.get("outbox")) for d in lines[:-1]] == [
        ("start_job", 31, None, {"rest": "new"}), ("stop_job", 31, None, {"rest": "new"}),
        ("stop_job", 32, "running", {"rest": "new"})]
    assert lines[1]["body"] == {"jobId": 31, "cluster": "testcluster", "startTime": T0 + 100, "jobState": "timeout",
                                "stopTime": T0 + 200}
    assert lines[0]["body"] == translator_start_body(jobs[0])  # byte for byte what the daemon would send
    assert {k: lines[-1][k] for k in ("event", "dryRun", "jobs", "missingStarts", "missingStops", "queued")} == {
        "event": "summary", "dryRun": True, "jobs": 2, "missingStarts": 1, "missingStops": 2, "queued": 3}
    assert rows(box) == []
    assert code == backfill.EXIT_MISSING


def test_the_text_diff_names_job_start_state_and_what_cc_backend_and_the_outbox_have(tmp_path):
    code, out, _, _ = run_backfill(tmp_path, FakeSlurm([slurm_job(33, T0 + 100, T0 + 200, "FAILED")]), FakeBackend(),
                                   T0, T0 + 3600, dry_run=True)
    started = backfill.clock(T0 + 100)
    assert out.splitlines()[:2] == [
        f"start_job 33@testcluster started {started} (FAILED in Slurm); cc-backend: absent; outbox: rest new",
        f"stop_job  33@testcluster started {started}, failed at {backfill.clock(T0 + 200)}; cc-backend: absent; "
        "outbox: rest new"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_wiped_before_a_diff_line(tmp_path):
    slurm = FakeSlurm([slurm_job(35, T0 + 3700, T0 + 3800)])  # in the second window
    out, err = io.StringIO(), Terminal()
    run = Backfill(Config(state_dir=str(tmp_path)), T0, T0 + 7200, dry_run=True, slurm=slurm, client=FakeBackend(),
                   outbox=None, chunk_s=3600, out=out, err=err)
    run.run()
    first = progress_text(1, 2, T0 + 3600, 0, 0, tty=True)
    second = progress_text(2, 2, T0 + 7200, 1, 2, tty=True)
    assert err.getvalue() == f"\r{first}\r\x1b[K\r{second}\n"
    assert [line.split()[0] for line in out.getvalue().splitlines()[:2]] == ["start_job", "stop_job"]


def test_a_second_backfill_queues_nothing_and_counts_the_rows_already_waiting(tmp_path):
    slurm = FakeSlurm([slurm_job(41, T0 + 100, T0 + 200)])
    _, _, _, box = run_backfill(tmp_path, slurm, FakeBackend(), T0, T0 + 3600)
    code, out, _, box = run_backfill(tmp_path, slurm, FakeBackend(), T0, T0 + 3600, outbox=box)
    assert "queued:         0 outbox row(s); 2 already waiting there" in out.splitlines()
    assert rows(box) == [(41, "start_job", "pending"), (41, "stop_job", "pending")]


def test_rows_delivered_long_ago_that_cc_backend_lacks_are_sent_again_and_fresh_ones_are_not(tmp_path):
    # Given the outbox delivered both rows of job 51 (cc-backend's database was restored since)
    box = Outbox(str(tmp_path / "outbox.sqlite3"))
    box.enqueue([OutboxEvent(sink="rest", cluster="testcluster", job_id=51, start_time=T0 + 100, event=e, body=b"{}")
                 for e in ("start_job", "stop_job")])
    box.mark_delivered_many([r.id for r in box.rows()], 201)
    slurm = FakeSlurm([slurm_job(51, T0 + 100, T0 + 200)])
    # When a backfill runs moments later: cc-backend may just not have committed them yet
    config = Config(state_dir=str(tmp_path))
    run = Backfill(config, T0, T0 + 3600, dry_run=False, slurm=slurm, client=FakeBackend(), outbox=box,
                   out=io.StringIO(), err=io.StringIO())
    run.run()
    assert rows(box) == [(51, "start_job", "delivered"), (51, "stop_job", "delivered")]
    assert run.summary.recent == 2 and run.summary.queued == 0
    # Then, run again ten minutes later, both go back to pending with the reason
    run = Backfill(config, T0, T0 + 3600, dry_run=False, slurm=slurm, client=FakeBackend(), outbox=box,
                   out=io.StringIO(), err=io.StringIO())
    run.now = lambda: time.time() + 600
    run.run()
    assert rows(box) == [(51, "start_job", "pending"), (51, "stop_job", "pending")]
    assert {r.last_error for r in box.rows()} == {"ccctl backfill: cc-backend lacks it"}
    assert run.summary.queued == 2


def test_slurm_failing_midway_stops_with_exit_3_keeps_the_windows_done_and_says_where_to_resume(tmp_path):
    slurm = FakeSlurm([slurm_job(61, T0 + 100, T0 + 200), slurm_job(62, T0 + 3700, T0 + 3800)], fail_after=1)
    code, out, err, box = run_backfill(tmp_path, slurm, FakeBackend(), T0, T0 + 3 * 3600)
    assert code == backfill.EXIT_UNREACHABLE
    assert err.splitlines()[-1] == "ccctl backfill: sacct --json ... exited 1: slurmdbd is down"
    assert rows(box) == [(61, "start_job", "pending"), (61, "stop_job", "pending")]
    assert out.splitlines()[-2] == (f"STOPPED at the window from {backfill.clock(T0 + 3600)}: "
                                    f"run again with --since @{T0 + 3600}")


def test_a_job_the_translator_cannot_read_is_quarantined_and_the_others_flow(tmp_path):
    broken = slurm_job(71, T0 + 100, T0 + 200)
    broken["user"] = ""
    code, out, _, box = run_backfill(tmp_path, FakeSlurm([broken, slurm_job(72, T0 + 300, T0 + 400)]), FakeBackend(),
                                     T0, T0 + 3600)
    (entry,) = box.quarantined()
    assert (entry.job_id, entry.json_path, entry.start_time) == (71, "$.user", T0 + 100)
    assert rows(box) == [(72, "start_job", "pending"), (72, "stop_job", "pending")]
    assert "quarantined:    1 (ccctl quarantine list)" in out and code == backfill.EXIT_MISSING


# --- reconciliation: a job Slurm runs that cc-backend does not list as running gets its start again ---------


def submitter_with(tmp_path, running_in_cc_backend):
    box = Outbox(str(tmp_path / "outbox.sqlite3"))
    rt = SimpleNamespace(log=logging.getLogger("test"), facts={}, config=SimpleNamespace(cc_poll_interval=21600))
    client = SimpleNamespace(list_jobs=lambda state: running_in_cc_backend)
    submitter = RestSubmitter(rt, box, client)
    submitter.next_reconcile_at = 0
    return submitter, box


def delivered_run(box, job_id, start_time, events=("start_job",)):
    box.enqueue([OutboxEvent(sink="rest", cluster="c", job_id=job_id, start_time=start_time, event=e, body=b"{}")
                 for e in events])
    box.mark_delivered_many([r.id for r in box.rows(job_id=job_id)], 201)


def test_reconciliation_resends_the_start_of_a_running_job_cc_backend_does_not_list(tmp_path):
    # Given four delivered starts: job 1 running in cc-backend, job 2 missing there, job 3 stopped
    # (its stop delivered), job 4 missing but its start another run's
    submitter, box = submitter_with(tmp_path, [{"cluster": "c", "jobId": 1, "startTime": 100},
                                               {"cluster": "c", "jobId": 4, "startTime": 400}])
    delivered_run(box, 1, 100)
    delivered_run(box, 2, 200)
    delivered_run(box, 3, 300, ("start_job", "stop_job"))
    delivered_run(box, 4, 401)
    # When reconciliation runs after the grace period
    submitter.reconcile(time.time() + START_GRACE_S + 1)
    # Then the starts of jobs 2 and 4 are pending again, with the reason; nothing else moved
    assert [(r.job_id, r.event, r.state) for r in box.rows()] == [
        (1, "start_job", "delivered"), (2, "start_job", "pending"), (3, "start_job", "delivered"),
        (3, "stop_job", "delivered"), (4, "start_job", "pending")]
    assert box.rows(job_id=2)[0].last_error == "cc-backend does not list the running job"


def test_reconciliation_leaves_a_start_delivered_within_cc_backends_commit_interval_alone(tmp_path):
    submitter, box = submitter_with(tmp_path, [])
    delivered_run(box, 5, 500)
    submitter.reconcile(time.time() + START_GRACE_S - 30)
    assert [(r.job_id, r.state) for r in box.rows()] == [(5, "delivered")]


# --- for real: Slurm sandbox, ccctl, the daemon, cc-backend ------------------------------------------------


def ccctl(d, *args) -> subprocess.CompletedProcess:
    return subprocess.run(ccctl_command("-config", d.config_path, *args), capture_output=True, text=True,
                          env=python_env(d.env), cwd=REPO, timeout=120)


def window_lists(slurm, job_id: int, since: int, until: int) -> bool:
    """Does sacct's time-window query (backfill's) list the job yet?"""
    local = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))  # noqa: E731 - as sacct reads it
    out = slurm.run("sacct", "-X", "-n", "-P", "-a", "-o", "JobIDRaw", "-S", local(since), "-E", local(until)).stdout
    return str(job_id) in out.split()


def summary_of(done: subprocess.CompletedProcess) -> dict:
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "summary", done.stdout
    return last


@pytest.mark.slurm
@pytest.mark.ccbackend
@pytest.mark.slow
def test_a_job_that_ended_while_no_daemon_ran_is_listed_then_queued_then_delivered_once_and_never_queued_again(
        daemon, slurm, cc_backend, tmp_path):
    # Given a job that ran and ended while no daemon ran
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt, slurmPollInterval=2,
               slurmQueryDelay=1)
    job_id = slurm.sbatch("-o", "/dev/null", "--wrap", "true")
    slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=90)
    start = json.loads(slurm.run("sacct", "--json", "-X", "-j", str(job_id)).stdout)["jobs"][0]["time"]["start"]
    span = ("--since", f"@{start}", "--until", f"@{start + 1}")
    wait_for(lambda: window_lists(slurm, job_id, start, start + 1), 30, 0.5,
             "slurmdbd listing the job in a time window (seconds after sacct -j does)")
    outbox_path = tmp_path / "state" / "outbox.sqlite3"
    # When an admin asks what cc-backend lacks
    dry = ccctl(d, "backfill", *span, "--dry-run", "--json")
    # Then the job's start and stop are listed, exit 1, and nothing is written
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    assert [(x["event"], x["jobId"], x["ccBackend"], x["outbox"]) for x in lines[:-1]] == [
        ("start_job", job_id, None, {"rest": "new"}), ("stop_job", job_id, None, {"rest": "new"})], dry.stderr
    assert lines[1]["body"]["jobState"] == "completed"
    summary = summary_of(dry)
    assert (summary["jobs"], summary["missingStarts"], summary["missingStops"], summary["queued"]) == (1, 1, 1, 2)
    assert dry.returncode == backfill.EXIT_MISSING
    assert not outbox_path.exists()
    # When it backfills, the daemon still down
    real = ccctl(d, "backfill", *span, "--json")
    summary = summary_of(real)
    assert (summary["queued"], summary["daemon"], real.returncode) == (2, "not running", 0), real.stderr
    box = Outbox(str(outbox_path), readonly=True)
    queued = [(r.id, r.job_id, r.event, r.state) for r in box.rows()]
    assert [q[1:] for q in queued] == [(job_id, "start_job", "pending"), (job_id, "stop_job", "pending")]
    # Then the daemon, started, delivers those very rows, and cc-backend has the job once, completed
    lastrun = tmp_path / "state" / "lastrun"
    lastrun.touch()  # its own first poll reads only the last minute
    d.start()
    d.wait_all_running()
    delivered = [(row_id, job, event, "delivered") for row_id, job, event, _ in queued]
    wait_for(lambda: [(r.id, r.job_id, r.event, r.state) for r in box.rows()] == delivered, 60, 0.2,
             "the backfilled rows delivered")
    assert_exactly_once(cc_backend, slurm, [job_id])
    # And a second backfill finds the job in cc-backend and queues nothing
    again = ccctl(d, "backfill", *span, "--json")
    summary = summary_of(again)
    assert {k: summary[k] for k in ("jobs", "inCcBackend", "missingStarts", "missingStops", "queued", "daemon")} == {
        "jobs": 1, "inCcBackend": 1, "missingStarts": 0, "missingStops": 0, "queued": 0, "daemon": "running"}
    assert again.returncode == 0
    assert [(r.id, r.state) for r in box.rows()] == [(q[0], "delivered") for q in queued]
    box.close()
