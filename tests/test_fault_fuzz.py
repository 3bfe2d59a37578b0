"""The fault suite, part three: a fuzz run of malformed Slurm JSON through the live pipeline (real
Slurm sandbox, real cc-backend): the pipeline never stops, each bad job is quarantined with its JSON
path and id, every intact job arrives exactly once."""

import collections
import json
import os
import random
import shutil
import sqlite3
import stat
import sys

import pytest

from actors.outbox import START_REFUSED, Outbox
from tests.conftest import running_cc_backend
from tests.fault_helpers import assert_runs_on, ccctl, process_ids, wait_healthy
from tests.support import wait_for
from tests.test_delivery_faults import assert_one_run_per_job, outbox_rows, submit

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]


FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "8"))  #: the default keeps CI reproducible; set it to explore
#: jobs whose sacct record is damaged, jobs whose slurmctld (live) record is damaged, intact jobs
SACCT_FUZZ_JOBS, LIVE_FUZZ_JOBS, GOOD_JOBS = 30, 8, 4
DELETE = "<delete>"
INVALID_UTF8 = "<invalid utf-8>"  #: written as the bytes caf\xe9 (latin-1), which JSON text cannot carry
#: Half of the damage goes to the fields the adapter reads (the rest anywhere): more findings per job.
SACCT_FIELDS_READ = ("cluster", "partition", "account", "user", "name", "qos", "nodes", "allocation_nodes", "array",
                     "required", "tres", "state", "time", "exit_code", "comment", "working_directory", "het")
LIVE_FIELDS_READ = ("job_state", "start_time", "exit_code", "job_resources", "gres_detail", "comment", "shared")
HUGE_NUMBERS = (2**64 + 7, -(2**63) - 1, 10**30, 1e308, -1, 2**31)
ODD_TEXTS = ("\u0000", "\ud800", "\u202eevil", "\U0001f9ea" * 3, "e\u0301", "\ufeff", "", "x" * 70_000)
#: text the adapter cannot pass on as it is, as it passes it on (U+FFFD, as cc-backend does with bad UTF-8)
AS_REPAIRED = {"\ud800": "\ufffd", INVALID_UTF8: "caf\ufffd"}
#: Damage there may make a finished job read as one with nothing to send (pending, a placeholder, never
#: started) or as one still running (a start, no stop): the fields those rules of the mapping read.
NOTHING_TO_SEND_FIELDS = ("$.time.start", "$.state", "$.name", "$.partition", "$.allocation_nodes", "$.nodes", "$.array")
STILL_RUNNING_FIELDS = ("$.time.end", "$.state")

#: A Slurm client in front of the real one that applies the mutations of its command in the plan file
#: ({"sacct"|"squeue"|"scontrol": {job id: [path, value]}}) to the jobs of its --json output.
MUTATING_CLIENT = """#!{python}
import json, subprocess, sys
done = subprocess.run([{real!r}, *sys.argv[1:]], capture_output=True)
sys.stderr.buffer.write(done.stderr)
out = done.stdout
if "--json" in sys.argv and done.returncode == 0:
    mutations = json.load(open({plan!r})).get({command!r}, {{}})
    doc = json.loads(out)
    for job in doc.get("jobs", []):
        if str(job.get("job_id")) in mutations:
            path, value = mutations[str(job["job_id"])]
            parent = job
            for step in path[:-1]:
                parent = parent[step]
            if value == {delete!r}:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
    out = json.dumps(doc).encode().replace(json.dumps({invalid!r}).encode(), b'"caf\\xe9"')
sys.stdout.buffer.write(out)
sys.exit(done.returncode)
"""


def json_path(path) -> str:
    return "$" + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


def pick_path(rng: random.Random, record: dict, fields_read) -> tuple:
    """A top-level key other than job_id (without it a record cannot be named), one the adapter reads
    every other time, then deeper at random."""
    keys = sorted(k for k in record if k != "job_id")
    read = [k for k in keys if k in fields_read]
    path = (rng.choice(read if read and rng.random() < 0.5 else keys),)
    node = record[path[0]]
    while isinstance(node, (dict, list)) and node and rng.random() < 0.6:
        step = rng.choice(sorted(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path, node = path + (step,), node[step]
    return path


def damage(rng: random.Random, value):
    """A damaged replacement for `value`: null, gone, another type, a huge number, odd unicode, bad bytes."""
    choices = [None, DELETE, {"not": ["what", "Slurm", "writes"]}, [1, "two"], "a string", 12345, True]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        choices += list(HUGE_NUMBERS)
    if isinstance(value, str):
        choices += list(ODD_TEXTS) + [INVALID_UTF8]
    if isinstance(value, (dict, list)):
        choices.append(type(value)())
    return rng.choice([c for c in choices if not (c == value and type(c) is type(value))])


def fuzz_plan(rng: random.Random, records: dict, fields_read) -> dict:
    """job id -> (path, damaged value): one damage per job, derived from its real record."""
    plan = {}
    for job_id in sorted(records):
        path = pick_path(rng, records[job_id], fields_read)
        node = records[job_id]
        for step in path:
            node = node[step]
        plan[job_id] = (list(path), damage(rng, node))
    return plan


def related(quarantine_path: str, mutated_path: str) -> bool:
    """The quarantine points at the damaged value, inside it, or at a container of it."""
    a, b = quarantine_path, mutated_path
    return a == b or any(longer.startswith(shorter + sep) for shorter, longer in ((a, b), (b, a)) for sep in ".[")


def seen_jobs(tmp_path, job_ids) -> set:
    """The jobs of `job_ids` the translator has noted as seen (jobs_seen), whatever it made of them."""
    try:
        box = Outbox(str(tmp_path / "state" / "outbox.sqlite3"), readonly=True)
    except sqlite3.OperationalError:
        return set()
    try:
        return {job for job in job_ids if box.seen(None, job)}
    except sqlite3.OperationalError:
        return set()
    finally:
        box.close()


def listed_states(backend, job_ids) -> dict:
    """job id -> the jobState of every job of that id cc-backend lists."""
    listed = collections.defaultdict(list)
    for job in backend.get_jobs():
        if job["jobId"] in job_ids:
            listed[job["jobId"]].append(job["jobState"])
    return {job: listed.get(job, []) for job in job_ids}


def values_of(document):
    """Every scalar in a decoded JSON document."""
    if isinstance(document, dict):
        for value in document.values():
            yield from values_of(value)
    elif isinstance(document, list):
        for value in document:
            yield from values_of(value)
    else:
        yield document


def live_command(slurm) -> list[str]:
    """The client the querier reads slurmctld's view with (actors.slurm_cli.SlurmCommands.live_jobs)."""
    return ["squeue", "--json"] if slurm.release == "22.05" else ["scontrol", "show", "job", "--json"]


@pytest.fixture
def quiet_cc_backend():
    """A cc-backend of this test whose commit worker never runs during it: a burst of starts and stops
    of finished jobs hits v1.5.4's race between that worker and a stop (tests/test_exactly_once_1000.py),
    which would break GET /api/jobs/ of the session's cc-backend for every later test. A stopped job is
    listed at once without the worker."""
    yield from running_cc_backend("1h")


@pytest.fixture
def mutating_slurm_env(slurm, tmp_path):
    """The sandbox's Slurm environment with mutating sacct, squeue and scontrol first on PATH;
    yields (env, plan file)."""
    env = slurm.env()
    bin_dir = tmp_path / "fuzz-bin"
    bin_dir.mkdir()
    plan = tmp_path / "mutations.json"
    plan.write_text("{}")
    for command in ("sacct", "squeue", "scontrol"):
        wrapper = bin_dir / command
        wrapper.write_text(MUTATING_CLIENT.format(python=sys.executable, real=shutil.which(command, path=env["PATH"]),
                                                  plan=str(plan), command=command, delete=DELETE,
                                                  invalid=INVALID_UTF8))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    yield {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}, plan


def test_a_fuzz_run_of_damaged_slurm_records_never_stops_the_pipeline_each_bad_job_is_quarantined_with_its_path(
        daemon, slurm, quiet_cc_backend, mutating_slurm_env, tmp_path):
    backend = quiet_cc_backend
    env, plan_file = mutating_slurm_env
    rng = random.Random(FUZZ_SEED)
    # Given finished jobs: some with one damage in their sacct record, some with one in slurmctld's
    # record of them (read by the querier with its snapshot), each derived from the job's real record
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "lastrun").touch()  # the poll window starts before the first job
    job_ids = submit(slurm, SACCT_FUZZ_JOBS + LIVE_FUZZ_JOBS + GOOD_JOBS)
    sacct_fuzzed, rest = job_ids[:SACCT_FUZZ_JOBS], job_ids[SACCT_FUZZ_JOBS:]
    live_fuzzed, good = rest[:LIVE_FUZZ_JOBS], rest[LIVE_FUZZ_JOBS:]
    for job in job_ids:
        slurm.wait_for_state(job, {"COMPLETED"}, timeout=120)
    sacct = json.loads(slurm.run("sacct", "--json", "--allusers", "--allocations", "-j",
                                 ",".join(map(str, sacct_fuzzed))).stdout)
    live = json.loads(slurm.run(*live_command(slurm)).stdout)
    sacct_plan = fuzz_plan(rng, {job["job_id"]: job for job in sacct["jobs"] if job["job_id"] in sacct_fuzzed},
                           SACCT_FIELDS_READ)
    live_plan = fuzz_plan(rng, {job["job_id"]: job for job in live["jobs"] if job["job_id"] in live_fuzzed},
                          LIVE_FIELDS_READ)
    assert (sorted(sacct_plan), sorted(live_plan)) == (sacct_fuzzed, live_fuzzed)
    plan_file.write_text(json.dumps({"sacct": {str(job): m for job, m in sacct_plan.items()},
                                     live_command(slurm)[0]: {str(job): m for job, m in live_plan.items()}}))
    plan = {**sacct_plan, **live_plan}
    print(f"fuzz seed {FUZZ_SEED}:", {job: (json_path(p), repr(v)[:40]) for job, (p, v) in plan.items()})
    # When the daemon reads them through the damaging clients
    d = daemon(env=env, ccRestUrl=backend.url, ccRestJwt=backend.jwt, slurmPollInterval=2, slurmQueryDelay=1)
    d.start()
    d.wait_all_running()
    before = process_ids(d)

    # Then every job reaches the translator and all its rows settle
    def settled_outcomes():
        rows = outbox_rows(tmp_path, job_ids)
        unsettled = sorted({r.job_id for r in rows if r.state not in ("delivered", "failed")})
        unseen = sorted(set(job_ids) - seen_jobs(tmp_path, job_ids))
        waiting[:] = [f"not seen by the translator: {unseen}, rows not settled: {unsettled}"]
        return not unsettled and not unseen and rows
    waiting = ["nothing yet"]
    rows = wait_for(settled_outcomes, 120, 1.0, waiting)  # the message says what it still waits for
    quarantined = {q["jobId"]: q for q in json.loads(ccctl(d, "quarantine", "list", "--json").stdout)}
    starts = {r.job_id: r for r in rows if r.event == "start_job"}
    delivered = {job for job, r in starts.items() if r.state == "delivered"}
    refused = {job for job, r in starts.items() if r.state == "failed"}
    skipped = set(job_ids) - set(starts) - set(quarantined)
    print(f"{len(quarantined)} quarantined, {len(delivered)} delivered, {len(refused)} refused by cc-backend, "
          f"{len(skipped)} skipped (nothing to send):", {job: json_path(plan[job][0]) for job in skipped})
    # and the intact jobs are delivered; a damaged slurmctld record never costs the job (sacct's is the record)
    assert set(good) <= delivered
    assert set(live_fuzzed) <= delivered | refused
    # and a job whose sacct record is damaged is quarantined with its id and a JSON path at (or around)
    # the damage, or translated, or (damaged where the mapping reads it) skipped: exactly one of them
    assert not set(starts) & set(quarantined) and set(quarantined) <= set(sacct_fuzzed)
    assert {job: json_path(plan[job][0]) for job in skipped
            if not any(related(json_path(plan[job][0]), field) for field in NOTHING_TO_SEND_FIELDS)} == {}
    for job, entry in quarantined.items():
        mutated = json_path(plan[job][0])
        assert entry["state"] == "held" and entry["error"], entry
        assert related(entry["path"], mutated), (job, entry["path"], mutated, entry["error"])
        assert not entry["error"].startswith("translator error"), entry  # a mapping bug, not a bad record
        assert json.loads(ccctl(d, "quarantine", "show", str(job)).stdout)["record"]["job_id"] == job
    # and what was translated is one run per job; cc-backend took it, or refused it (400) for the damaged
    # text itself (a cluster or host it does not know), and the stop was set aside with the start
    assert_one_run_per_job(rows)
    for job in refused:
        start, stop = (next(r for r in rows if r.job_id == job and r.event == event) for event in ("start_job", "stop_job"))
        assert (start.last_status, stop.state, stop.last_error) == (400, "failed", START_REFUSED), (start, stop)
        damaged = plan[job][1]
        passed_on = AS_REPAIRED.get(damaged, damaged) if isinstance(damaged, str) else damaged
        assert passed_on in values_of(json.loads(start.body)), (job, plan[job], start.last_error)
    # and every job here has ended: a start without its stop (cc-backend would show the job running for
    # good) only where the damage is in what says whether it ended
    runs = {job: sorted((r.event, r.state) for r in rows if r.job_id == job) for job in delivered}
    started_only = {job for job, run in runs.items() if run == [("start_job", "delivered")]}
    assert {job for job, run in runs.items() if run == [("start_job", "delivered"), ("stop_job", "delivered")]} \
        == delivered - started_only
    assert {job: json_path(plan[job][0]) for job in started_only if job not in sacct_fuzzed
            or not any(related(json_path(plan[job][0]), field) for field in STILL_RUNNING_FIELDS)} == {}
    # and cc-backend lists each delivered job exactly once, the intact ones completed, and no other job
    backend.wait_for_jobs(lambda jobs: delivered <= {j["jobId"] for j in jobs}, timeout_s=60, interval_s=0.5)
    listed = listed_states(backend, job_ids)
    assert {job: len(states) for job, states in listed.items()} == {job: int(job in delivered) for job in job_ids}
    assert {job: listed[job] for job in good} == {job: ["completed"] for job in good}
    assert quarantined and delivered - set(good)  # the seed damages some jobs beyond use and leaves some harmless
    # and the pipeline never stopped: the same processes all along, and nothing it counts as a problem
    assert_runs_on(d, before)
    assert wait_healthy(d)["delivery"]["quarantined"] == len(quarantined)
