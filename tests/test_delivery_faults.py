"""Nothing lost, nothing doubled, whatever breaks: real Slurm -> the real daemon -> the real cc-backend.

Each test runs short Slurm jobs through a daemon while something fails (actors and the whole tree
killed with SIGKILL, cc-backend stopped, faults injected by the proxy in front of cc-backend), then
reads cc-backend's REST API: every job of the test is there exactly once, in its final Slurm
state; and the outbox rows say how each got there.
"""

import collections
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from actors.outbox import START_REFUSED, Outbox
from tests.bench.ccbackend import CLUSTER, job_payload
from tests.support import ACTOR_NAMES, REPO, ccctl_command, pid_alive, python_env, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

POLL_S = 2  #: slurmPollInterval of every daemon here
START, STOP = "/api/jobs/start_job/", "/api/jobs/stop_job/"
#: sacct's final states of these tests and cc-backend's names for them
CC_STATE = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled", "TIMEOUT": "timeout"}
ARRIVAL_TIMEOUT_S = 120.0
sentinel_ids = itertools.count(960_000)  #: cc-backend-only jobs, far above the sandbox's Slurm ids


# --- the adapter under test ------------------------------------------------------------------------------


def start_adapter(daemon, slurm, tmp_path, url: str, jwt: str, **config):
    """A daemon on the sandbox's Slurm and `url`; started, all actors running. Called again with the
    same arguments it starts a new daemon on the same state (outbox, watermark)."""
    d = daemon(env=slurm.env(), ccRestUrl=url, ccRestJwt=jwt, slurmPollInterval=POLL_S, slurmQueryDelay=1,
               **config)
    lastrun = tmp_path / "state" / "lastrun"
    if not lastrun.exists():  # not a week of Slurm: the first window reaches back just the overlap
        lastrun.touch()
        os.utime(lastrun, (time.time() - 2, time.time() - 2))
    d.start()
    d.wait_all_running()
    return d


def rest_facts(d) -> dict:
    return (d.actors().get("rest_submitter") or {}).get("facts") or {}


def wait_caught_up(d, tmp_path) -> None:
    """Until rest_submitter has probed cc-backend (the probe is a start_job) and delivered what the
    first poll found: the window re-reads the last minute, so earlier tests' jobs come again (cc-backend
    says "already there"). Faults set after this hit this test's requests only."""
    wait_for(lambda: rest_facts(d).get("backend_profile") == "v1.5", 30, 0.2, "rest_submitter found cc-backend v1.5")
    first = (d.actors()["slurm_querier"]["facts"] or {}).get("watermark")
    wait_for(lambda: d.actors()["slurm_querier"]["facts"].get("watermark") != first, 30, 0.2,
             "the first poll acknowledged")
    wait_for(lambda: all(r.state != "pending" for r in outbox_rows(tmp_path, None)), 60, 0.2,
             "the first poll's rows delivered")


def submit(slurm, count: int, seconds: int = 1) -> list[int]:
    return [slurm.sbatch("--wrap", f"sleep {seconds}") for _ in range(count)]


def outbox_rows(tmp_path, job_ids) -> list:
    """The rest sink's rows of these jobs (None: of every job)."""
    wanted = None if job_ids is None else set(job_ids)
    try:
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite3"), readonly=True)
    except sqlite3.OperationalError:  # the translator has not created it yet
        return []
    try:
        return [r for r in box.rows(sink="rest", limit=10**6) if wanted is None or r.job_id in wanted]
    except sqlite3.OperationalError:  # created, not yet migrated
        return []
    finally:
        box.close()


def wait_rows(tmp_path, job_ids, predicate, message: str, timeout_s: float = ARRIVAL_TIMEOUT_S) -> list:
    return wait_for(lambda: (rows := outbox_rows(tmp_path, job_ids)) and predicate(rows) and rows, timeout_s, 0.5,
                    message)


def settled(job_ids):
    """Every job has its start and its stop, and no row of them is still to be sent."""
    def check(rows):
        events = collections.Counter(r.event for r in rows)
        return (events == {"start_job": len(job_ids), "stop_job": len(job_ids)}
                and all(r.state in ("delivered", "failed") for r in rows))
    return check


# --- what Slurm and cc-backend say -------------------------------------------------------------------------


def final_slurm_states(slurm, job_ids) -> dict[int, str]:
    """`sacct -X -n -P -o JobIDRaw,State` of the jobs, once all of them have ended."""
    def read():
        out = slurm.run("sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(map(str, job_ids))).stdout
        states = {int(job): state.split()[0] for job, state in (line.split("|") for line in out.splitlines() if line)}
        return states if set(states) == set(job_ids) and set(states.values()) <= set(CC_STATE) else None
    return wait_for(read, ARRIVAL_TIMEOUT_S, 0.5, f"Slurm jobs {job_ids} ended")


def commit_barrier(cc_backend) -> None:
    """Until cc-backend's commit worker has run once more: a start sent now is listed only after it,
    so every start sent before is committed (and a duplicate of ours would be listed)."""
    job_id, start_time = next(sentinel_ids), int(time.time()) - 10
    assert cc_backend.start_job(job_payload(job_id, start_time, shared="none")).status_code == 201
    cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=30, interval_s=0.5)
    cc_backend.stop_job({"jobId": job_id, "cluster": CLUSTER, "startTime": start_time, "jobState": "completed",
                         "stopTime": start_time + 1})


def assert_exactly_once(cc_backend, slurm, job_ids, absent=()) -> dict[int, str]:
    """Every job of `job_ids` but those `absent` is in cc-backend exactly once, in its final Slurm state."""
    states = final_slurm_states(slurm, job_ids)
    expected = {job: CC_STATE[state] for job, state in states.items() if job not in absent}

    def all_there(jobs):
        listed = {(j["jobId"], j["jobState"]) for j in jobs}
        return all(item in listed for item in expected.items())

    cc_backend.wait_for_jobs(all_there, timeout_s=ARRIVAL_TIMEOUT_S, interval_s=0.5)
    commit_barrier(cc_backend)
    mine = [j for j in cc_backend.get_jobs() if j["jobId"] in set(job_ids)]
    assert sorted((j["jobId"], j["jobState"]) for j in mine) == sorted(expected.items())
    assert {j["cluster"] for j in mine} <= {CLUSTER}
    return expected


def assert_one_run_per_job(rows) -> None:
    """The adapter never made two runs (two start times) of one job: cc-backend could not double it."""
    runs = collections.defaultdict(set)
    for r in rows:
        runs[r.job_id].add(r.start_time)
    assert all(len(times) == 1 for times in runs.values()), runs


def requests_per_row(proxy) -> collections.Counter:
    """(event, jobId) -> how many requests the proxy saw for it, faulted or not."""
    counts = collections.Counter()
    for record in proxy.records:
        if record.path in (START, STOP):
            counts[(record.path.split("/")[3], record.json()["jobId"])] += 1
    return counts


def ccctl_status(d) -> tuple[int, dict]:
    done = subprocess.run(ccctl_command("-config", d.config_path, "status", "--json"), capture_output=True, text=True,
                          env=python_env(), cwd=REPO)
    return done.returncode, json.loads(done.stdout)


# --- (a) kill -9 -------------------------------------------------------------------------------------------


def test_jobs_arrive_exactly_once_while_actors_and_the_whole_tree_are_killed_at_random(
        daemon, slurm, cc_backend, tmp_path):
    # Given a daemon, and a kill plan: every actor once, the supervisor alone once, the whole tree twice
    seed = int(os.environ.get("CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    plan = sorted(ACTOR_NAMES) + ["supervisor", "tree", "tree"]
    rng.shuffle(plan)
    print(f"chaos seed {seed}: {plan}")
    adapter = lambda: start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)  # noqa: E731
    d = adapter()
    job_ids = []
    # When jobs keep flowing and one victim after another gets SIGKILL at a random moment
    for victim in plan:
        job_ids += submit(slurm, 3)
        time.sleep(rng.uniform(0.1, 2.5))  # the random moment of the kill (not a wait for anything)
        if victim in ACTOR_NAMES:
            old = d.actors()[victim]["pid"]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: (a := d.all_running()) and a[victim]["pid"] != old, 20, 0.1, f"{victim} restarted")
            assert f"{victim} died (signal 9)" in d.log_text()
            continue
        children = [a["pid"] for a in d.actors().values() if a["pid"]]
        if victim == "tree":
            os.killpg(d.process.pid, signal.SIGKILL)
        else:
            os.kill(d.process.pid, signal.SIGKILL)  # the actors notice their parent is gone and exit
        d.process.wait()
        wait_for(lambda: not any(pid_alive(p) for p in children), 10, 0.1, "the old actors gone")
        d = adapter()
    # Then, after a last kill of everything and a restart, every job is in cc-backend exactly once
    os.killpg(d.process.pid, signal.SIGKILL)
    d.process.wait()
    d = adapter()
    assert len(job_ids) == 3 * len(plan)
    assert_exactly_once(cc_backend, slurm, job_ids)
    rows = wait_rows(tmp_path, job_ids, settled(job_ids), "every row of the jobs delivered")
    assert {r.state for r in rows} == {"delivered"}
    assert_one_run_per_job(rows)
    assert {r.last_status for r in rows if r.event == "stop_job"} <= {200, 422}
    assert {r.last_status for r in rows if r.event == "start_job"} <= {201, 422, 500}


# --- (b) cc-backend down ---------------------------------------------------------------------------------------


def test_jobs_that_end_while_cc_backend_is_down_arrive_once_it_is_back_and_none_twice(
        daemon, slurm, cc_backend, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    # Given jobs whose start cc-backend already has (they run on through the outage)
    long_jobs = submit(slurm, 3, seconds=6)
    wait_rows(tmp_path, long_jobs, lambda rows: sum(r.event == "start_job" and r.state == "delivered"
                                                    for r in rows) == 3, "the long jobs' starts delivered", 60)
    # When cc-backend stops, jobs start and end, and the adapter finds it unreachable
    cc_backend.stop_process()
    try:
        short_jobs = submit(slurm, 6)
        final_slurm_states(slurm, long_jobs + short_jobs)
        wait_for(lambda: rest_facts(d).get("backend_ok") is False, 60, 0.5, "rest_submitter saw the outage")
        waiting = wait_rows(tmp_path, long_jobs + short_jobs, lambda rows: len(rows) == 3 * 2 + 6 * 2,
                            "every job in the outbox", 60)
        assert {r.state for r in waiting if r.job_id in short_jobs} == {"pending"}
    finally:
        cc_backend.start_process()
    # Then everything arrives, exactly once
    job_ids = long_jobs + short_jobs
    assert_exactly_once(cc_backend, slurm, job_ids)
    rows = wait_rows(tmp_path, job_ids, settled(job_ids), "every row delivered")
    assert {r.state for r in rows} == {"delivered"}
    assert_one_run_per_job(rows)
    wait_for(lambda: rest_facts(d).get("backend_ok") is True, 10, 0.2, "backend_ok again in the facts")


# --- (c) faults injected between the adapter and cc-backend ------------------------------------------------


def test_500s_503s_a_timeout_and_dropped_answers_cost_retries_but_every_job_arrives_exactly_once(
        daemon, slurm, cc_backend, proxy, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, proxy.url, cc_backend.jwt, ccRestTimeout=1)
    wait_caught_up(d, tmp_path)
    # Given the next starts and stops fail in every way the contract knows (rules apply in this order)
    proxy.fail(START, 500, "insert into database failed: database is locked", times=2)
    proxy.delay(START, 2.5, times=1)  # forwarded after the client's 1 s timeout: the server commits
    proxy.drop_after_forward(START, times=1)  # the server commits, the client sees a closed connection
    proxy.fail(STOP, 503, "injected fault", times=2)
    proxy.drop_after_forward(STOP, times=1)
    # When six jobs run through it
    job_ids = submit(slurm, 6)
    # Then each is in cc-backend exactly once, and every outbox row ends delivered
    assert_exactly_once(cc_backend, slurm, job_ids)
    rows = wait_rows(tmp_path, job_ids, settled(job_ids), "every row delivered")
    assert {r.state for r in rows} == {"delivered"}
    assert_one_run_per_job(rows)
    # and every fault was used, each cost exactly one more attempt of the row it hit
    faults = collections.Counter((r.path, r.fault) for r in proxy.records if r.fault)
    assert faults == {(START, "fail"): 2, (START, "delay"): 1, (START, "drop"): 1, (STOP, "fail"): 2, (STOP, "drop"): 1}
    assert {r.json()["jobId"] for r in proxy.records if r.fault} <= set(job_ids)
    seen = requests_per_row(proxy)
    assert {(r.event, r.job_id): r.attempts for r in rows} == {key: seen[key] for key in seen if key[1] in job_ids}
    assert sum(r.attempts for r in rows) == len(rows) + 7
    # and a row whose earlier try reached the server ends on cc-backend's "already there"
    applied = {(r.path.split("/")[3], r.json()["jobId"]) for r in proxy.records if r.fault in ("delay", "drop")}
    for row in rows:
        if (row.event, row.job_id) in applied:
            assert row.last_status in ((422, 500) if row.event == "start_job" else (422,)), row
        else:
            assert row.last_status == (201 if row.event == "start_job" else 200), row


def test_a_start_refused_with_400_is_set_aside_with_the_message_and_the_other_jobs_arrive(
        daemon, slurm, cc_backend, proxy, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, proxy.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    message = "ARCHIVE/CLUSTERCONFIG > no subcluster found for cluster testcluster and host n9"
    proxy.fail(START, 400, message, times=1)
    job_ids = submit(slurm, 4)
    rows = wait_rows(tmp_path, job_ids, settled(job_ids), "every row delivered or set aside")
    (refused,) = [r.json()["jobId"] for r in proxy.records if r.fault == "fail"]
    assert_exactly_once(cc_backend, slurm, job_ids, absent={refused})
    by_row = {(r.job_id, r.event): r for r in outbox_rows(tmp_path, job_ids)}
    start, stop = by_row.pop((refused, "start_job")), by_row.pop((refused, "stop_job"))
    assert (start.state, start.attempts, start.last_status, start.last_error) == ("failed", 1, 400, message)
    assert (stop.state, stop.attempts, stop.last_error) == ("failed", 0, START_REFUSED)
    assert {(r.state, r.attempts) for r in by_row.values()} == {("delivered", 1)}
    assert len(rows) == 2 * len(job_ids)
    assert sum(r.fault == "fail" for r in proxy.records) == 1 and requests_per_row(proxy)[("stop_job", refused)] == 0


def test_a_401_to_a_start_keeps_every_row_pending_and_ccctl_status_shows_the_refused_token(
        daemon, slurm, cc_backend, proxy, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, proxy.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    # Given cc-backend starts refusing our token after we found it
    proxy.fail(START, 401, "no user for secured check")
    job_ids = submit(slurm, 2)
    # When the jobs are translated and the first start is tried
    rows = wait_rows(tmp_path, job_ids, lambda rows: len(rows) == 4 and any(r.last_status == 401 for r in rows),
                     "a start answered 401", 60)
    # Then nothing is delivered: one start tried once, the sink pauses, every row still pending
    assert {r.state for r in rows} == {"pending"}
    assert sorted((r.event, r.attempts, r.last_status, r.last_error) for r in rows) == [
        ("start_job", 0, None, ""), ("start_job", 1, 401, "no user for secured check"),
        ("stop_job", 0, None, ""), ("stop_job", 0, None, "")]
    # and ccctl status says so (with the next heartbeat): the actor's facts, the backend section, a problem, exit 1
    code, status = wait_for(lambda: (s := ccctl_status(d))[1]["backend"]["rest"]["auth_failing"] and s, 10, 0.2,
                            "auth_failing in ccctl status")
    facts = {a["name"]: a["facts"] for a in status["actors"]}["rest_submitter"]
    assert facts["auth_failing"] is True
    assert status["backend"]["rest"]["auth_failing"] is True
    assert "cc-backend refuses the JWT (ccRestJwt)" in status["problems"]
    assert code == 1
    assert not [j for j in cc_backend.get_jobs() if j["jobId"] in job_ids]


def test_a_wrong_jwt_from_the_start_keeps_rows_pending_untried_and_ccctl_status_shows_it(
        daemon, slurm, cc_backend, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, "not-the-jwt-of-this-cc-backend")
    job_ids = submit(slurm, 2)
    rows = wait_rows(tmp_path, job_ids, lambda rows: len(rows) == 4, "the jobs in the outbox", 60)
    wait_for(lambda: rest_facts(d).get("auth_failing") is True, 30, 0.2, "auth_failing in the facts")
    code, status = ccctl_status(d)
    rest = status["backend"]["rest"]
    assert (rest["auth_failing"], rest["backend_ok"]) == (True, False)
    assert "cc-backend refuses our token (401)" in rest["last_error"]
    assert "not-the-jwt" not in json.dumps(status)
    assert "cc-backend refuses the JWT (ccRestJwt)" in status["problems"] and code == 1
    assert [(r.state, r.attempts) for r in outbox_rows(tmp_path, job_ids)] == [("pending", 0)] * 4
    assert len(rows) == 4
