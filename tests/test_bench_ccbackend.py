"""The real cc-backend v1.5.4 behaves as cc-backend-contract.md says (the adapter's classification rests on it).

Two session instances: `cc_backend` commits started jobs every 5 s, `uncommitted_backend` every hour,
so "before the commit" is a state a test can rely on instead of a race. The NATS tests start their own
instance in NATS mode behind Debian's nats-server.
"""

import asyncio
import itertools
import json

import pytest

from tests.bench.ccbackend import CLUSTER, CcBackend, job_payload
from tests.bench.nats import NatsServer
from tests.conftest import service_unavailable

pytestmark = pytest.mark.ccbackend

COMMIT_WAIT_S = 30.0  #: commit worker runs every 5 s; generous for a loaded 2-core machine
UNIQUE_500 = ("insert into database failed: UNIQUE constraint failed: "
              "job_cache.job_id, job_cache.cluster, job_cache.start_time")

job_ids = itertools.count(1000)


def started_backend(commit_interval: str, nats=None) -> CcBackend:
    backend = CcBackend(commit_interval=commit_interval)
    try:
        backend.start(nats=nats)
    except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
        backend.stop()
        service_unavailable("cc-backend", e)
    return backend


@pytest.fixture(scope="session")
def cc_backend():
    backend = started_backend("5s")
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def uncommitted_backend():
    backend = started_backend("1h")
    yield backend
    backend.stop()


def visible(backend, job_id):
    return backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=COMMIT_WAIT_S)


# ---------------------------------------------------------------------------------------------- auth
def test_a_request_without_a_token_is_refused_with_401_and_the_json_envelope(cc_backend):
    r = cc_backend.request("GET", "/api/jobs/", auth=False)

    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "Unauthorized", "error": "no user for secured check"}


def test_a_request_with_the_api_token_lists_jobs(cc_backend):
    r = cc_backend.request("GET", "/api/jobs/", params={"items-per-page": 7})

    assert r.status_code == 200
    assert set(r.json()) == {"jobs", "items", "page"}
    assert r.json()["items"] == 7 and r.json()["page"] == 1


def test_the_x_auth_token_header_works_as_well(cc_backend):
    r = cc_backend.request("GET", "/api/jobs/", auth=False, headers={"X-Auth-Token": cc_backend.jwt})

    assert r.status_code == 200


def test_the_cluster_is_served_with_its_topology(cc_backend):
    r = cc_backend.request("GET", "/api/clusters/")

    assert r.status_code == 200
    (cluster,) = r.json()["clusters"]
    assert cluster["name"] == CLUSTER
    (sub,) = cluster["subClusters"]
    assert sub["nodes"] == "n[1-3]"
    assert sub["topology"]["node"] == [0, 1, 2, 3]
    assert sub["topology"]["core"] == [[0], [1], [2], [3]]
    assert [a["id"] for a in sub["topology"]["accelerators"]] == ["00000000:01:00.0", "00000000:02:00.0"]


# ---------------------------------------------------------------------------------------------- start
def test_a_start_is_201_but_invisible_until_the_commit_worker_ran(uncommitted_backend):
    job = job_payload(next(job_ids))

    r = uncommitted_backend.start_job(job)

    assert (r.status_code, r.json()) == (201, {"msg": "success"})
    assert uncommitted_backend.find_job(job["jobId"]) is None


def test_the_same_start_before_the_commit_is_a_500_unique_violation(uncommitted_backend):
    job = job_payload(next(job_ids))
    assert uncommitted_backend.start_job(job).status_code == 201

    r = uncommitted_backend.start_job(job)

    assert r.status_code == 500
    assert r.json() == {"status": "Internal Server Error", "error": UNIQUE_500}


def test_a_stop_works_on_a_job_that_is_not_committed_yet(uncommitted_backend):
    job = job_payload(next(job_ids))
    assert uncommitted_backend.start_job(job).status_code == 201

    r = uncommitted_backend.stop_job({"jobId": job["jobId"], "cluster": CLUSTER, "jobState": "completed",
                                      "stopTime": job["startTime"] + 30})

    assert r.status_code == 200
    assert (r.json()["jobState"], r.json()["duration"]) == ("completed", 30)


def test_a_started_job_becomes_visible_after_the_commit(cc_backend):
    job = job_payload(next(job_ids), host="n2")
    assert cc_backend.start_job(job).status_code == 201

    jobs = visible(cc_backend, job["jobId"])

    (seen,) = [j for j in jobs if j["jobId"] == job["jobId"]]
    assert (seen["cluster"], seen["subCluster"], seen["jobState"], seen["shared"]) == (
        CLUSTER, "main", "running", "none")
    assert seen["startTime"] == job["startTime"]
    assert seen["resources"] == job["resources"]


def test_the_same_start_after_the_commit_is_a_422_naming_the_existing_job(cc_backend):
    job = job_payload(next(job_ids))
    assert cc_backend.start_job(job).status_code == 201
    db_id = next(j["id"] for j in visible(cc_backend, job["jobId"]) if j["jobId"] == job["jobId"])

    r = cc_backend.start_job(job)

    assert r.status_code == 422
    assert r.json() == {"status": "Unprocessable Entity",
                        "error": f"a job with that jobId, cluster and startTime already exists: "
                                 f"dbid: {db_id}, jobid: {job['jobId']}"}


def test_a_start_on_a_host_outside_the_cluster_is_a_400(cc_backend):
    r = cc_backend.start_job(job_payload(next(job_ids), host="n4"))

    assert r.status_code == 400
    assert r.json() == {"status": "Bad Request", "error": "ARCHIVE/CLUSTERCONFIG > no subcluster found for "
                                                          "cluster testcluster and host n4"}


def test_a_start_with_the_v14_exclusive_field_is_a_400_unknown_field(cc_backend):
    r = cc_backend.start_job(job_payload(next(job_ids), exclusive=1))

    assert r.status_code == 400
    assert r.json()["error"] == 'parsing request body failed: json: unknown field "exclusive"'


# ---------------------------------------------------------------------------------------------- stop
def test_stop_is_200_then_422_when_repeated(cc_backend):
    job = job_payload(next(job_ids))
    assert cc_backend.start_job(job).status_code == 201
    db_id = next(j["id"] for j in visible(cc_backend, job["jobId"]) if j["jobId"] == job["jobId"])
    stop = {"jobId": job["jobId"], "cluster": CLUSTER, "jobState": "failed", "stopTime": job["startTime"] + 100}

    first = cc_backend.stop_job(stop)
    second = cc_backend.stop_job(stop)

    assert first.status_code == 200
    assert (first.json()["jobState"], first.json()["duration"], first.json()["id"]) == ("failed", 100, db_id)
    assert isinstance(first.json()["startTime"], int)
    assert second.status_code == 422
    assert second.json() == {"status": "Unprocessable Entity",
                             "error": f"jobId {job['jobId']} (id {db_id}) on testcluster : job has already "
                                      f"been stopped (state is: failed)"}


def test_a_stop_of_an_unknown_job_is_a_404(cc_backend):
    r = cc_backend.stop_job({"jobId": 987654321, "cluster": CLUSTER, "stopTime": 1})

    assert r.status_code == 404
    assert r.json() == {"status": "Not Found", "error": "finding job failed: sql: no rows in result set"}


# ---------------------------------------------------------------------------------------------- outage
def test_a_restart_keeps_the_database_port_and_token(cc_backend):
    job = job_payload(next(job_ids))
    assert cc_backend.start_job(job).status_code == 201
    visible(cc_backend, job["jobId"])
    url, jwt = cc_backend.url, cc_backend.jwt

    cc_backend.stop_process()
    assert not cc_backend.running()
    cc_backend.start_process()

    assert (cc_backend.url, cc_backend.jwt) == (url, jwt)
    assert cc_backend.find_job(job["jobId"]) is not None


# ---------------------------------------------------------------------------------------------- NATS mode
SUBJECT = "cc.job.event"


def line(function: str, body: dict, timestamp_ns: int) -> bytes:
    """One line-protocol job event, escaped as contract §9.2 requires (backslashes, then quotes)."""
    event = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
    return f'job,function={function} event="{event}" {timestamp_ns}'.encode()


async def publish(broker: NatsServer, *payloads: bytes) -> None:
    import nats

    nc = await nats.connect(broker.url, **broker.connect_options())
    try:
        for payload in payloads:
            await nc.publish(SUBJECT, payload)
        await nc.flush()
    finally:
        await nc.close()


@pytest.fixture(params=["userpass", "creds"])
def nats_backend(request):
    broker = NatsServer(auth=request.param)
    try:
        broker.start()
    except Exception as e:  # noqa: BLE001
        broker.close()
        service_unavailable(f"nats-server ({request.param})", e)
    backend = started_backend("5s", nats=broker)
    yield backend, broker
    backend.stop()
    broker.close()


@pytest.mark.nats
def test_in_nats_mode_rest_start_is_gone_and_jobs_arrive_over_nats(nats_backend):
    backend, broker = nats_backend
    job = job_payload(next(job_ids))
    stop = {"jobId": job["jobId"], "cluster": CLUSTER, "jobState": "completed", "stopTime": job["startTime"] + 5}

    rest = backend.start_job(job)
    asyncio.run(publish(broker, line("start_job", job, job["startTime"] * 10**9)))
    visible(backend, job["jobId"])
    asyncio.run(publish(broker, line("stop_job", stop, stop["stopTime"] * 10**9)))
    jobs = backend.wait_for_jobs(
        lambda js: any(j["jobId"] == job["jobId"] and j["jobState"] == "completed" for j in js),
        timeout_s=COMMIT_WAIT_S)

    assert rest.status_code == 404
    assert rest.json() == {"status": "Resource not found", "error": "the requested endpoint does not exist"}
    (done,) = [j for j in jobs if j["jobId"] == job["jobId"]]
    assert done["duration"] == 5
