"""A thousand short jobs through the real Slurm sandbox: exactly a thousand jobs in the real cc-backend,
each in its Slurm state, read back through cc-backend's REST API — over REST, and at the same time over
NATS alone (a second daemon on the same jobs, feeding a second cc-backend that reads our nats-server),
so the one Slurm run (the slow part) serves both modes.

The REST cc-backend of this test runs its commit worker once an hour, that is never during the test:
cc-backend v1.5.4 has a race between that worker and a stop of a job still in its job_cache
(checkAndHandleStopJob looks the job up in the cache, SyncJobs moves the cache, then
TransferCachedJobToMain inserts nothing and takes a stale LastInsertId): the stop lands on another
job's row, that job is marked archived without an archive, and every GET /api/jobs/ that covers it
answers 500 "open .../meta.json: no such file or directory" from then on. A thousand short jobs hit
it in about every second run. Without the worker every stop moves its own job out of the cache. Over
NATS a stop is published only once its start is listed (committed), so that cc-backend keeps the
bench's 5 s worker.

Nothing the adapter sent can wait unlisted at the end: over REST every job was stopped, and a stop
moves its job into the listed table; over NATS a row counts as delivered only once listed. A second
run of a job (another start time) would show in the outbox, which is checked too.
"""

import collections
import json
import os
import time

import pytest

from actors.outbox import Outbox
from tests.conftest import running_cc_backend
from tests.support import Daemon, wait_for, write_config
from tests.test_e2e_nats import SUBJECT, nats_backend  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.nats, pytest.mark.slow]

TASKS = 1000  #: one job array (the sandbox's MaxArraySize is 1001)
FAIL_EVERY = 10  #: task ids 9, 19, ... exit 1: Slurm says FAILED, the others COMPLETED
#: The sandbox starts about 6-8 trivial jobs a second (shared/reference/slurm-costs.md): generous bounds.
SLURM_TIMEOUT_S = 600.0
ARRIVAL_TIMEOUT_S = 300.0
CC_STATE = {"COMPLETED": "completed", "FAILED": "failed"}


def start_daemon(directory, slurm, **config) -> Daemon:
    """A daemon whose config and state live in `directory`, reading Slurm every 2 s from about now on."""
    directory.mkdir(parents=True, exist_ok=True)
    d = Daemon(write_config(directory, slurmPollInterval=2, slurmQueryDelay=1, **config), directory / "daemon.log",
               env=slurm.env())
    lastrun = directory / "state" / "lastrun"
    lastrun.touch()
    os.utime(lastrun, (time.time() - 2, time.time() - 2))  # not a week of earlier tests' jobs
    d.start()
    return d


@pytest.fixture
def rest_cc_backend():
    """A cc-backend of this test whose commit worker does not run during it (see the module's doc)."""
    yield from running_cc_backend("1h")


@pytest.fixture
def daemons(tmp_path, slurm, rest_cc_backend, nats_backend):  # noqa: F811
    """Two daemons on the sandbox: one delivering over REST to rest_cc_backend, one over NATS only to
    the cc-backend subscribed to nats_backend's broker."""
    server, nats_cc = nats_backend
    rest = start_daemon(tmp_path / "rest", slurm, ccRestUrl=rest_cc_backend.url, ccRestJwt=rest_cc_backend.jwt)
    nats = start_daemon(tmp_path / "nats", slurm, ccRestUrl=nats_cc.url, ccRestJwt=nats_cc.jwt,
                        ccRestSubmitJobs=False, natsServer="127.0.0.1", natsPort=server.port, natsSubject=SUBJECT,
                        natsUser=server.user, natsPassword=server.password)
    try:
        rest.wait_all_running()
        nats.wait_all_running()
        yield rest, nats
    finally:
        rest.stop()
        nats.stop()


def submit_array(slurm) -> int:
    script = f"test $((SLURM_ARRAY_TASK_ID % {FAIL_EVERY})) -ne {FAIL_EVERY - 1}"
    return slurm.sbatch(f"--array=0-{TASKS - 1}", "-o", "/dev/null", "--wrap", script)


def final_states(slurm, array_id: int) -> dict[int, str] | None:
    """job id -> Slurm state of every task, once all of them ended (None before, or while sacct fails:
    on a loaded machine slurmdbd sometimes loses MariaDB for a moment)."""
    done = slurm.run("sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", str(array_id), check=False)
    if done.returncode != 0:
        return None
    out = done.stdout
    states = {int(job): state.split()[0] for job, state in (line.split("|") for line in out.splitlines() if line)}
    return states if len(states) == TASKS and set(states.values()) <= set(CC_STATE) else None


def listed_jobs(backend, array_id: int) -> list[dict]:
    """This array's jobs as cc-backend lists them (pages of 1000)."""
    return [j for j in backend.get_jobs(items_per_page=1000) if j.get("arrayJobId") == array_id]


def assert_exactly_once(backend, expected: dict[int, str], array_id: int) -> None:
    wait_for(lambda: {(j["jobId"], j["jobState"]) for j in listed_jobs(backend, array_id)} >= set(expected.items()),
             ARRIVAL_TIMEOUT_S, 2.0, f"the {TASKS} jobs in cc-backend {backend.url} in their final states")
    listed = listed_jobs(backend, array_id)
    assert len(listed) == TASKS
    assert {j["jobId"]: j["jobState"] for j in listed} == expected
    assert {(j["cluster"], j["numNodes"]) for j in listed} == {("testcluster", 1)}


def outbox_rows(d: Daemon, job_ids) -> list:
    state_dir = json.loads(open(d.config_path).read())["stateDir"]
    box = Outbox(os.path.join(state_dir, "outbox.sqlite3"), readonly=True)
    try:
        return [r for r in box.rows(limit=10 * TASKS) if r.job_id in job_ids]
    finally:
        box.close()


def rows_by_state(d: Daemon, job_ids) -> collections.Counter:
    return collections.Counter((r.sink, r.event, r.state) for r in outbox_rows(d, job_ids))


def test_a_thousand_short_jobs_are_a_thousand_jobs_in_cc_backend_each_in_its_slurm_state_over_rest_and_over_nats(
        daemons, slurm, rest_cc_backend, nats_backend):  # noqa: F811
    rest, nats = daemons
    nats_cc = nats_backend[1]
    # When a job array of a thousand tasks runs through Slurm, a tenth of them failing
    array_id = submit_array(slurm)
    states = wait_for(lambda: final_states(slurm, array_id), SLURM_TIMEOUT_S, 2.0, f"the {TASKS} tasks ended")
    expected = {job: CC_STATE[state] for job, state in states.items()}
    assert collections.Counter(expected.values()) == {"completed": TASKS - TASKS // FAIL_EVERY,
                                                      "failed": TASKS // FAIL_EVERY}
    # Then each cc-backend has exactly a thousand jobs of it, each as Slurm ended it
    assert_exactly_once(rest_cc_backend, expected, array_id)
    assert_exactly_once(nats_cc, expected, array_id)
    # and each outbox holds one start and one stop per job for its sink, every one delivered (over NATS:
    # read back from cc-backend), all of one run per job: no second start time cc-backend could double
    for d, sink in ((rest, "rest"), (nats, "nats")):
        wait_for(lambda: rows_by_state(d, expected) == {(sink, "start_job", "delivered"): TASKS,
                                                         (sink, "stop_job", "delivered"): TASKS},
                 60, 0.5, f"every {sink} row of the array delivered")
        assert len({(r.job_id, r.start_time) for r in outbox_rows(d, expected)}) == TASKS
