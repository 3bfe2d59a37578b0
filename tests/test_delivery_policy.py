"""Every answer of cc-backend (cc-backend-contract.md §4-§6, §12) has exactly one meaning for a delivery."""

import http.client
import socket

import pytest
import requests

from actors.delivery_policy import AUTH, DONE, FAILED, RETRY, WAIT_FOR_START, Outcome, classify_rest_answer
from actors.errors import BackendUnavailable


def envelope(status_text: str, error: str) -> str:
    return '{"status":"%s","error":"%s"}\n' % (status_text, error.replace('"', '\\"'))


UNIQUE_500 = envelope("Internal Server Error", "insert into database failed: UNIQUE constraint failed: "
                      "job_cache.job_id, job_cache.cluster, job_cache.start_time")
CHECK_500 = envelope("Internal Server Error", "insert into database failed: CHECK constraint failed: "
                     "shared IN ('none', 'single_user', 'multi_user')")
DUPLICATE_422 = envelope("Unprocessable Entity", "a job with that jobId, cluster and startTime already exists: "
                         "dbid: 7, jobid: 1001")
STOPPED_422 = envelope("Unprocessable Entity", "jobId 1001 (id 7) on testcluster : job has already been stopped "
                       "(state is: completed)")
NOT_FOUND = "finding job failed: sql: no rows in result set"
NO_ROUTE_404 = '{"status":"Resource not found","error":"the requested endpoint does not exist"}\n'

# (event, status, body, expected kind) — one line per case of the contract
CASES = [
    # start: created, or already there in one of its two spellings
    ("start_job", 201, '{"msg":"success"}', DONE),
    ("start_job", 422, DUPLICATE_422, DONE),
    ("start_job", 500, UNIQUE_500, DONE),
    # stop: stopped, or stopped before
    ("stop_job", 200, '{"jobId":1001,"jobState":"completed"}', DONE),
    ("stop_job", 422, STOPPED_422, DONE),
    # stop of a job cc-backend does not know (yet): v1.5 404, v1.4 422
    ("stop_job", 404, envelope("Not Found", NOT_FOUND), WAIT_FOR_START),
    ("stop_job", 422, envelope("Unprocessable Entity", NOT_FOUND), WAIT_FOR_START),
    # the request itself is wrong: set aside with the server's message
    ("start_job", 400, envelope("Bad Request", "no such cluster: nope"), FAILED),
    ("start_job", 400, envelope("Bad Request", 'parsing request body failed: json: unknown field "exclusive"'), FAILED),
    ("stop_job", 400, envelope("Bad Request", 'jobId 1 (id 2) on c : invalid requested job state: "requeued"'), FAILED),
    ("stop_job", 400, envelope("Bad Request", "the field 'jobId' is required"), FAILED),
    ("start_job", 405, "", FAILED),
    ("start_job", 413, "too large", FAILED),
    ("start_job", 422, envelope("Unprocessable Entity", "something new"), FAILED),
    ("start_job", 500, CHECK_500, FAILED),
    # the token
    ("start_job", 401, envelope("Unauthorized", "token signature is invalid"), AUTH),
    ("stop_job", 401, envelope("Unauthorized", "unknown ip: 10.1.2.3"), AUTH),
    ("start_job", 403, "cross-site request blocked", AUTH),
    # cc-backend could not answer properly
    ("start_job", 500, envelope("Internal Server Error", "checking for duplicate failed: database is locked"), RETRY),
    ("stop_job", 500, envelope("Internal Server Error", "transferring cached job failed"), RETRY),
    ("start_job", 502, "<html>Bad Gateway</html>", RETRY),
    ("stop_job", 503, "", RETRY),
    ("start_job", 504, "Gateway Timeout", RETRY),
    ("start_job", 429, "slow down", RETRY),
    ("start_job", 408, "", RETRY),
    # no REST start/stop route: cc-backend's NATS API is on (or the URL is wrong)
    ("start_job", 404, NO_ROUTE_404, RETRY),
    ("stop_job", 404, NO_ROUTE_404, RETRY),
    ("start_job", 404, "404 page not found", RETRY),
    # not an answer of cc-backend's: never "done"
    ("start_job", 200, "<html>login</html>", RETRY),
    ("stop_job", 201, "", RETRY),
    ("start_job", 302, "", RETRY),
]


@pytest.mark.parametrize("event, status, body, kind", CASES)
def test_each_contract_answer_has_exactly_one_outcome(event, status, body, kind):
    assert classify_rest_answer(event, status, body).kind == kind


def test_a_rejection_keeps_the_servers_message_from_the_envelope():
    outcome = classify_rest_answer("start_job", 400, envelope("Bad Request", "no such cluster: nope"))

    assert outcome == Outcome(FAILED, "no such cluster: nope")


def test_a_wait_for_start_carries_the_servers_message():
    assert classify_rest_answer("stop_job", 404, envelope("Not Found", NOT_FOUND)) == Outcome(WAIT_FOR_START, NOT_FOUND)


def test_a_body_that_is_not_json_is_kept_as_text():
    assert classify_rest_answer("start_job", 400, "  plain words \n").reason == "plain words"


def test_already_there_says_so_in_the_reason():
    assert classify_rest_answer("start_job", 500, UNIQUE_500) == Outcome(DONE, "already in cc-backend, not yet committed")
    assert classify_rest_answer("start_job", 422, DUPLICATE_422) == Outcome(DONE, "already in cc-backend")
    assert classify_rest_answer("stop_job", 422, STOPPED_422) == Outcome(DONE, "already stopped")


def test_a_unique_500_for_a_stop_is_not_done():
    assert classify_rest_answer("stop_job", 500, UNIQUE_500).kind == RETRY


def test_the_start_404_names_the_likely_cause():
    assert "NATS API on" in classify_rest_answer("start_job", 404, NO_ROUTE_404).reason


TRANSPORT = [
    (requests.ReadTimeout("read timed out"), "timed out"),
    (requests.ConnectTimeout, "timed out"),
    (socket.timeout, "timed out"),
    (requests.ConnectionError("Max retries exceeded: Connection refused"), "cannot connect"),
    (ConnectionRefusedError, "cannot connect"),
    (requests.ConnectionError("('Connection aborted.', RemoteDisconnected('closed'))"), "connection closed"),
    (requests.exceptions.ChunkedEncodingError, "connection closed"),
    (http.client.RemoteDisconnected, "connection closed"),
    (BackendUnavailable("POST /api/jobs/start_job/: ReadTimeout: read timed out"), "timed out"),
    (BackendUnavailable("GET /api/jobs/: ConnectionError: refused"), "cannot connect"),
    (RuntimeError("odd"), "no answer"),
]


@pytest.mark.parametrize("error, says", TRANSPORT)
@pytest.mark.parametrize("event", ["start_job", "stop_job"])
def test_every_transport_failure_is_retried_and_named(event, error, says):
    outcome = classify_rest_answer(event, None, error=error)

    assert outcome.kind == RETRY
    assert outcome.reason.startswith(says)


def test_an_ambiguous_failure_says_the_retry_will_tell():
    assert "may have applied it" in classify_rest_answer("start_job", None, error=requests.ReadTimeout).reason


def test_a_missing_status_without_an_error_is_retried():
    assert classify_rest_answer("stop_job", None) == Outcome(RETRY, "no answer")


def test_an_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError):
        classify_rest_answer("nodestate", 200, "")


def test_a_rest_stop_is_held_for_the_commit_interval_plus_a_margin_except_on_v1_4_or_when_off():
    from actors.delivery_policy import stop_hold_s

    assert [stop_hold_s(120, "v1.5"), stop_hold_s(120, None), stop_hold_s(120, "v1.4"), stop_hold_s(0, "v1.5")] == \
        [122.0, 122.0, 0.0, 0.0]
