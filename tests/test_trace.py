"""`ccctl trace JOBID`: one verdict per situation. The policy on synthetic facts (a table), then each
verdict produced by a real situation: real Slurm sandbox, real daemon, real cc-backend (or the fault
proxy in front of it), with the verdict line asserted exactly."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time

import pytest

from actors.outbox import Outbox
from actors.trace_verdict import clock, verdict
from tests.support import REPO, ccctl_command, python_env, wait_for
from tests.test_poison import poisoned_slurm_env  # noqa: F401 - the fixture, used below

START = "/api/jobs/start_job/"
T0 = 1_700_000_000  #: the Slurm start of the synthetic job
JOB = 42


# --- the policy, on synthetic facts -----------------------------------------------------------------------


def row(row_id, event, state, **changes) -> dict:
    r = {"row": row_id, "sink": "rest", "cluster": "c1", "event": event, "startTime": T0, "state": state,
         "attempts": 1, "createdAt": T0 + 5, "lastTryAt": T0 + 6, "lastStatus": 201 if event == "start_job" else 200,
         "lastError": "", "nextTryAt": None, "deliveredAt": T0 + 6 if state == "delivered" else None}
    r.update(changes)
    return r


def delivered_facts() -> dict:
    """A finished job, seen, translated, both events delivered, listed by cc-backend as completed."""
    return {
        "jobId": JOB, "cluster": "c1", "tracedAt": T0 + 100, "daemon": "running",
        "poll": {"lastPollAt": T0 + 90, "intervalS": 60, "from": "status"},
        "slurm": {"error": None, "cluster": "c1", "state": "COMPLETED", "startTime": T0, "endTime": T0 + 2,
                  "nodes": "n1"},
        "seen": [{"cluster": "c1", "startTime": None, "firstSeenAt": T0 + 4, "lastSeenAt": T0 + 4,
                  "lastSource": "poll", "lastSlurmState": "", "timesSeen": 1}],
        "translation": {"runs": [{"startTime": T0, "start": {"jobId": JOB}, "stop": {"jobState": "completed"}}],
                        "quarantine": None},
        "delivery": {"rest": [row(1, "start_job", "delivered"), row(2, "stop_job", "delivered")], "nats": []},
        "backend": {"url": "http://cc", "reachable": True, "error": None, "matchesSlurm": True,
                    "jobs": [{"id": 9, "jobId": JOB, "cluster": "c1", "startTime": T0, "jobState": "completed"}]},
    }


def with_changes(**changes):
    def make():
        facts = delivered_facts()
        for path, value in changes.items():
            target, keys = facts, path.split("__")
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = copy.deepcopy(value)
        return facts
    return make


NOTHING = {"translation__runs": [], "delivery__rest": [], "seen": [],
           "backend__jobs": [], "backend__matchesSlurm": None}
HOOK = "was the hook called? (slurmctld's PrologSlurmctld/EpilogSlurmctld running cc-slurm-adapter)"
VERDICTS = [
    ("delivered", with_changes(), "delivered",
     f"delivered and consistent: job 42 is in cc-backend as completed (start {clock(T0)}), COMPLETED in Slurm; "
     "nothing to do"),
    ("delivered long ago, rows pruned", with_changes(**{"delivery__rest": [], "translation__runs": []}), "delivered",
     f"delivered and consistent: job 42 is in cc-backend as completed (start {clock(T0)}), COMPLETED in Slurm; "
     "nothing to do"),
    ("delivered, cc-backend down", with_changes(backend__reachable=False, backend__error="GET /api/jobs/: refused"),
     "unconfirmed", f"delivered, not confirmed: delivered at {clock(T0 + 6)}, but cc-backend could not be asked "
                    "(GET /api/jobs/: refused); check it, then trace again"),
    ("waiting, 503", with_changes(delivery__rest=[
        row(1, "start_job", "pending", lastStatus=503, lastError="injected fault", nextTryAt=T0 + 20),
        row(2, "stop_job", "pending", attempts=0, lastTryAt=None, lastStatus=None, createdAt=T0 + 3)]),
     "waiting", f"waiting for retry (backend down since {clock(T0 + 3)}): last answer 503 injected fault; "
                "rest start_job, rest stop_job to send; nothing to do: it goes out once cc-backend answers "
                "(check it; ccctl status)"),
    ("waiting, never tried, daemon down", with_changes(daemon="not running", delivery__rest=[
        row(1, "start_job", "pending", attempts=0, lastTryAt=None, lastStatus=None)]),
     "waiting", f"waiting for retry (queued since {clock(T0 + 5)}, not sent yet); rest start_job to send; "
                "the daemon is not running: start it (systemctl start cc-slurm-adapter)"),
    ("waiting, cc-backend unreachable since the daemon started", with_changes(
        backendError="cannot tell cc-backend's version", delivery__rest=[
            row(1, "start_job", "pending", attempts=0, lastTryAt=None, lastStatus=None)]),
     "waiting", f"waiting for retry (backend down since {clock(T0 + 5)}): cannot tell cc-backend's version; "
                "rest start_job to send; nothing to do: it goes out once cc-backend answers (check it; ccctl status)"),
    ("waiting, the stop held for cc-backend's commit", with_changes(stopHoldS=122.0, delivery__rest=[
        row(1, "start_job", "delivered"), row(2, "stop_job", "pending", attempts=0, lastTryAt=None, lastStatus=None)]),
     "waiting", f"waiting for cc-backend's commit: the stop goes out at {clock(T0 + 6 + 122)}, once its start is "
                "122 s old (ccCommitInterval + 2 s; a stop that meets an uncommitted job can stop another one in "
                "cc-backend v1.5); nothing to do"),
    ("waiting, the stop's hold is over: an ordinary wait", with_changes(stopHoldS=2.0, delivery__rest=[
        row(1, "start_job", "delivered"), row(2, "stop_job", "pending", attempts=0, lastTryAt=None, lastStatus=None)]),
     "waiting", f"waiting for retry (queued since {clock(T0 + 5)}, not sent yet); rest stop_job to send; "
                "nothing to do: it goes out once cc-backend answers (check it; ccctl status)"),
    ("quarantined", with_changes(**NOTHING, translation__quarantine={
        "state": "held", "path": "$.user", "error": "Expected `str | null`, got `object`"}),
     "quarantined", "quarantined: the translator cannot read $.user of job 42 (Expected `str | null`, got `object`); "
                    "fix the cause (or upgrade the adapter), then run: ccctl quarantine retry 42"),
    ("quarantined, retry asked", with_changes(**NOTHING, translation__quarantine={
        "state": "retry", "path": "$.user", "error": "bad"}),
     "quarantined", "quarantined: the translator cannot read $.user of job 42 (bad); a retry is asked for: "
                    "the next poll reads it again"),
    ("rejected", with_changes(delivery__rest=[
        row(7, "start_job", "failed", lastStatus=400, lastError="no subcluster found"),
        row(8, "stop_job", "failed", attempts=0, lastStatus=None, lastError="its start_job was refused")]),
     "rejected", "rejected by cc-backend: 400 no subcluster found (rest start_job, row 7); fix the cause, "
                 "then run: ccctl retry 7"),
    ("not yet seen, daemon running", with_changes(**NOTHING), "not_seen",
     f"not yet seen: the adapter has no record of job 42; next poll in 50 s (last poll {clock(T0 + 90)}); "
     f"if it should be there already: {HOOK}"),
    ("not yet seen, daemon down", with_changes(**NOTHING, daemon="not running"), "not_seen",
     f"not yet seen: the adapter has no record of job 42, and the daemon is not running (last poll {clock(T0 + 90)}); "
     "start it (systemctl start cc-slurm-adapter): its first poll reads the job"),
    ("a requeued run not yet seen", with_changes(slurm__startTime=T0 + 500, slurm__state="RUNNING"), "not_seen",
     f"not yet seen: the run of job 42 that started at {clock(T0 + 500)} (requeued?) is not in the outbox yet; "
     f"next poll in 50 s (last poll {clock(T0 + 90)}); if it should be there already: {HOOK}"),
    ("not started", with_changes(**NOTHING, slurm__state="PENDING", slurm__startTime=None), "not_started",
     "not started: Slurm has job 42 PENDING; cc-backend gets a job once it runs: nothing to do"),
    ("unknown to Slurm", with_changes(**NOTHING, slurm=None), "unknown",
     "unknown to Slurm: sacct has no job 42 (a wrong id, another cluster (--cluster), or purged from the accounting "
     "database); the adapter has no record of it either"),
    ("Slurm failed", with_changes(**NOTHING, slurm={"error": "sacct cannot be started: No such file or directory"}),
     "slurm_failed", "Slurm did not answer: sacct cannot be started: No such file or directory; the adapter has no "
                     "record of job 42: check slurmctld/slurmdbd (sacct -j 42), then trace again"),
    ("inconsistent: stop not read yet", with_changes(
        delivery__rest=[row(1, "start_job", "delivered")],
        backend__jobs=[{"jobId": JOB, "startTime": T0, "jobState": "running"}]), "inconsistent",
     "inconsistent: running in cc-backend, COMPLETED in Slurm; the adapter has not read the end yet: the next poll "
     "(in 50 s) sends the stop and fixes it; if it stays so, trace again after that poll"),
    ("inconsistent: missing in cc-backend", with_changes(backend__jobs=[]), "inconsistent",
     f"inconsistent: job 42 (start {clock(T0)}) was delivered at {clock(T0 + 6)} but cc-backend does not list it; "
     "cc-backend lists a job once committed (every few seconds): trace again; if it stays missing, the job was "
     "removed there"),
    ("inconsistent: stopped in cc-backend, running in Slurm", with_changes(slurm__state="RUNNING"), "inconsistent",
     "inconsistent: completed in cc-backend, RUNNING in Slurm; cc-backend stopped a job Slurm still runs (an admin, "
     "or a stop of another run): nothing the adapter will change; check the job in cc-backend"),
]


@pytest.mark.parametrize("name, make, code, line", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_each_situation_gets_its_verdict_and_next_step(name, make, code, line):
    assert verdict(make()) == (code, line)


def test_a_quarantine_outranks_a_failed_row_and_a_failed_row_outranks_a_pending_one():
    facts = with_changes(delivery__rest=[row(7, "start_job", "failed", lastStatus=400, lastError="bad"),
                                         row(8, "stop_job", "pending")])()
    assert verdict(facts)[0] == "rejected"
    facts["translation"]["quarantine"] = {"state": "held", "path": "$", "error": "x"}
    assert verdict(facts)[0] == "quarantined"
    facts["translation"]["quarantine"]["state"] = "released"  # translated fine later: no longer a reason
    assert verdict(facts)[0] == "rejected"


def test_a_job_slurm_forgot_is_judged_by_what_the_adapter_sent():
    facts = with_changes(slurm=None)()
    assert verdict(facts) == ("delivered", f"delivered and consistent: job 42 is in cc-backend as completed "
                                           f"(start {clock(T0)}), completed as the adapter sent it (Slurm no longer "
                                           "knows the job); nothing to do")


# --- real situations ----------------------------------------------------------------------------------------


def trace(config_path: str, job_id: int, env: dict, *extra: str) -> tuple[int, dict]:
    done = subprocess.run(ccctl_command("-config", config_path, "trace", str(job_id), "--json", *extra),
                          capture_output=True, text=True, env=python_env(env), cwd=REPO, timeout=120)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def trace_until(config_path: str, job_id: int, env: dict, check, message: str, timeout_s: float = 120.0):
    return wait_for(lambda: (t := trace(config_path, job_id, env)) and check(t[1]) and t, timeout_s, 0.5, message)


def start_adapter(daemon, tmp_path, env, url, jwt):
    """A daemon on the sandbox's Slurm and `url`, its first window reaching back only 2 s, all actors running."""
    d = daemon(env=env, ccRestUrl=url, ccRestJwt=jwt, slurmPollInterval=2, slurmQueryDelay=1)
    lastrun = tmp_path / "state" / "lastrun"
    lastrun.touch()
    os.utime(lastrun, (time.time() - 2, time.time() - 2))
    d.start()
    d.wait_all_running()
    return d


def querier_facts(d) -> dict:
    return d.actors()["slurm_querier"]["facts"] or {}


def wait_caught_up(d, tmp_path) -> None:
    """Until rest_submitter probed cc-backend (the probe is a start_job) and the first poll's rows (earlier
    tests' jobs read again) are delivered: a fault set after this hits this test's job only."""
    wait_for(lambda: (d.actors()["rest_submitter"]["facts"] or {}).get("backend_profile") == "v1.5", 30, 0.2,
             "rest_submitter found cc-backend v1.5")
    first = querier_facts(d).get("watermark")
    wait_for(lambda: querier_facts(d).get("watermark") != first, 30, 0.2, "the first poll acknowledged")

    def nothing_pending():
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite3"), readonly=True)
        try:
            return not box.rows(state="pending", limit=1)
        finally:
            box.close()
    wait_for(nothing_pending, 60, 0.2, "the first poll's rows delivered")


def rest_rows(facts, event):
    return [r for r in facts["delivery"]["rest"] if r["event"] == event]


@pytest.mark.slurm
@pytest.mark.ccbackend
@pytest.mark.slow
def test_a_delivered_job_is_delivered_and_consistent_with_the_daemon_up_and_down(daemon, slurm, cc_backend, tmp_path):
    env = slurm.env()
    d = start_adapter(daemon, tmp_path, env, cc_backend.url, cc_backend.jwt)
    job = slurm.sbatch("--wrap", "sleep 1")
    code, facts = trace_until(d.config_path, job, env, lambda f: f["verdict"]["code"] == "delivered",
                              "trace says delivered")
    start = facts["slurm"]["startTime"]
    line = (f"delivered and consistent: job {job} is in cc-backend as completed (start {clock(start)}), "
            "COMPLETED in Slurm; nothing to do")
    assert (code, facts["daemon"], facts["verdict"]["text"]) == (0, "running", line)
    assert [(r["event"], r["state"], r["startTime"]) for r in facts["delivery"]["rest"]] == \
        [("start_job", "delivered", start), ("stop_job", "delivered", start)]
    listed = [(j["jobId"], j["startTime"], j["jobState"]) for j in facts["backend"]["jobs"]]
    assert listed == [(job, start, "completed")]
    assert facts["seen"][0]["cluster"] == "testcluster" and facts["backend"]["matchesSlurm"] is True
    # With the daemon stopped it reads the store alone, says so, and comes to the same verdict
    d.stop()
    code, facts = trace(d.config_path, job, env)
    assert (code, facts["daemon"], facts["verdict"]["text"]) == (0, "not running", line)
    text = subprocess.run(ccctl_command("-config", d.config_path, "trace", str(job)), capture_output=True, text=True,
                          env=python_env(env), cwd=REPO, timeout=120).stdout.splitlines()
    assert text[0] == f"job {job}@testcluster (daemon not running)"
    assert text[-1] == f"verdict:      {line}"
    assert [t.split(":")[0] for t in text[1:-1]] == ["slurm", "seen", "translation", "delivery rest", "delivery nats",
                                                     "cc-backend"]


@pytest.mark.slurm
@pytest.mark.ccbackend
@pytest.mark.slow
def test_a_poisoned_job_is_quarantined_with_its_path_and_the_retry_command(daemon, slurm, cc_backend,
                                                                           poisoned_slurm_env, tmp_path):
    env, poison = poisoned_slurm_env
    d = start_adapter(daemon, tmp_path, env, cc_backend.url, cc_backend.jwt)
    bad = slurm.sbatch("--hold", "--wrap", "sleep 1")  # held until its record is poisoned
    poison.write_text(f"{bad}\n")
    slurm.run("scontrol", "release", str(bad))
    code, facts = trace_until(d.config_path, bad, env, lambda f: f["verdict"]["code"] == "quarantined",
                              "trace says quarantined")
    assert code == 1
    assert facts["verdict"]["text"] == (f"quarantined: the translator cannot read $.user of job {bad} (Expected "
                                        f"`str | null`, got `object`); fix the cause (or upgrade the adapter), then "
                                        f"run: ccctl quarantine retry {bad}")
    assert facts["translation"]["quarantine"]["retryCommand"] == f"ccctl quarantine retry {bad}"
    assert facts["slurm"]["error"] is None and facts["slurm"]["cluster"] == "testcluster"  # trace reads it anyway


@pytest.mark.slurm
@pytest.mark.ccbackend
@pytest.mark.slow
def test_a_job_cc_backend_answers_503_for_is_waiting_for_retry(daemon, slurm, cc_backend, proxy, tmp_path):
    env = slurm.env()
    d = start_adapter(daemon, tmp_path, env, proxy.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    proxy.fail(START, 503, "injected fault")
    job = slurm.sbatch("--wrap", "sleep 1")
    slurm.wait_for_state(job, {"COMPLETED"}, timeout=90)
    code, facts = trace_until(
        d.config_path, job, env,
        lambda f: len(f["delivery"]["rest"]) == 2 and all(r["attempts"] >= 1 for r in rest_rows(f, "start_job")),
        "both rows in the outbox, the start tried")
    since = min(r["createdAt"] for r in facts["delivery"]["rest"])
    assert (code, facts["verdict"]["code"]) == (1, "waiting")
    assert facts["verdict"]["text"] == (f"waiting for retry (backend down since {clock(since)}): last answer 503 "
                                        "injected fault; rest start_job, rest stop_job to send; nothing to do: it "
                                        "goes out once cc-backend answers (check it; ccctl status)")
    assert facts["backend"]["reachable"] is True and facts["backend"]["jobs"] == []  # the GET passes the proxy


@pytest.mark.slurm
@pytest.mark.ccbackend
@pytest.mark.slow
def test_a_job_cc_backend_refused_with_400_is_rejected_with_its_message(daemon, slurm, cc_backend, proxy, tmp_path):
    env = slurm.env()
    d = start_adapter(daemon, tmp_path, env, proxy.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    message = "ARCHIVE/CLUSTERCONFIG > no subcluster found for cluster testcluster and host n9"
    proxy.fail(START, 400, message, times=1)
    job = slurm.sbatch("--wrap", "sleep 1")
    code, facts = trace_until(d.config_path, job, env, lambda f: f["verdict"]["code"] == "rejected",
                              "trace says rejected")
    (start,) = rest_rows(facts, "start_job")
    assert code == 1
    assert facts["verdict"]["text"] == (f"rejected by cc-backend: 400 {message} (rest start_job, row {start['row']}); "
                                        f"fix the cause, then run: ccctl retry {start['row']}")


@pytest.mark.slurm
@pytest.mark.slow
def test_an_id_slurm_does_not_know_is_unknown_and_a_failing_sacct_is_not(daemon, slurm):
    d = daemon(env=slurm.env())  # never started: trace works on the config alone
    code, facts = trace(d.config_path, 987_654, slurm.env())
    assert (code, facts["daemon"], facts["slurm"]) == (4, "not running", None)
    assert facts["verdict"] == {"code": "unknown", "text": (
        "unknown to Slurm: sacct has no job 987654 (a wrong id, another cluster (--cluster), or purged from the "
        "accounting database); the adapter has no record of it either")}
    code, facts = trace(d.config_path, 987_654, {"PATH": "/nonexistent"})
    assert (code, facts["verdict"]["code"]) == (1, "slurm_failed")
    assert facts["slurm"]["error"] == "sacct cannot be started: No such file or directory"
