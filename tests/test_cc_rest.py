"""CcRest against the real cc-backend v1.5.4: every answer the adapter relies on, as the server gives it,
classified by delivery_policy; profile detection (probe, job list, REST off); the v1.4 profile through
the fault proxy; transport failures.

Two servers: the session's `cc_backend` (commits its job cache every 5 s) and this module's
`uncommitted` one (once an hour), so "before the commit" is a state, not a race."""

import itertools
import json
import socket
import time

import pytest

from actors.cc_rest import PROBE_CLUSTER, CcRest, Profile
from actors.delivery_policy import AUTH, DONE, RETRY, WAIT_FOR_START, Outcome, classify_rest_answer
from actors.errors import BackendUnavailable
from tests.bench.ccbackend import CLUSTER, job_payload
from tests.conftest import running_cc_backend

pytestmark = pytest.mark.ccbackend

COMMIT_WAIT_S = 30.0  #: the session's cc-backend commits its job cache every 5 s
TIMEOUT_S = 10
job_ids = itertools.count(900_000)  #: far above the Slurm sandbox's job ids of the same session


@pytest.fixture
def client(cc_backend):
    c = CcRest(cc_backend.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    yield c
    c.close()


@pytest.fixture(scope="module")
def uncommitted():
    """A cc-backend of this module whose commit worker runs once an hour: started jobs stay in its
    job cache (a repeat is the UNIQUE 500, the job list stays empty). With CI=true a failed start fails."""
    yield from running_cc_backend("1h", "cc-backend (commit every hour)")


def start_body(job_id: int, start_time: int, **overrides) -> bytes:
    return json.dumps(job_payload(job_id, start_time, **{"shared": "none", **overrides})).encode()


def stop_body(job_id: int, start_time: int, state: str = "completed") -> bytes:
    return json.dumps({"jobId": job_id, "cluster": CLUSTER, "startTime": start_time, "jobState": state,
                       "stopTime": start_time + 30}).encode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


def test_a_start_and_its_repeat_before_the_commit_are_both_done(uncommitted):
    client = CcRest(uncommitted.url, uncommitted.jwt, timeout_s=TIMEOUT_S)
    job_id, start_time = next(job_ids), int(time.time()) - 120
    try:
        # Given a new job / When it is started / Then 201 with cc-backend's success body
        status, text = client.start_job(start_body(job_id, start_time))
        assert (status, json.loads(text)) == (201, {"msg": "success"})
        assert classify_rest_answer("start_job", status, text) == Outcome(DONE)
        # When the same start comes again before the commit worker ran: the UNIQUE 500, done all the same
        status, text = client.start_job(start_body(job_id, start_time))
        assert status == 500 and "UNIQUE constraint failed" in text
        assert classify_rest_answer("start_job", status, text) == Outcome(DONE, "already in cc-backend, not yet committed")
    finally:
        client.close()  # no stop here: a stop would move the job out of the cache into the list


def test_after_the_commit_a_repeat_is_422_and_a_second_stop_is_422_all_done_and_the_job_is_there_once(
        client, cc_backend):
    job_id, start_time = next(job_ids), int(time.time()) - 120
    assert client.start_job(start_body(job_id, start_time))[0] == 201
    cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=COMMIT_WAIT_S)
    # When the start comes again after the commit: 422 already exists, done
    status, text = client.start_job(start_body(job_id, start_time))
    assert status == 422 and "already exists" in text
    assert classify_rest_answer("start_job", status, text) == Outcome(DONE, "already in cc-backend")
    # When it is stopped: 200 with the job; and a second stop: 422 already stopped, done
    status, text = client.stop_job(stop_body(job_id, start_time))
    assert status == 200
    assert (json.loads(text)["jobId"], json.loads(text)["jobState"]) == (job_id, "completed")
    assert classify_rest_answer("stop_job", status, text) == Outcome(DONE)
    status, text = client.stop_job(stop_body(job_id, start_time))
    assert status == 422 and "already been stopped" in text
    assert classify_rest_answer("stop_job", status, text) == Outcome(DONE, "already stopped")
    # Then cc-backend holds the job exactly once, completed
    jobs = [j for j in cc_backend.get_jobs() if j["jobId"] == job_id]
    assert [(j["startTime"], j["jobState"]) for j in jobs] == [(start_time, "completed")]


def test_a_stop_right_after_its_start_works_before_the_commit(client):
    job_id, start_time = next(job_ids), int(time.time()) - 120
    assert client.post_job_event("start_job", start_body(job_id, start_time))[0] == 201
    assert client.post_job_event("stop_job", stop_body(job_id, start_time))[0] == 200


def test_a_stop_of_an_unknown_job_is_404_and_means_wait_for_the_start(client):
    status, text = client.post_job_event("stop_job", stop_body(next(job_ids), int(time.time()) - 120))
    assert status == 404 and "finding job failed" in text
    assert classify_rest_answer("stop_job", status, text).kind == WAIT_FOR_START


def test_a_start_cc_backend_refuses_is_400_with_its_message(client):
    status, text = client.post_job_event("start_job", start_body(next(job_ids), int(time.time()), resources=[
        {"hostname": "n4", "hwthreads": [0]}]))
    outcome = classify_rest_answer("start_job", status, text)
    assert status == 400
    assert (outcome.kind, outcome.reason) == (
        "failed", "ARCHIVE/CLUSTERCONFIG > no subcluster found for cluster testcluster and host n4")


def test_a_bad_token_is_401_classified_auth_and_detect_profile_says_so_without_the_token(cc_backend):
    bad = CcRest(cc_backend.url, "not-a-valid-jwt-SECRET", timeout_s=TIMEOUT_S)
    try:
        status, text = bad.post_job_event("start_job", start_body(next(job_ids), int(time.time())))
        assert status == 401
        assert classify_rest_answer("start_job", status, text).kind == AUTH
        with pytest.raises(BackendUnavailable, match=r"refuses our token \(401\)") as raised:
            bad.detect_profile()
        assert "SECRET" not in str(raised.value)
    finally:
        bad.close()


def test_detect_profile_on_an_empty_job_list_probes_finds_v15_with_rest_on_and_creates_nothing(uncommitted):
    client = CcRest(uncommitted.url, uncommitted.jwt, timeout_s=TIMEOUT_S)
    try:
        assert client.list_jobs() == []  # nothing is ever committed here: the probe decides

        profile = client.detect_profile()

        assert (profile.version, profile.rest_jobs_enabled) == ("v1.5", True)
        assert profile.evidence == "the probe start got: " + json.dumps(
            {"status": "Bad Request", "error": f"no such cluster: {PROBE_CLUSTER}"}, separators=(",", ":"))
        status, text = client.stop_job(json.dumps({"jobId": 0, "cluster": PROBE_CLUSTER, "stopTime": 2}).encode())
        assert status == 404 and "finding job failed" in text  # the probe left no job behind
    finally:
        client.close()


def test_detect_profile_reads_the_version_from_a_listed_job(client, cc_backend):
    job_id, start_time = next(job_ids), int(time.time()) - 200
    assert client.start_job(start_body(job_id, start_time))[0] == 201
    cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=COMMIT_WAIT_S)

    profile = client.detect_profile()

    assert profile == Profile("v1.5", True, "a job in GET /api/jobs/")
    assert not [j for j in cc_backend.get_jobs() if j["cluster"] != CLUSTER]


def test_a_start_route_that_is_404_means_rest_start_stop_are_off(proxy, cc_backend):
    proxy.fail("/api/jobs/start_job/", 404, "the requested endpoint does not exist")
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    try:
        profile = client.detect_profile()

        assert (profile.version, profile.rest_jobs_enabled) == ("v1.5", False)
        status, text = client.start_job(start_body(next(job_ids), int(time.time())))
        assert classify_rest_answer("start_job", status, text).kind == RETRY
    finally:
        client.close()


def test_a_probe_answered_with_503_tells_nothing_and_raises(proxy, cc_backend):
    proxy.fail("/api/jobs/start_job/", 503, "Service Unavailable")
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(BackendUnavailable, match="cannot tell cc-backend's version: the probe start answered 503"):
            client.detect_profile()
    finally:
        client.close()


def test_the_job_list_is_followed_page_by_page_until_a_short_page(proxy, cc_backend):
    start_time = int(time.time()) - 400
    ids = [next(job_ids) for _ in range(3)]
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    try:
        for job_id in ids:
            assert client.start_job(start_body(job_id, start_time))[0] == 201
        cc_backend.wait_for_jobs(lambda jobs: {j["jobId"] for j in jobs} >= set(ids), timeout_s=COMMIT_WAIT_S)
        proxy.records.clear()

        listed = client.list_jobs(state="running", cluster=CLUSTER, start_time=(start_time, start_time),
                                  items_per_page=2)

        assert sorted(j["jobId"] for j in listed) == ids
        assert len(proxy.requests_to("/api/jobs/", "GET")) == 2  # a full page of 2, then a short one
    finally:
        client.close()


def test_node_states_are_posted_and_answered_200_with_an_empty_body(client):
    body = {"cluster": CLUSTER, "nodes": [{"hostname": "n1", "states": ["IDLE"], "cpusAllocated": 0}]}

    assert client.nodestate(json.dumps(body).encode()) == (200, "")


def test_clusters_and_the_job_list_come_back_as_cc_backend_has_them(client, cc_backend):
    job_id, start_time = next(job_ids), int(time.time()) - 300
    assert client.post_job_event("start_job", start_body(job_id, start_time))[0] == 201
    cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=COMMIT_WAIT_S)
    assert [c["name"] for c in json.loads(client.clusters_raw())["clusters"]] == [CLUSTER]
    listed = client.list_jobs(cluster=CLUSTER, start_time=(start_time, start_time), items_per_page=1)
    assert [(j["jobId"], j["startTime"]) for j in listed] == [(job_id, start_time)]


def test_through_a_v14_profile_detect_profile_says_v14_and_converted_bodies_are_accepted(proxy, cc_backend):
    proxy.profile = "v1.4"
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    try:
        profile = client.detect_profile()
        assert (profile.version, profile.rest_jobs_enabled) == ("v1.4", True)
        job_id, start_time = next(job_ids), int(time.time()) - 120
        # Given a v1.5 body (shared, a v1.5-only state) / When converted for v1.4 / Then the server takes it
        body = client.to_v14_body(start_body(job_id, start_time, shared="single_user"))
        assert "shared" not in json.loads(body) and json.loads(body)["exclusive"] == 2
        assert client.post_job_event("start_job", body)[0] == 201
        forwarded = proxy.requests_to("/api/jobs/start_job/")[-1]
        assert forwarded.fault == "v1.4:exclusive" and forwarded.status == 201
        stop = client.to_v14_body(stop_body(job_id, start_time, state="node_fail"))
        assert json.loads(stop)["jobState"] == "failed"
        status, text = client.post_job_event("stop_job", stop)
        assert (status, json.loads(text)["jobState"], json.loads(text)["exclusive"]) == (200, "failed", 2)
        # and an unknown stop is v1.4's 422, still "wait for the start"
        status, text = client.post_job_event("stop_job", stop_body(next(job_ids), start_time))
        assert status == 422
        assert classify_rest_answer("stop_job", status, text).kind == WAIT_FOR_START
    finally:
        client.close()


def test_a_closed_port_is_backend_unavailable_and_the_message_never_holds_the_jwt():
    jwt = "eyJhbGciOiJFZERTQSJ9.SECRET-PAYLOAD.SIGNATURE"
    client = CcRest(f"http://127.0.0.1:{closed_port()}", jwt, timeout_s=2)
    try:
        with pytest.raises(BackendUnavailable) as raised:
            client.post_job_event("start_job", b"{}")
        message = str(raised.value)
        assert message.startswith("POST /api/jobs/start_job/: ConnectionError")
        assert "SECRET" not in message and jwt not in repr(raised.value) and jwt not in repr(client)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
        with pytest.raises(BackendUnavailable):
            client.detect_profile()
    finally:
        client.close()


def test_an_answer_later_than_the_timeout_is_backend_unavailable_without_the_jwt(proxy, cc_backend):
    proxy.delay("/api/jobs/start_job/", 3.0, times=1, forward=False)
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=1)
    try:
        began = time.monotonic()
        with pytest.raises(BackendUnavailable, match="Timeout") as raised:
            client.post_job_event("start_job", start_body(next(job_ids), int(time.time())))
        assert time.monotonic() - began < 2.5
        assert cc_backend.jwt not in str(raised.value)
    finally:
        client.close()


def test_a_connection_closed_after_the_server_committed_is_unavailable_and_the_retry_is_done(proxy, cc_backend):
    proxy.drop_after_forward("/api/jobs/start_job/", times=1)
    client = CcRest(proxy.url, cc_backend.jwt, timeout_s=TIMEOUT_S)
    try:
        job_id, start_time = next(job_ids), int(time.time()) - 60
        with pytest.raises(BackendUnavailable):
            client.post_job_event("start_job", start_body(job_id, start_time))
        assert proxy.requests_to("/api/jobs/start_job/")[-1].upstream_status == 201
        status, text = client.post_job_event("start_job", start_body(job_id, start_time))
        assert status in (422, 500) and classify_rest_answer("start_job", status, text).kind == DONE
    finally:
        client.close()
