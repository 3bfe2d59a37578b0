"""What one cc-backend answer to a start_job or stop_job means. One function, every case of the
contract (cc-backend-contract.md §4, §5.2, §5.4, §6.2, §12).

Outcome kinds:
  done            the job is there (201, or "already exists" as 422 or as the UNIQUE 500 of a start
                  not yet committed), or stopped (200, or 422 "already been stopped")
  wait_for_start  the stop found no job (404 on v1.5, 422 "finding job failed" on v1.4): its start
                  may not be committed or even sent yet; try again later, a bounded number of times
  retry           cc-backend could not answer properly (5xx, gateway, timeout, refused or dropped
                  connection, an answer we did not expect): try again later
  auth            our token is refused (401, 403): alert, retry slowly
  failed          the request itself is wrong (400, other 4xx, a CHECK constraint 500): set the row
                  aside with the server's message; an admin can requeue it

A timeout or a connection closed before the answer is ambiguous: cc-backend may have applied the
request. That is safe to retry because the retry of an applied start is answered "already exists"
(422) or UNIQUE (500) and of an applied stop "already been stopped" (422), all `done`.
"""

from __future__ import annotations

import json

import msgspec

DONE, WAIT_FOR_START, RETRY, AUTH, FAILED = "done", "wait_for_start", "retry", "auth", "failed"
#: 4xx that mean "not now" rather than "never": request timeout, too early, too many requests.
TRANSIENT_4XX = frozenset((408, 425, 429))
#: the body of cc-backend's 404 for a route that is not mounted (NATS API on, or a wrong ccRestUrl)
COMMIT_MARGIN_S = 2.0  #: added to ccCommitInterval: the commit worker's own run takes a moment
NO_ROUTE = "the requested endpoint does not exist"


class Outcome(msgspec.Struct, frozen=True):
    kind: str  #: done | wait_for_start | retry | auth | failed
    reason: str = ""  #: the server's message, or what went wrong on the way


def server_message(text: str) -> str:
    """The `error` of cc-backend's JSON envelope, else the text itself (shortened)."""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"][:500]
    except ValueError:
        pass
    return text.strip()[:500]


def classify_rest_answer(event: str, status: int | None, text: str = "", *,
                         error: BaseException | type[BaseException] | None = None) -> Outcome:
    """Classify cc-backend's answer to `event` ("start_job" or "stop_job").

    Pass the HTTP status and body text, or (status None) the transport exception, instance or class,
    that prevented an answer: timeouts, refused connections and connections closed before the
    answer are all `retry`.
    """
    if error is not None or status is None:
        return Outcome(RETRY, _transport_reason(error))
    message = server_message(text)
    if event == "start_job":
        if status == 201:
            return Outcome(DONE)
        if status == 422 and "already exists" in message:
            return Outcome(DONE, "already in cc-backend")
        if status == 500 and "UNIQUE constraint failed" in message:
            return Outcome(DONE, "already in cc-backend, not yet committed")
        if status == 500 and "CHECK constraint failed" in message:  # a value the database refuses: never better
            return Outcome(FAILED, message)
    elif event == "stop_job":
        if status == 200:
            return Outcome(DONE)
        if status == 422 and "already been stopped" in message:
            return Outcome(DONE, "already stopped")
        if status == 404 and NO_ROUTE not in message:
            return Outcome(WAIT_FOR_START, message)
        if status == 422 and ("finding job failed" in message or "no rows" in message):
            return Outcome(WAIT_FOR_START, message)
    else:
        raise ValueError(f"not a job event: {event!r}")
    if status in (401, 403):
        return Outcome(AUTH, message)
    if status == 404:  # a start route that is gone: cc-backend's NATS API took over, or ccRestUrl is wrong
        return Outcome(RETRY, f"cc-backend has no REST {event} route (NATS API on? wrong ccRestUrl?): {message}")
    if status >= 500 or status in TRANSIENT_4XX:
        return Outcome(RETRY, message or f"HTTP {status}")
    if 400 <= status < 500:
        return Outcome(FAILED, message or f"HTTP {status}")
    # 1xx, 3xx, or a 2xx that is not this event's success code: not cc-backend's answer (a proxy?)
    return Outcome(RETRY, f"unexpected answer HTTP {status}: {message[:200]}")


def _transport_reason(error: BaseException | type[BaseException] | None) -> str:
    if error is None:
        return "no answer"
    kind = error if isinstance(error, type) else type(error)
    detail = "" if isinstance(error, type) else str(error)[:300]
    # class names along the MRO, and the text (BackendUnavailable carries the cause's name in it)
    clues = " ".join(k.__name__ for k in kind.__mro__) + " " + detail
    if any(word in clues for word in ("Timeout", "TimeoutError", "timed out")):
        what = "timed out (cc-backend may have applied it; the retry will tell)"
    elif any(word in clues for word in ("ChunkedEncodingError", "RemoteDisconnected", "ConnectionResetError",
                                        "Connection aborted", "IncompleteRead", "ProtocolError")):
        what = "connection closed before the answer (cc-backend may have applied it; the retry will tell)"
    elif any(word in clues for word in ("ConnectionError", "ConnectionRefusedError", "NewConnectionError")):
        what = "cannot connect"
    else:
        what = "no answer"
    return f"{what}: {kind.__name__}" + (f": {detail}" if detail else "")


def stop_hold_s(commit_interval_s: int, backend_profile: str | None) -> float:
    """How long a REST stop waits after its start was confirmed. cc-backend v1.5 keeps a new job in
    job_cache until its commit worker runs; a stop that meets the job there can race that worker
    and stop another job (docs/engineering-notes.md). Once committed, a stop is safe. v1.4 has no
    cache; 0 turns the hold off."""
    return 0.0 if backend_profile == "v1.4" or commit_interval_s == 0 else commit_interval_s + COMMIT_MARGIN_S
