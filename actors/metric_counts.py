"""Cumulative counts and latency histograms that actors keep in their heartbeat facts.

The facts travel to the supervisor with every heartbeat (`ccctl status --json` shows them); the
metrics_exporter turns them into OpenMetrics counters and histograms at scrape time. Facts hold
only strings and numbers, so a histogram is one self-describing string of cumulative buckets:
"le0.1=3 le1=5 le+Inf=6 sum=2.5". Nothing here imports prometheus_client: the delivering actors
use this module whether or not metricsListen is set. A restarted actor starts again from zero.
"""

from __future__ import annotations

import contextlib
import time

import msgspec

#: Fact keys, shared by the actors that count and the exporter that reads.
JOBS_SEEN = "jobs_seen"  #: + ".poll" / ".hook": job records with new progress handed to the translator
SLURM_ERRORS = "slurm_errors"  #: Slurm calls (poll or hook query) that failed
OUTCOMES = "outcomes"  #: + ".<outcome>": what became of a delivery attempt
CC_REQUEST_S = "cc_request_s"  #: histogram: one POST start_job/stop_job to cc-backend, answer or not
END_TO_DELIVERED_S = "end_to_delivered_s"  #: histogram: a job's Slurm end time -> its stop delivered

#: Upper bounds (s) of each histogram's buckets; +Inf is implied.
BOUNDS_S = {
    CC_REQUEST_S: (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    END_TO_DELIVERED_S: (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
}


def count(facts: dict, key: str, n: int = 1) -> None:
    facts[key] = facts.get(key, 0) + n


def outcome(facts: dict, name: str, n: int = 1) -> None:
    """Count n delivery attempts that ended as `name` (retry, failed, unreachable, ...)."""
    count(facts, f"{OUTCOMES}.{name}", n)


def observe(facts: dict, key: str, value_s: float) -> None:
    """Add one observation to the histogram kept in facts[key]."""
    bounds = BOUNDS_S[key]
    cumulative, total = parse_histogram(facts.get(key, ""), bounds)
    for i, bound in enumerate(bounds):
        if value_s <= bound:
            cumulative[i] += 1
    cumulative[-1] += 1
    facts[key] = _format(bounds, cumulative, total + value_s)


@contextlib.contextmanager
def timed(facts: dict, key: str):
    """Observe how long the block took, whether it returned or raised."""
    started = time.monotonic()
    try:
        yield
    finally:
        observe(facts, key, time.monotonic() - started)


class _StopTime(msgspec.Struct):
    stopTime: int = 0


_stop_decoder = msgspec.json.Decoder(_StopTime)


def observe_job_ends(facts: dict, rows, now: float) -> None:
    """For each delivered stop_job outbox row: the time from the job's end in Slurm to now."""
    for row in rows:
        if row.event != "stop_job":
            continue
        try:
            stop_time = _stop_decoder.decode(row.body).stopTime
        except msgspec.DecodeError:
            continue
        if stop_time > 0:
            observe(facts, END_TO_DELIVERED_S, max(0.0, now - stop_time))


def parse_histogram(text: str, bounds: tuple[float, ...]) -> tuple[list[int], float]:
    """(cumulative counts per bound and +Inf, sum) of a histogram fact; zeros for "" or garbage."""
    cumulative, total = [0] * (len(bounds) + 1), 0.0
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    try:
        for i, bound in enumerate(bounds):
            cumulative[i] = int(fields.get(f"le{bound:g}", 0))
        cumulative[-1] = int(fields.get("le+Inf", 0))
        total = float(fields.get("sum", 0.0))
    except ValueError:
        return [0] * (len(bounds) + 1), 0.0
    return cumulative, total


def _format(bounds: tuple[float, ...], cumulative: list[int], total: float) -> str:
    buckets = " ".join(f"le{bound:g}={n}" for bound, n in zip(bounds, cumulative))
    return f"{buckets} le+Inf={cumulative[-1]} sum={round(total, 6)}"
