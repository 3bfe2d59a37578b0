"""The fault proxy in front of the real cc-backend: transparent when told nothing, and each fault does
exactly what it says (the adapter's delivery tests lean on both)."""

import itertools

import pytest
import requests

from tests.bench.ccbackend import CLUSTER, job_payload
from tests.support import wait_for

pytestmark = pytest.mark.ccbackend

COMMIT_WAIT_S = 30.0
job_ids = itertools.count(5000)


def call(base_url, backend, method, path, auth=True, timeout=10, **kwargs):
    headers = backend.headers if auth else {}
    return requests.request(method, base_url + path, headers=headers, timeout=timeout, **kwargs)


def visible(backend, job_id):
    return backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=COMMIT_WAIT_S)


# ---------------------------------------------------------------------------------------------- pass-through
PASS_THROUGH_CASES = [
    ("GET", "/api/jobs/", False, None),                                              # 401
    ("GET", "/api/clusters/", True, None),                                           # 200
    ("GET", "/api/nope/", True, None),                                               # 404 envelope
    ("POST", "/api/jobs/start_job", True, {"jobId": 1}),                             # 400 {id} route
    ("POST", "/api/jobs/start_job/", True, job_payload(4999, host="n9")),            # 400 no subcluster
    ("POST", "/api/jobs/stop_job/", True, {"jobId": 4998, "stopTime": 1}),           # 404 not found
    ("POST", "/api/jobs/stop_job/", True, {"jobId": 4998, "partition": "x"}),        # 400 unknown field
    ("GET", "/api/jobs/?page=0", True, None),                                        # 400 page
]


@pytest.mark.parametrize("method,path,auth,body", PASS_THROUGH_CASES)
def test_a_request_without_rules_gets_exactly_the_servers_status_and_body(cc_backend, proxy, method, path, auth,
                                                                          body):
    direct = call(cc_backend.url, cc_backend, method, path, auth, json=body)
    proxied = call(proxy.url, cc_backend, method, path, auth, json=body)

    assert (proxied.status_code, proxied.reason, proxied.content) == (direct.status_code, direct.reason,
                                                                      direct.content)
    assert proxied.headers.get("Content-Type") == direct.headers.get("Content-Type")
    (record,) = proxy.records
    assert (record.method, record.status, record.upstream_status, record.fault) == (
        method, direct.status_code, direct.status_code, None)


def test_a_start_through_the_proxy_is_recorded_with_its_body_and_status(cc_backend, proxy):
    job = job_payload(next(job_ids))

    r = call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job)

    assert (r.status_code, r.json()) == (201, {"msg": "success"})
    (record,) = proxy.records
    assert (record.method, record.path, record.json(), record.status) == ("POST", "/api/jobs/start_job/", job, 201)
    assert record.response_json() == {"msg": "success"}


# ---------------------------------------------------------------------------------------------- faults
def test_a_fail_rule_answers_the_envelope_n_times_without_asking_the_server(cc_backend, proxy):
    job = job_payload(next(job_ids))
    proxy.fail("/api/jobs/start_job/", 503, "maintenance", times=2)

    answers = [call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 201]
    assert answers[0].json() == {"status": "Service Unavailable", "error": "maintenance"}
    assert answers[0].headers["Content-Type"] == "application/json"
    assert [r.upstream_status for r in proxy.records] == [None, None, 201]
    assert [r.fault for r in proxy.records] == ["fail", "fail", None]


def test_a_fail_rule_until_cleared_and_only_for_its_route_and_method(cc_backend, proxy):
    proxy.fail("/api/jobs/*", 500, "boom", method="POST")

    posts = [call(proxy.url, cc_backend, "POST", "/api/jobs/stop_job/", json={"jobId": 1}) for _ in range(3)]
    listing = call(proxy.url, cc_backend, "GET", "/api/jobs/")
    proxy.clear()
    after = call(proxy.url, cc_backend, "POST", "/api/jobs/stop_job/", json={"jobId": 4997, "stopTime": 1})

    assert [p.status_code for p in posts] == [500, 500, 500]
    assert posts[0].json() == {"status": "Internal Server Error", "error": "boom"}
    assert listing.status_code == 200
    assert after.status_code == 404


def test_a_delay_beyond_the_client_timeout_still_reaches_the_server(cc_backend, proxy):
    job = job_payload(next(job_ids))
    proxy.delay("/api/jobs/start_job/", 1.5, times=1)

    with pytest.raises(requests.Timeout):
        call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job, timeout=0.5)

    wait_for(lambda: proxy.records[0].upstream_status == 201, 10, message="the delayed start to be forwarded")
    assert proxy.records[0].fault == "delay"
    visible(cc_backend, job["jobId"])


def test_a_delay_without_forwarding_never_reaches_the_server(cc_backend, proxy):
    job = job_payload(next(job_ids))
    proxy.delay("/api/jobs/start_job/", 0.2, times=1, forward=False)

    with pytest.raises(requests.ConnectionError):
        call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job)

    assert (proxy.records[0].upstream_status, proxy.records[0].status) == (None, None)
    assert call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job).status_code == 201


def test_drop_after_forward_commits_on_the_server_and_the_retry_says_already_there(cc_backend, proxy):
    job = job_payload(next(job_ids))
    proxy.drop_after_forward("/api/jobs/start_job/", times=1)

    with pytest.raises(requests.ConnectionError):
        call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job)
    retry = call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job)

    assert (proxy.records[0].fault, proxy.records[0].upstream_status, proxy.records[0].status) == ("drop", 201, None)
    # before the commit the cache's UNIQUE constraint answers, after it the duplicate check
    assert (retry.status_code == 500 and "UNIQUE constraint failed" in retry.json()["error"]) or \
        retry.status_code == 422, retry.text
    jobs = visible(cc_backend, job["jobId"])
    assert len([j for j in jobs if j["jobId"] == job["jobId"]]) == 1


# ---------------------------------------------------------------------------------------------- v1.4
def test_v14_rejects_the_shared_field_without_forwarding(cc_backend, proxy):
    proxy.profile = "v1.4"

    r = call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/",
             json=job_payload(next(job_ids), shared="none"))

    assert r.status_code == 400
    assert r.json() == {"status": "Bad Request",
                        "error": 'parsing request body failed: json: unknown field "shared"'}
    assert proxy.records[0].upstream_status is None


def test_v14_translates_exclusive_for_the_server_and_back_in_lists_and_stop(cc_backend, proxy):
    proxy.profile = "v1.4"
    job = job_payload(next(job_ids), exclusive=2)

    started = call(proxy.url, cc_backend, "POST", "/api/jobs/start_job/", json=job)
    visible(cc_backend, job["jobId"])
    direct = cc_backend.find_job(job["jobId"])
    listed = call(proxy.url, cc_backend, "GET", "/api/jobs/", params={"items-per-page": 500}).json()["jobs"]
    stopped = call(proxy.url, cc_backend, "POST", "/api/jobs/stop_job/",
                   json={"jobId": job["jobId"], "cluster": CLUSTER, "stopTime": job["startTime"] + 10})

    assert started.status_code == 201
    assert proxy.records[0].json()["exclusive"] == 2  # the record keeps what the client sent
    assert direct["shared"] == "single_user"
    (mine,) = [j for j in listed if j["jobId"] == job["jobId"]]
    assert mine["exclusive"] == 2 and "shared" not in mine
    assert stopped.status_code == 200
    assert stopped.json()["exclusive"] == 2 and "shared" not in stopped.json()
    assert isinstance(stopped.json()["startTime"], str) and stopped.json()["startTime"].endswith("Z")


def test_v14_answers_422_where_v15_says_404_for_an_unknown_stop(cc_backend, proxy):
    proxy.profile = "v1.4"

    r = call(proxy.url, cc_backend, "POST", "/api/jobs/stop_job/", json={"jobId": 4996, "stopTime": 1})

    assert r.status_code == 422
    assert r.json() == {"status": "Unprocessable Entity", "error": "finding job failed: sql: no rows in result set"}
    assert proxy.records[0].upstream_status == 404
