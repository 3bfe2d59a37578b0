"""NATS-only mode end to end: the daemon publishes, the real cc-backend (its NATS API on, REST start/stop
off) consumes our subject at most once, and the daemon reads every job back over REST before it
counts as delivered."""

import json
import os
import time

import pytest

from tests.bench.ccbackend import job_payload
from tests.conftest import service_unavailable
from tests.support import wait_for

pytestmark = [pytest.mark.nats, pytest.mark.ccbackend, pytest.mark.slow]

SUBJECT = "cc.job.event"


@pytest.fixture(scope="module")
def nats_backend():
    """A nats-server and the real cc-backend subscribed to SUBJECT on it (user/password)."""
    from tests.bench.ccbackend import CcBackend
    from tests.bench.nats import NatsServer

    server, backend = NatsServer(auth="userpass", jetstream=False), CcBackend()
    try:
        server.start()
        backend.start(nats=server, subject=SUBJECT)
    except Exception as e:  # noqa: BLE001
        backend.stop()
        server.close()
        service_unavailable("nats-server + cc-backend with its NATS API", e)
    yield server, backend
    backend.stop()
    server.close()


def nats_only_daemon(daemon, server, backend, **config):
    d = daemon(ccRestUrl=backend.url, ccRestJwt=backend.jwt, ccRestSubmitJobs=False, natsServer="127.0.0.1",
               natsPort=server.port, natsSubject=SUBJECT, natsUser=server.user, natsPassword=server.password,
               **config).start()
    d.wait_all_running()
    return d


def outbox_of(d):
    from actors.outbox import Outbox

    return Outbox(os.path.join(json.loads(open(d.config_path).read())["stateDir"], "outbox.sqlite3"))


def rows_of(outbox, job_id):
    return [(r.sink, r.event, r.state) for r in outbox.rows(job_id=job_id)]


def only_job(jobs, job_id):
    mine = [j for j in jobs if j["jobId"] == job_id]
    assert len(mine) == 1, f"job {job_id} is in cc-backend {len(mine)} times"
    return mine[0]


@pytest.mark.slurm
def test_a_real_sbatch_job_reaches_cc_backend_over_nats_once_and_its_rows_end_delivered(daemon, slurm, nats_backend):
    server, backend = nats_backend
    d = nats_only_daemon(daemon, server, backend, slurmPollInterval=2, slurmQueryDelay=1, env=slurm.env())
    job_id = slurm.sbatch("-N", "1", "-A", "projecta", "--wrap", "srun hostname")
    slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=90)
    jobs = backend.wait_for_jobs(
        lambda jobs: any(j["jobId"] == job_id and j["jobState"] == "completed" for j in jobs), timeout_s=120)
    job = only_job(jobs, job_id)
    assert (job["cluster"], job["project"], job["numNodes"]) == ("testcluster", "projecta", 1)
    outbox = outbox_of(d)
    wait_for(lambda: rows_of(outbox, job_id) == [("nats", "start_job", "delivered"), ("nats", "stop_job", "delivered")],
             60, 0.2, "both nats rows delivered (read back from cc-backend)")
    assert only_job(backend.get_jobs(), job_id)["jobState"] == "completed"


def test_a_start_cc_backend_missed_is_published_again_and_then_delivered(daemon, nats_backend):
    server, backend = nats_backend
    d = nats_only_daemon(daemon, server, backend)
    outbox = outbox_of(d)
    from actors.outbox import OutboxEvent

    def start_row(job_id, start_time):
        body = json.dumps(job_payload(job_id, start_time)).encode()
        return OutboxEvent(sink="nats", cluster="testcluster", job_id=job_id, start_time=start_time,
                           event="start_job", body=body)

    now = int(time.time())
    # Given a first job delivered: the daemon has seen how long cc-backend takes to list a job
    outbox.enqueue([start_row(910001, now - 300)])
    wait_for(lambda: rows_of(outbox, 910001) == [("nats", "start_job", "delivered")], 60, 0.2, "first job delivered")
    # When cc-backend is down while the next start is published (NATS is at-most-once: it is lost)
    backend.stop_process()
    outbox.enqueue([start_row(910002, now - 200)])
    wait_for(lambda: rows_of(outbox, 910002) == [("nats", "start_job", "published")], 20, 0.2, "published")
    backend.start_process()
    # Then the daemon does not find it, publishes it again, and finds it: exactly one job
    wait_for(lambda: rows_of(outbox, 910002) == [("nats", "start_job", "delivered")], 150, 0.5,
             "the lost start re-published and read back")
    assert only_job(backend.get_jobs(), 910002)["startTime"] == now - 200
    row = outbox.rows(job_id=910002)[0]
    assert row.attempts >= 3  # published, sent back to pending, published again (and delivered)
