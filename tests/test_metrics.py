"""The OpenMetrics endpoint: opt-in with metricsListen, built at scrape time from the supervisor's
status, secret-free, and absent (not even imported) when the key is empty."""

import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from actors import VERSION
from actors import metric_counts as mc
from actors.config import ConfigError, parse_config, parse_metrics_listen
from actors.outbox import Outbox, OutboxEvent, Row
from tests.support import ACTOR_NAMES, REPO, adapter_command, python_env, wait_for

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
JWT, NATS_PASSWORD = "SECRET-JWT-4711-metrics", "SECRET-NATS-0815-metrics"


# --- metricsListen --------------------------------------------------------------------------------

def test_metricsListen_is_host_colon_port_or_a_bracketed_ipv6_address():
    assert parse_metrics_listen("127.0.0.1:9105") == ("127.0.0.1", 9105)
    assert parse_metrics_listen("localhost:9105") == ("localhost", 9105)
    assert parse_metrics_listen("[::1]:9105") == ("::1", 9105)


def test_metricsListen_is_empty_by_default_which_means_no_endpoint():
    assert parse_config("{}").metrics_listen == ""


@pytest.mark.parametrize("value", ["9105", ":9105", "localhost", "127.0.0.1:0", "127.0.0.1:70000",
                                   "http://127.0.0.1:9105", "::1:9105"])
def test_a_bad_metricsListen_is_one_line_naming_the_key_and_the_fix(value):
    with pytest.raises(ConfigError) as e:
        parse_config(json.dumps({"metricsListen": value}), source="cfg.json")
    assert str(e.value) == (f"cfg.json: key metricsListen is {value!r}: use HOST:PORT (e.g. 127.0.0.1:9105 or "
                            '[::1]:9105), or "" to turn the metrics endpoint off')


def test_the_daemon_refuses_a_bad_metricsListen_with_one_line_and_starts_nothing(tmp_path):
    result = start_refused(tmp_path, metricsListen="9105")
    assert "key metricsListen is '9105': use HOST:PORT" in result


def test_the_daemon_refuses_a_metricsListen_port_that_is_taken_before_it_forks(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start_refused(tmp_path, metricsListen=f"127.0.0.1:{port}")
    assert (f"key metricsListen: cannot listen on 127.0.0.1:{port} (Address already in use): "
            "use a free port and an address of this host") in result


def start_refused(tmp_path, **config) -> str:
    from tests.support import write_config

    done = subprocess.run(adapter_command("-daemon", "-config", write_config(tmp_path, **config)),
                          capture_output=True, text=True, env=python_env(), cwd=REPO, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("FATAL supervisor[")
    assert os.listdir(tmp_path / "run") == []
    return lines[0]


# --- metric_counts: what the actors keep in their facts -----------------------------------------------

def test_a_histogram_fact_holds_cumulative_buckets_and_the_sum():
    facts = {}
    for seconds in (0.03, 0.2, 45.0):
        mc.observe(facts, mc.CC_REQUEST_S, seconds)
    assert facts[mc.CC_REQUEST_S] == ("le0.005=0 le0.01=0 le0.025=0 le0.05=1 le0.1=1 le0.25=2 le0.5=2 le1=2 "
                                      "le2.5=2 le5=2 le10=2 le30=2 le+Inf=3 sum=45.23")


def test_a_timed_block_is_observed_even_when_it_raises():
    facts = {}
    with pytest.raises(OSError), mc.timed(facts, mc.CC_REQUEST_S):
        raise OSError("refused")
    assert mc.parse_histogram(facts[mc.CC_REQUEST_S], mc.BOUNDS_S[mc.CC_REQUEST_S])[0][-1] == 1


def test_end_to_delivered_is_observed_for_stops_only_from_their_stop_time():
    def row(event, body):
        return Row(1, "rest", "c", 7, 1000, event, body, "delivered", 1, 0.0, None, "", 0.0, 0.0, None)

    facts = {}
    mc.observe_job_ends(facts, [row("start_job", b'{"startTime":1000}'), row("stop_job", b'{"stopTime":1100}'),
                                row("stop_job", b"not json")], now=1103.0)
    assert mc.parse_histogram(facts[mc.END_TO_DELIVERED_S], mc.BOUNDS_S[mc.END_TO_DELIVERED_S]) == (
        [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 3.0)


def test_a_histogram_fact_that_cannot_be_read_counts_as_empty():
    assert mc.parse_histogram("le0.5=x sum=1", (0.5, 1.0)) == ([0, 0, 0], 0.0)


# --- the collector, from a canned status answer ---------------------------------------------------------

def actor(name, state="running", restarts=0, heartbeat_age_s=0.5, **facts):
    return {"name": name, "pid": 100, "state": state, "restarts": restarts, "heartbeat_age_s": heartbeat_age_s,
            "last_exit": "", "facts": facts}


STATUS = {
    "supervisor": {"pid": 99, "uptime_s": 120.5, "version": VERSION, "ready": True, "summary": "4/5 actors running"},
    "actors": [
        actor("hook_listener", events=3),
        actor("translator", state="flapping", restarts=5, heartbeat_age_s=None),
        actor("rest_submitter", delivered=4, backend_ok=True, **{
            "outcomes.retry": 2, "outcomes.unreachable": 1,
            mc.CC_REQUEST_S: "le0.005=0 le0.01=0 le0.025=1 le0.05=3 le0.1=6 le0.25=6 le0.5=6 le1=6 le2.5=6 le5=6 "
                             "le10=6 le30=6 le+Inf=7 sum=30.5",
            mc.END_TO_DELIVERED_S: "le0.5=0 le1=0 le2=1 le5=2 le10=2 le30=2 le60=2 le120=2 le300=2 le600=2 "
                                   "le1800=2 le3600=2 le+Inf=2 sum=4.5"}),
        actor("nats_publisher", mode="off", connected=None),
        actor("slurm_querier", polls=10, slurm_errors=1, **{"jobs_seen.poll": 40, "jobs_seen.hook": 2}),
    ],
    "slurm": {"release": "22.05.8", "last_poll_at": 1800000000.0, "last_error": "", "watermark": 1.0,
              "pending_nudges": 0, "accounting_lagging_jobs": 2},
    "backend": {"url": "http://cc.example", "profile": "v1.5", "mode": "REST",
                "rest": {"backend_ok": True, "last_success_at": 1800000010.0, "auth_failing": False,
                         "last_error": ""},
                "nats": {"connected": None, "last_success_at": None, "last_error": ""}},
    "delivery": {"sinks": {"rest": {"pending": 3, "published": 0, "delivered": 4, "failed": 1,
                                    "oldest_pending_age_s": 42.5}},
                 "quarantined": 2},
    "hook_spool_bytes": 512,
}


def exposition(status) -> list[str]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest

    from actors.metrics_exporter import StatusCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status))
    return generate_latest(registry).decode().splitlines()


def samples(status, *prefixes: str) -> list[str]:
    """The sample lines of these families, in the order of the scrape."""
    return [line for line in exposition(status) if line.startswith(prefixes)]


def test_each_actor_is_up_or_not_with_its_restarts_and_heartbeat_age():
    assert samples(STATUS, "ccsa_actor_") == [
        'ccsa_actor_up{actor="hook_listener"} 1.0',
        'ccsa_actor_up{actor="translator"} 0.0',
        'ccsa_actor_up{actor="rest_submitter"} 1.0',
        'ccsa_actor_up{actor="nats_publisher"} 1.0',
        'ccsa_actor_up{actor="slurm_querier"} 1.0',
        'ccsa_actor_restarts_total{actor="hook_listener"} 0.0',
        'ccsa_actor_restarts_total{actor="translator"} 5.0',
        'ccsa_actor_restarts_total{actor="rest_submitter"} 0.0',
        'ccsa_actor_restarts_total{actor="nats_publisher"} 0.0',
        'ccsa_actor_restarts_total{actor="slurm_querier"} 0.0',
        'ccsa_actor_heartbeat_age_seconds{actor="hook_listener"} 0.5',
        'ccsa_actor_heartbeat_age_seconds{actor="rest_submitter"} 0.5',
        'ccsa_actor_heartbeat_age_seconds{actor="nats_publisher"} 0.5',
        'ccsa_actor_heartbeat_age_seconds{actor="slurm_querier"} 0.5',
    ]


def test_slurm_polls_errors_jobs_seen_and_hook_events_are_counters_the_accounting_lag_and_last_poll_gauges():
    assert samples(STATUS, "ccsa_slurm_", "ccsa_jobs_", "ccsa_hook_events") == [
        "ccsa_slurm_polls_total 10.0",
        "ccsa_slurm_errors_total 1.0",
        'ccsa_jobs_seen_total{source="poll"} 40.0',
        'ccsa_jobs_seen_total{source="hook"} 2.0',
        "ccsa_hook_events_total 3.0",
        "ccsa_slurm_accounting_lagging_jobs 2.0",
        "ccsa_slurm_last_poll_timestamp_seconds 1.8e+09",
    ]


def test_deliveries_count_every_outcome_of_each_enabled_sink_only():
    assert samples(STATUS, "ccsa_deliveries_total") == [
        'ccsa_deliveries_total{outcome="delivered",sink="rest"} 4.0',
        'ccsa_deliveries_total{outcome="retry",sink="rest"} 2.0',
        'ccsa_deliveries_total{outcome="wait_for_start",sink="rest"} 0.0',
        'ccsa_deliveries_total{outcome="auth",sink="rest"} 0.0',
        'ccsa_deliveries_total{outcome="failed",sink="rest"} 0.0',
        'ccsa_deliveries_total{outcome="unreachable",sink="rest"} 1.0',
    ]
    assert samples(STATUS, "ccsa_sink_") == ['ccsa_sink_reachable{sink="rest"} 1.0',
                                             'ccsa_sink_last_success_timestamp_seconds{sink="rest"} 1.80000001e+09']


def test_latencies_are_histograms_from_the_cumulative_buckets_in_the_facts():
    assert samples(STATUS, "ccsa_cc_backend_request_duration_seconds") == [
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.005"} 0.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.01"} 0.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.025"} 1.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.05"} 3.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.1"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.25"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="0.5"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="1.0"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="2.5"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="5.0"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="10.0"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="30.0"} 6.0',
        'ccsa_cc_backend_request_duration_seconds_bucket{le="+Inf"} 7.0',
        "ccsa_cc_backend_request_duration_seconds_count 7.0",
        "ccsa_cc_backend_request_duration_seconds_sum 30.5",
    ]
    end_to_delivered = samples(STATUS, "ccsa_job_end_to_delivered_seconds")
    assert end_to_delivered[2:4] == ['ccsa_job_end_to_delivered_seconds_bucket{le="2.0",sink="rest"} 1.0',
                                     'ccsa_job_end_to_delivered_seconds_bucket{le="5.0",sink="rest"} 2.0']
    assert end_to_delivered[-2:] == ['ccsa_job_end_to_delivered_seconds_count{sink="rest"} 2.0',
                                     'ccsa_job_end_to_delivered_seconds_sum{sink="rest"} 4.5']


def test_outbox_depth_oldest_pending_age_quarantine_and_spool_are_gauges():
    assert samples(STATUS, "ccsa_outbox_", "ccsa_quarantined", "ccsa_hook_spool") == [
        'ccsa_outbox_rows{sink="rest",state="pending"} 3.0',
        'ccsa_outbox_rows{sink="rest",state="published"} 0.0',
        'ccsa_outbox_rows{sink="rest",state="delivered"} 4.0',
        'ccsa_outbox_rows{sink="rest",state="failed"} 1.0',
        'ccsa_outbox_oldest_pending_age_seconds{sink="rest"} 42.5',
        "ccsa_quarantined_jobs 2.0",
        "ccsa_hook_spool_bytes 512.0",
    ]


def test_in_nats_only_mode_only_the_nats_sink_shows_and_its_empty_outbox_counts_zero():
    status = {**STATUS, "backend": {**STATUS["backend"], "mode": "NATS"}, "delivery": {"sinks": {}, "quarantined": 0}}
    assert samples(status, "ccsa_deliveries_total", "ccsa_outbox_") == [
        'ccsa_deliveries_total{outcome="published",sink="nats"} 0.0',
        'ccsa_deliveries_total{outcome="delivered",sink="nats"} 0.0',
        'ccsa_deliveries_total{outcome="retry",sink="nats"} 0.0',
        'ccsa_deliveries_total{outcome="failed",sink="nats"} 0.0',
        'ccsa_deliveries_total{outcome="unreachable",sink="nats"} 0.0',
        'ccsa_outbox_rows{sink="nats",state="pending"} 0.0',
        'ccsa_outbox_rows{sink="nats",state="published"} 0.0',
        'ccsa_outbox_rows{sink="nats",state="delivered"} 0.0',
        'ccsa_outbox_rows{sink="nats",state="failed"} 0.0',
        'ccsa_outbox_oldest_pending_age_seconds{sink="nats"} 0.0',
    ]
    assert samples(status, "ccsa_cc_backend") == []


def test_build_info_and_status_up_lead_every_scrape():
    assert exposition(STATUS)[:7] == [
        "# HELP ccsa_build cc-slurm-adapter version and Python release",
        "# TYPE ccsa_build info",
        f'ccsa_build_info{{python="{platform.python_version()}",version="{VERSION}"}} 1.0',
        "# HELP ccsa_status_up 1 when the supervisor answered this scrape's status request",
        "# TYPE ccsa_status_up gauge",
        "ccsa_status_up 1.0",
        "# HELP ccsa_supervisor_uptime_seconds Seconds since the supervisor started",
    ]


def test_when_the_supervisor_does_not_answer_only_build_info_and_status_up_0_are_served():
    lines = [line for line in exposition(None) if not line.startswith("#")]
    assert lines == [f'ccsa_build_info{{python="{platform.python_version()}",version="{VERSION}"}} 1.0',
                     "ccsa_status_up 0.0"]


def test_a_status_the_collector_cannot_read_is_served_as_status_up_0_with_one_log_line():
    from actors.metrics_exporter import StatusCollector

    lines, facts = [], {}

    class Log:
        def error(self, message, *args):
            lines.append(message % args)

    collected = list(StatusCollector(lambda: {"supervisor": {}}, facts, Log()).collect())
    assert [(m.name, [s.value for s in m.samples]) for m in collected] == [("ccsa_build", [1.0]),
                                                                          ("ccsa_status_up", [0])]
    assert lines == ["cannot read the supervisor's status (KeyError: 'uptime_s'); serving ccsa_status_up 0"]
    assert facts == {"scrapes": 1, "status_failures": 1}


# --- nothing of it when off -------------------------------------------------------------------------------

def test_no_process_of_a_daemon_without_metricsListen_imports_prometheus_client():
    # The supervisor's imports plus every actor module it may fork, in one interpreter: a superset of
    # what any single process of the tree loads.
    code = ("import importlib, sys, supervisor\n"
            "for m in list(getattr(supervisor, 'SHARED_MODULES', ())) + list(supervisor.ACTORS.values()):\n"
            "    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('prometheus')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env(), cwd=REPO)
    assert (done.returncode, done.stdout.strip()) == (0, "[]")


def test_without_metricsListen_no_exporter_is_forked_and_status_lists_the_five_actors(daemon):
    import psutil

    d = daemon().start()
    actors = d.wait_all_running()
    assert set(actors) == ACTOR_NAMES
    assert {p.pid for p in psutil.Process(d.process.pid).children()} == {a["pid"] for a in actors.values()}
    assert d.status()[0] == 0


# --- a real daemon, scraped ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, accept: str = "application/openmetrics-text") -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept}, timeout=5)
    except requests.ConnectionError:
        return None


def values(response: requests.Response) -> dict:
    """{(sample name, ((label, value), ...)): value} of an OpenMetrics answer."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def start_with_metrics(daemon, **config):
    port = free_port()
    d = daemon(metricsListen=f"127.0.0.1:{port}", **config).start()
    names = ACTOR_NAMES | {"metrics_exporter"}
    wait_for(lambda: (a := d.actors()) and set(a) == names and all(x["state"] == "running" for x in a.values()),
             20, 0.1, "six actors running")
    wait_for(lambda: scrape(port), 10, 0.1, "the metrics endpoint answering")
    return d, port


def test_a_scrape_shows_every_actor_up_and_counts_a_restart_after_kill_9_without_secrets(daemon):
    d, port = start_with_metrics(daemon, ccRestJwt=JWT, natsPassword=NATS_PASSWORD)
    first = scrape(port)
    assert first.status_code == 200 and first.headers["Content-Type"] == OPENMETRICS
    up = values(first)
    actors = sorted(ACTOR_NAMES | {"metrics_exporter"})
    assert {a: up[("ccsa_actor_up", (("actor", a),))] for a in actors} == dict.fromkeys(actors, 1.0)
    assert {a: up[("ccsa_actor_restarts_total", (("actor", a),))] for a in actors} == dict.fromkeys(actors, 0.0)
    assert up[("ccsa_status_up", ())] == 1.0
    assert up[("ccsa_build_info", (("python", platform.python_version()), ("version", VERSION)))] == 1.0

    for name in ("translator", "metrics_exporter"):  # the exporter keeps no count of its own to lose
        os.kill(d.actors()[name]["pid"], signal.SIGKILL)
        wait_for(lambda: (a := d.actors()) and a[name]["restarts"] == 1 and a[name]["state"] == "running",
                 10, 0.1, f"{name} restarted")
    second = wait_for(lambda: scrape(port), 10, 0.1, "the restarted endpoint answering")
    after = values(second)
    assert after[("ccsa_actor_restarts_total", (("actor", "translator"),))] == 1.0
    assert after[("ccsa_actor_restarts_total", (("actor", "metrics_exporter"),))] == 1.0
    assert after[("ccsa_actor_up", (("actor", "translator"),))] == 1.0
    assert d.status()[0] == 0

    plain = scrape(port, accept="text/plain")
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for text in (first.text, second.text, plain.text):
        assert JWT not in text and NATS_PASSWORD not in text


def test_sighup_restarts_the_exporter_on_the_same_address_even_when_metricsListen_changed(daemon, tmp_path):
    d, port = start_with_metrics(daemon)
    before = d.actors()["metrics_exporter"]["pid"]
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "metricsListen": f"127.0.0.1:{free_port()}"}))
    d.process.send_signal(signal.SIGHUP)
    wait_for(lambda: (a := d.actors()) and a["metrics_exporter"]["pid"] not in (None, before)
             and a["metrics_exporter"]["state"] == "running", 15, 0.1, "a new exporter")
    assert "SIGHUP: metrics_listen changed; it takes effect only after a restart" in d.log_text()
    assert values(wait_for(lambda: scrape(port), 10, 0.1, "the old address answering"))[("ccsa_status_up", ())] == 1


@pytest.mark.ccbackend
def test_deliveries_to_the_real_cc_backend_are_counted_with_their_latencies(daemon, cc_backend, tmp_path):
    from tests.bench.ccbackend import CLUSTER, job_payload

    d, port = start_with_metrics(daemon, ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt)
    job_id, now = random.randrange(980_000, 990_000), int(time.time())
    start = job_payload(job_id, start_time=now - 2000)
    stop = {"jobId": job_id, "cluster": CLUSTER, "startTime": now - 2000, "stopTime": now - 1000,
            "jobState": "completed"}
    outbox = Outbox(str(tmp_path / "state" / "outbox.sqlite3"))
    outbox.enqueue([OutboxEvent(sink="rest", cluster=CLUSTER, job_id=job_id, start_time=now - 2000, event=event,
                                body=json.dumps(body).encode()) for event, body in (("start_job", start),
                                                                                    ("stop_job", stop))])
    outbox.close()

    def delivered():  # rest_submitter's facts reach the supervisor with its next heartbeat
        found = values(scrape(port))
        return found if found[("ccsa_deliveries_total", (("outcome", "delivered"), ("sink", "rest")))] == 2 else None

    found = wait_for(delivered, 60, 0.5, "both rows counted as delivered")
    assert found[("ccsa_outbox_rows", (("sink", "rest"), ("state", "delivered")))] == 2.0
    attempts = sum(v for (name, labels), v in found.items()
                   if name == "ccsa_deliveries_total" and ("sink", "rest") in labels)
    assert found[("ccsa_cc_backend_request_duration_seconds_count", ())] == attempts
    assert found[("ccsa_outbox_rows", (("sink", "rest"), ("state", "pending")))] == 0.0
    assert found[("ccsa_outbox_oldest_pending_age_seconds", (("sink", "rest"),))] == 0.0
    assert found[("ccsa_sink_reachable", (("sink", "rest"),))] == 1.0
    # the stop's job ended 1000 s before the run: its one observation lies between 600 and 1800 s
    bucket = "ccsa_job_end_to_delivered_seconds_bucket"
    assert found[(bucket, (("le", "600.0"), ("sink", "rest")))] == 0.0
    assert found[(bucket, (("le", "1800.0"), ("sink", "rest")))] == 1.0
    assert found[("ccsa_job_end_to_delivered_seconds_count", (("sink", "rest"),))] == 1.0
    assert cc_backend.jwt not in scrape(port).text
