"""rest_submitter: delivers the outbox's start/stop rows to cc-backend's REST API.

A row is marked delivered only after cc-backend said yes (or "already there"); every answer is
classified by actors.delivery_policy. A stop is never sent before its start was confirmed (the
outbox does not hand it out earlier). When cc-backend is unreachable the whole sink pauses with
backoff instead of hammering it; the rows wait in the outbox, across restarts.
"""

from __future__ import annotations

import sqlite3
import time

import msgspec
import zmq

from actors import metric_counts
from actors.backoff import compute_backoff
from actors.cc_rest import CcRest
from actors.delivery_policy import classify_rest_answer, stop_hold_s
from actors.errors import BackendUnavailable
from actors.logs import job_tag
from actors.messages import SinkInbox
from actors.outbox import BACKEND_CLUSTERS_KEY, NODESTATE_KEY, Outbox
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime

SINK = "rest"
ROWS_PER_PASS = 200
RETRY_BASE_S = 1.0
RETRY_CAP_S = 300.0
AUTH_RETRY_S = 60.0  #: a refused token is retried slowly: an admin has to fix it
STORE_RETRY_S = 5.0  #: after the outbox could not be written (stateDir full or read-only)
WAIT_FOR_START_MAX_ATTEMPTS = 30  #: a stop cc-backend cannot match is set aside after this many tries
PROFILE_RECHECK_S = 600.0
PRUNE_EVERY_S = 3600.0
FIRST_RECONCILE_AFTER_S = 60.0  #: the first comparison with cc-backend's running jobs, after a start
STOP_GRACE_S = 60.0  #: a stop confirmed this long ago whose job cc-backend still lists as running is resent
#: a start confirmed this long ago whose job cc-backend does not list as running is resent: longer than
#: cc-backend's commit worker (default 2 min), before which a started job is not listed (contract §5.5)
START_GRACE_S = 300.0
#: in the BackendUnavailable of CcRest.detect_profile when cc-backend answers 401/403 to our JWT
TOKEN_REFUSED = "refuses our token"


class RestSubmitter:
    def __init__(self, rt: ActorRuntime, outbox: Outbox, client: CcRest):
        self.rt = rt
        self.log = rt.log
        self.outbox = outbox
        self.client = client
        self.profile = None  # "v1.5" / "v1.4", found on the first contact
        self.profile_checked_at = 0.0
        self.paused_until = 0.0
        self.transport_failures = 0
        self.pruned_at = 0.0
        self.nodestate_sent_at = 0.0
        self.next_reconcile_at = time.time() + FIRST_RECONCILE_AFTER_S
        rt.facts.update({"backend_profile": None, "backend_ok": None, "last_success_at": None,
                         "last_error": "", "auth_failing": False, "delivered": 0})

    def negotiate(self, now: float) -> None:
        """Which cc-backend is this, and what clusters does it describe? Once, and again now and then."""
        if self.profile is not None and now - self.profile_checked_at < PROFILE_RECHECK_S:
            return
        self.profile_checked_at = now
        profile = self.client.detect_profile()
        if profile.rest_jobs_enabled is False:
            self.log.error("cc-backend has no REST start/stop routes (its NATS API is on): set ccRestSubmitJobs "
                           "to false and let nats_publisher deliver")
        if profile.version != self.profile:
            self.log.info("cc-backend speaks the %s API", profile.version)
        self.profile = profile.version
        self.rt.facts["backend_profile"] = profile.version
        self.rt.facts["auth_failing"] = False  # the probe got past cc-backend's token check
        try:
            self.outbox.kv_set(BACKEND_CLUSTERS_KEY, self.client.clusters_raw())
        except BackendUnavailable:
            pass

    def deliver_due(self, now: float) -> int:
        """Deliver what is due; returns how many rows were handled."""
        if now < self.paused_until:
            return 0
        try:
            self.negotiate(now)
        except BackendUnavailable as e:
            if TOKEN_REFUSED in str(e):  # a wrong ccRestJwt from the start: ccctl status must say so
                self.rt.facts["auth_failing"] = True
            self._pause(now, e)
            return 0
        self.send_node_states()
        try:
            self.reconcile(now)
        except BackendUnavailable as e:
            self.log.warning("reconciliation with cc-backend postponed: %s", e)
        rows = self.outbox.due(SINK, now, ROWS_PER_PASS, self.stop_hold_s())
        for row in rows:
            if not self._deliver(row, time.time()):
                break  # transport trouble: stop this pass, the backoff decides when to try again
            self.rt.beat()
        if now - self.pruned_at > PRUNE_EVERY_S:
            self.pruned_at = now
            self.outbox.prune_delivered(now - self.rt.config.delivered_retention)
        return len(rows)

    def reconcile(self, now: float) -> None:
        """Every ccPollInterval, one paged list of cc-backend's running jobs against the outbox:
        a job it still lists as running although its stop was confirmed long ago gets its stop
        again; a job Slurm runs (its start delivered, no stop delivered) that it does not list as
        running gets its start again (then its stop, if Slurm ended it meanwhile). A job cc-backend
        has but stopped (its walltime task, an admin) answers the start with "already exists"."""
        if now < self.next_reconcile_at:
            return
        self.next_reconcile_at = now + self.rt.config.cc_poll_interval
        resent = 0
        running = self.client.list_jobs(state="running")
        for job in running:
            for row in self.outbox.rows(cluster=job.get("cluster"), job_id=job.get("jobId"), sink=SINK):
                if (row.event == "stop_job" and row.state == "delivered" and row.start_time == job.get("startTime")
                        and now - (row.delivered_at or now) > STOP_GRACE_S):
                    self.outbox.resend_delivered(row.id, "cc-backend still lists the job as running")
                    resent += 1
        listed = {(job.get("cluster"), job.get("jobId"), job.get("startTime")) for job in running}
        lost = [row_id for row_id, *run in self.outbox.unstopped_starts(SINK, now - START_GRACE_S)
                if tuple(run) not in listed]
        started = self.outbox.resend_delivered_many(lost, "cc-backend does not list the running job") if lost else 0
        self.rt.facts["last_reconcile_at"] = now
        if resent:
            self.log.warning("reconciliation: %d job(s) still running in cc-backend after their stop; sending again",
                             resent)
        if started:
            self.log.warning("reconciliation: %d running job(s) missing in cc-backend; sending their start again",
                             started)

    def send_node_states(self) -> None:
        """The latest node states sinfo gave, once per poll; only cc-backend v1.5 has the route."""
        latest = self.outbox.kv_get_with_time(NODESTATE_KEY)
        if latest is None or latest[1] <= self.nodestate_sent_at or self.profile != "v1.5":
            return
        self.nodestate_sent_at = latest[1]
        try:
            status, text = self.client.post_nodestate(latest[0])
        except BackendUnavailable as e:
            self.log.warning("node states not sent: %s", e)
            return
        if status != 200:
            self.log.warning("cc-backend refused the node states (%d): %s", status, text[:200])

    def _deliver(self, row, now: float) -> bool:
        body = row.body
        if self.profile == "v1.4":
            body = self.client.to_v14_body(body)
        try:
            with metric_counts.timed(self.rt.facts, metric_counts.CC_REQUEST_S):
                status, text = self.client.post_job_event(row.event, body)
        except BackendUnavailable as e:
            metric_counts.outcome(self.rt.facts, "unreachable")
            self.outbox.mark_retry(row.id, now + self._transport_backoff(), None, str(e))
            self._pause(now, e)
            return False
        self.transport_failures = 0
        outcome = classify_rest_answer(row.event, status, text)
        metric_counts.outcome(self.rt.facts, outcome.kind)
        tag = job_tag(row.cluster, row.job_id)
        self.rt.facts["backend_ok"] = True
        if outcome.kind == "done":
            self.outbox.mark_delivered(row.id, status)
            self.rt.facts["last_success_at"] = now
            self.rt.facts["delivered"] += 1
            metric_counts.observe_job_ends(self.rt.facts, [row], time.time())
            self.rt.facts["auth_failing"] = False
            self.log.info("%s: %s delivered (%d%s)", tag, row.event, status, f", {outcome.reason}" if outcome.reason else "")
        elif outcome.kind == "failed":
            self.outbox.mark_failed(row.id, status, outcome.reason)
            self.log.error("%s: cc-backend rejected %s (%d): %s; set aside (ccctl jobs --failed)", tag, row.event,
                           status, outcome.reason)
        elif outcome.kind == "wait_for_start" and row.attempts + 1 >= WAIT_FOR_START_MAX_ATTEMPTS:
            self.outbox.mark_failed(row.id, status, f"cc-backend still cannot find the job: {outcome.reason}")
            self.log.error("%s: cc-backend does not know the job its stop is for, after %d tries; set aside",
                           tag, row.attempts + 1)
        elif outcome.kind == "auth":
            self.outbox.mark_retry(row.id, now + AUTH_RETRY_S, status, outcome.reason)
            self.rt.facts["auth_failing"] = True
            self.log.error("cc-backend refuses our token (%d: %s): check ccRestJwt; retrying in %d s",
                           status, outcome.reason, AUTH_RETRY_S)
            self.paused_until = now + AUTH_RETRY_S
            return False
        else:  # retry, wait_for_start
            delay = compute_backoff(row.attempts + 1, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)
            self.outbox.mark_retry(row.id, now + delay, status, outcome.reason)
            self.log.warning("%s: %s not delivered yet (%d: %s); retrying in %.0f s", tag, row.event, status,
                             outcome.reason, delay)
        return True

    def stop_hold_s(self) -> float:
        return stop_hold_s(self.rt.config.cc_commit_interval, self.profile)

    def _transport_backoff(self) -> float:
        return compute_backoff(self.transport_failures + 1, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)

    def _pause(self, now: float, error: Exception) -> None:
        self.transport_failures += 1
        delay = self._transport_backoff()
        self.paused_until = now + delay
        self.rt.facts["backend_ok"] = False
        self.rt.facts["last_error"] = str(error)
        self.log.warning("cc-backend unreachable (%s); pausing %.0f s", error, delay)

    def next_wakeup_ms(self, now: float) -> int:
        due = self.outbox.next_due_at(SINK, self.stop_hold_s())  # 0.0 for a fresh row: due now
        next_at = max(self.paused_until, now + 1.0 if due is None else due)
        return max(0, min(POLL_TIMEOUT_MS, int((next_at - now) * 1000)))


def run(rt: ActorRuntime) -> int:
    config = rt.config
    news = rt.socket(zmq.SUB, connect=rt.pipes.outbox_news)
    news.setsockopt(zmq.SUBSCRIBE, b"")
    decoder = msgspec.json.Decoder(SinkInbox)
    outbox = Outbox(config.outbox_path)
    client = CcRest(config.cc_rest_url, config.cc_rest_jwt, timeout_s=config.cc_rest_timeout)
    submitter = RestSubmitter(rt, outbox, client)
    poller = zmq.Poller()
    poller.register(news, zmq.POLLIN)
    if not config.cc_rest_submit_jobs:
        rt.log.info("ccRestSubmitJobs is false: REST delivery is off")
    while rt.keep_running():
        if poller.poll(submitter.next_wakeup_ms(time.time())):
            rt.receive_all(news, decoder)  # wake-ups only: drain them, then look at the outbox once
        if config.cc_rest_submit_jobs:
            try:
                submitter.deliver_due(time.time())
            except sqlite3.Error as e:  # stateDir full or read-only: the rows stay as they were, tried later
                rt.facts["store_error"] = f"outbox: {e}"
                rt.log.error("cannot write the outbox (%s); trying again in %.0f s", e, STORE_RETRY_S)
                submitter.paused_until = time.time() + STORE_RETRY_S
            else:
                if time.time() >= submitter.paused_until:
                    rt.facts.pop("store_error", None)
    outbox.close()
    client.close()
    return 0
