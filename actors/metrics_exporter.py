"""metrics_exporter: the OpenMetrics endpoint on metricsListen, forked only when that key is set.

prometheus_client's own HTTP server answers each scrape (OpenMetrics or the Prometheus text format,
as the scraper asks). Nothing is counted here: a custom Collector asks the supervisor for its status
at scrape time (the answer `ccctl status --json` prints) and builds every family from it: the
actors' states and restarts as the supervisor keeps them, the outbox counts it read, and the
cumulative counters and histograms the actors keep in their heartbeat facts (actors.metric_counts).
A restarted exporter therefore loses nothing; an actor's own counters restart from zero with it.
Only known fields become samples, so no URL, error text or secret can reach a scrape.
"""

from __future__ import annotations

import platform
import time

import msgspec
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.utils import floatToGoString

from actors import VERSION
from actors import metric_counts as mc
from actors.config import parse_metrics_listen
from actors.ctl_client import request_daemon
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime

STATUS_TIMEOUT_S = 2.0  #: a scrape waits this long for the supervisor's status
#: metricsListen was free at the daemon's start but is not now: the supervisor retries with backoff
#: (flapping in ccctl status if it lasts); not EXIT_CONFIG, which would stop the deliveries too.
EXIT_CANNOT_LISTEN = 1
SINK_ACTORS = {"rest": "rest_submitter", "nats": "nats_publisher"}
#: sink -> (outcome label, fact key) for ccsa_deliveries_total; a missing fact counts 0.
DELIVERY_OUTCOMES = {
    "rest": (("delivered", "delivered"), ("retry", "outcomes.retry"), ("wait_for_start", "outcomes.wait_for_start"),
             ("auth", "outcomes.auth"), ("failed", "outcomes.failed"), ("unreachable", "outcomes.unreachable")),
    "nats": (("published", "published"), ("delivered", "delivered"), ("retry", "outcomes.retry"),
             ("failed", "outcomes.failed"), ("unreachable", "outcomes.unreachable")),
}
OUTBOX_STATES = ("pending", "published", "delivered", "failed")
JOB_SOURCES = ("poll", "hook")


def fetch_status(ctl_sock_path: str) -> dict | None:
    """The supervisor's status answer, None when it does not answer in time."""
    reply = request_daemon(ctl_sock_path, "status", STATUS_TIMEOUT_S)
    if reply is None or not reply.ok:
        return None
    return msgspec.json.decode(reply.data)


class StatusCollector:
    """Builds the families at scrape time from get_status() (a status dict, or None)."""

    def __init__(self, get_status, facts: dict | None = None, log=None):
        self.get_status = get_status
        self.facts = facts if facts is not None else {}
        self.log = log

    def collect(self):
        status = self.get_status()
        mc.count(self.facts, "scrapes")
        if status is None:
            mc.count(self.facts, "status_failures")
        try:
            return families(status)
        except (KeyError, TypeError, AttributeError) as e:  # a status shape this code does not know
            mc.count(self.facts, "status_failures")
            if self.log is not None:
                self.log.error("cannot read the supervisor's status (%s: %s); serving ccsa_status_up 0",
                               type(e).__name__, e)
            return families(None)


def families(status: dict | None) -> list:
    info = InfoMetricFamily("ccsa_build", "cc-slurm-adapter version and Python release",
                            value={"version": VERSION, "python": platform.python_version()})
    up = GaugeMetricFamily("ccsa_status_up", "1 when the supervisor answered this scrape's status request")
    up.add_metric([], 0 if status is None else 1)
    if status is None:
        return [info, up]
    return [info, up, *_supervisor(status), *_slurm(status), *_delivery(status), *_store(status)]


def _supervisor(status: dict) -> list:
    uptime = GaugeMetricFamily("ccsa_supervisor_uptime_seconds", "Seconds since the supervisor started",
                               unit="seconds")
    uptime.add_metric([], status["supervisor"]["uptime_s"])
    actor_up = GaugeMetricFamily("ccsa_actor_up", "1 when the actor is running", labels=["actor"])
    restarts = CounterMetricFamily("ccsa_actor_restarts", "Restarts of the actor since the supervisor started",
                                   labels=["actor"])
    age = GaugeMetricFamily("ccsa_actor_heartbeat_age_seconds", "Seconds since the actor's last heartbeat",
                            labels=["actor"], unit="seconds")
    for actor in status["actors"]:
        actor_up.add_metric([actor["name"]], 1 if actor["state"] == "running" else 0)
        restarts.add_metric([actor["name"]], actor["restarts"])
        if actor.get("heartbeat_age_s") is not None:
            age.add_metric([actor["name"]], actor["heartbeat_age_s"])
    return [uptime, actor_up, restarts, age]


def _slurm(status: dict) -> list:
    querier, hook = _facts(status, "slurm_querier"), _facts(status, "hook_listener")
    polls = CounterMetricFamily("ccsa_slurm_polls", "Polls of Slurm that succeeded")
    polls.add_metric([], querier.get("polls") or 0)
    errors = CounterMetricFamily("ccsa_slurm_errors", "Slurm reads (poll or hook query) that failed")
    errors.add_metric([], querier.get(mc.SLURM_ERRORS) or 0)
    seen = CounterMetricFamily("ccsa_jobs_seen", "Job records with news (a start or an end) read from Slurm",
                               labels=["source"])
    for source in JOB_SOURCES:
        seen.add_metric([source], querier.get(f"{mc.JOBS_SEEN}.{source}") or 0)
    events = CounterMetricFamily("ccsa_hook_events", "Events received from the Slurm prolog/epilog hook")
    events.add_metric([], hook.get("events") or 0)
    lagging = GaugeMetricFamily("ccsa_slurm_accounting_lagging_jobs",
                                "Jobs slurmctld shows ended that sacct did not show ended at the last poll")
    lagging.add_metric([], status["slurm"].get("accounting_lagging_jobs") or 0)
    result = [polls, errors, seen, events, lagging]
    if status["slurm"].get("last_poll_at"):
        last = GaugeMetricFamily("ccsa_slurm_last_poll_timestamp_seconds", "When the last poll succeeded (unix s)",
                                 unit="seconds")
        last.add_metric([], status["slurm"]["last_poll_at"])
        result.append(last)
    return result


def _delivery(status: dict) -> list:
    backend = status["backend"]
    sinks = _sinks(status)
    deliveries = CounterMetricFamily("ccsa_deliveries", "Delivery attempts by sink and outcome",
                                     labels=["sink", "outcome"])
    reachable = GaugeMetricFamily("ccsa_sink_reachable", "1 when the sink's last contact worked",
                                  labels=["sink"])
    success = GaugeMetricFamily("ccsa_sink_last_success_timestamp_seconds", "The sink's last delivery (unix s)",
                                labels=["sink"], unit="seconds")
    end_to_delivered = HistogramMetricFamily(
        "ccsa_job_end_to_delivered_seconds", "From a job's end in Slurm to its stop delivered", labels=["sink"],
        unit="seconds")
    for sink in sinks:
        facts = _facts(status, SINK_ACTORS[sink])
        for outcome, key in DELIVERY_OUTCOMES[sink]:
            deliveries.add_metric([sink, outcome], facts.get(key) or 0)
        state = backend[sink].get("backend_ok" if sink == "rest" else "connected")
        if state is not None:
            reachable.add_metric([sink], 1 if state else 0)
        if backend[sink].get("last_success_at"):
            success.add_metric([sink], backend[sink]["last_success_at"])
        _add_histogram(end_to_delivered, [sink], facts, mc.END_TO_DELIVERED_S)
    result = [deliveries, reachable, success, end_to_delivered]
    if "rest" in sinks:
        auth = GaugeMetricFamily("ccsa_cc_backend_auth_failing", "1 while cc-backend refuses the JWT")
        auth.add_metric([], 1 if backend["rest"].get("auth_failing") else 0)
        request = HistogramMetricFamily("ccsa_cc_backend_request_duration_seconds",
                                        "One start_job/stop_job request to cc-backend, answered or not",
                                        unit="seconds")
        _add_histogram(request, [], _facts(status, "rest_submitter"), mc.CC_REQUEST_S)
        result += [auth, request]
    return result


def _store(status: dict) -> list:
    delivery = status["delivery"]
    rows = GaugeMetricFamily("ccsa_outbox_rows", "Outbox rows by sink and state", labels=["sink", "state"])
    oldest = GaugeMetricFamily("ccsa_outbox_oldest_pending_age_seconds",
                               "Age of the sink's oldest row not yet delivered (0 when none)", labels=["sink"],
                               unit="seconds")
    for sink in sorted(set(_sinks(status)) | set(delivery["sinks"])):  # an enabled sink shows 0, not nothing
        counts = delivery["sinks"].get(sink, {})
        for state in OUTBOX_STATES:
            rows.add_metric([sink, state], counts.get(state) or 0)
        oldest.add_metric([sink], counts.get("oldest_pending_age_s") or 0)
    quarantined = GaugeMetricFamily("ccsa_quarantined_jobs", "Jobs held in quarantine (ccctl quarantine list)")
    quarantined.add_metric([], delivery["quarantined"])
    spool = GaugeMetricFamily("ccsa_hook_spool_bytes", "Size of the hook client's spool file", unit="bytes")
    spool.add_metric([], status["hook_spool_bytes"])
    return [rows, oldest, quarantined, spool]


def _sinks(status: dict) -> list[str]:
    """The sinks this config delivers to: mode is "REST", "NATS" or "REST+NATS"."""
    return [sink for sink in SINK_ACTORS if sink.upper() in status["backend"]["mode"].split("+")]


def _facts(status: dict, actor: str) -> dict:
    return next((a.get("facts") or {} for a in status["actors"] if a["name"] == actor), {})


def _add_histogram(family: HistogramMetricFamily, labels: list[str], facts: dict, key: str) -> None:
    bounds = mc.BOUNDS_S[key]
    cumulative, total = mc.parse_histogram(facts.get(key) or "", bounds)
    buckets = [(floatToGoString(bound), n) for bound, n in zip(bounds, cumulative)]
    family.add_metric(labels, buckets + [("+Inf", cumulative[-1])], total)


def run(rt: ActorRuntime) -> int:
    listen = rt.config.metrics_listen
    host, port = parse_metrics_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    rt.facts.update({"listen": listen, "scrapes": 0, "status_failures": 0})
    registry.register(StatusCollector(lambda: fetch_status(rt.config.ctl_sock_path), rt.facts, rt.log))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        rt.log.error("cannot listen on %s (metricsListen): %s; retrying after a restart", listen, e)
        return EXIT_CANNOT_LISTEN
    rt.log.info("serving metrics on http://%s/metrics", listen)
    while rt.keep_running():
        time.sleep(POLL_TIMEOUT_MS / 1000)
    server.shutdown()
    server.server_close()
    return 0
