"""Whatever happens to a real record, the translator answers with a body, a skip or a quarantine.

Hypothesis takes real sacct and squeue/scontrol records of the three releases and damages them:
nulls, missing keys, wrong types, huge numbers, odd unicode, invalid UTF-8. translate_record and
translate_documents must never raise, must give exactly one kind of answer, and every body they
give must be one cc-backend accepts.
"""

from __future__ import annotations

import copy
import json
import os

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.cc_bodies import JOB_STATES, SHARED_VALUES
from actors.topology import parse_clusters
from actors.translate import TranslateContext, translate_documents, translate_record
from tests.golden import RELEASES, SANDBOX_CLUSTERS, fixture_bytes

INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
ENCODER = msgspec.json.Encoder()
CTX = TranslateContext(parse_clusters(json.dumps(SANDBOX_CLUSTERS)))


def _pairs():
    """(sacct record, live record or None) for every started or running job of every release."""
    pairs = []
    for release in RELEASES:
        live_files = ["squeue-json-all-after-run.json", "squeue-json-gpu-running.json"] if release == "22.05" else [
            "scontrol-json-multinode-finished.json", "scontrol-json-completed-finished.json",
            "squeue-json-gpu-running.json", "scontrol-json-array-finished.json"]
        live = {}
        for name in live_files:
            for job in json.loads(fixture_bytes(release, name))["jobs"]:
                live.setdefault(job["job_id"], job)
        for name in ("sacct-json-all-since-start.json", "sacct-json-gpu-running.json",
                     "sacct-json-pending_cancelled.json", "sacct-json-array-running.json"):
            for job in json.loads(fixture_bytes(release, name))["jobs"]:
                pairs.append((job, live.get(job["job_id"])))
    return pairs


PAIRS = _pairs()

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.just(""), st.just([]), st.just({}), st.just("None assigned"),
    st.integers(min_value=-(2**64), max_value=2**64), st.sampled_from([2**31, 2**63, 4294967294, -2, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["ünïcødé ✓ 日本語", "\u202e\u0000\x7f", "n[1-3", "n[0-99999999]", "RUNNING", ["COMPLETED"],
                     {"set": True, "infinite": False, "number": 7}, {"set": False, "infinite": True, "number": 0},
                     {"set": "yes"}, ["ALLOCATED"], "gpu:x:1(IDX:0-9999)", "00000000:3B:00.0"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:4]):
            yield from _paths(child, prefix + (index,))


def _mutate(record, path, action, value):
    if not path:
        return value if action != "delete" else {}
    parent = record
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    else:
        parent[last] = value
    return record


@st.composite
def damaged_record(draw, which: str):
    sacct, live = draw(st.sampled_from(PAIRS))
    sacct, live = json.loads(json.dumps(sacct)), json.loads(json.dumps(live))
    target = sacct if which == "sacct" or live is None else live
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = list(_paths(target))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "delete"]))
        result = _mutate(target, path, action, copy.deepcopy(draw(ODD_VALUES)))  # never share a value
        if not path:
            target = result
            if which == "sacct" or live is None:
                sacct = result
            else:
                live = result
    return sacct, live


def _encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def assert_one_acceptable_answer(result):
    kinds = [result.start is not None, bool(result.skip_reason), result.quarantine is not None]
    assert kinds.count(True) == 1, result
    assert result.stop is None or result.start is not None
    if result.quarantine is not None:
        path, error = result.quarantine
        assert path.startswith("$") and error
    if result.start is not None:
        body = json.loads(ENCODER.encode(result.start))
        assert body["user"] and body["cluster"]
        assert 1 <= body["numNodes"] == len(body["resources"]) <= INT32_MAX
        assert 0 <= body["numHwthreads"] <= INT32_MAX and 0 <= body["numAcc"] <= INT32_MAX
        assert body["shared"] in SHARED_VALUES
        assert 0 < body["jobId"] <= INT64_MAX and 0 < body["startTime"] <= INT64_MAX
        assert 0 <= body.get("walltime", 0) <= INT64_MAX
        assert all(r["hostname"] for r in body["resources"])
        assert all(type(v) is str for v in body["metaData"].values())
    if result.stop is not None:
        stop = json.loads(ENCODER.encode(result.stop))
        assert stop["jobState"] in JOB_STATES
        assert stop["stopTime"] >= stop["startTime"] == body["startTime"]


#: TRANSLATE_FUZZ_EXAMPLES=20000 for a deep run; 400 keeps the suite at a few seconds.
EXAMPLES = int(os.environ.get("TRANSLATE_FUZZ_EXAMPLES", "400"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(damaged_record("sacct"))
def test_a_damaged_sacct_record_never_raises_and_gets_one_acceptable_answer(pair):
    sacct, live = pair

    result = translate_record(_encode(sacct), _encode(live) if live is not None else None, None, CTX)

    assert_one_acceptable_answer(result)


@FAST
@given(damaged_record("live"))
def test_a_damaged_live_record_never_raises_and_gets_one_acceptable_answer(pair):
    sacct, live = pair

    result = translate_record(_encode(sacct), _encode(live) if live is not None else None, None, CTX)

    assert_one_acceptable_answer(result)


@FAST
@given(st.lists(damaged_record("sacct"), min_size=1, max_size=4), st.sampled_from(PAIRS))
def test_a_document_with_damaged_jobs_never_raises_and_the_intact_job_still_flows(damaged, intact):
    jobs = [sacct for sacct, _ in damaged] + [intact[0]]
    lives = [live for _, live in damaged + [intact] if isinstance(live, dict)]
    sacct_doc = _encode({"meta": {}, "errors": [], "jobs": jobs})
    live_doc = _encode({"jobs": lives})
    expected = translate_record(_encode(intact[0]), None, None, CTX)

    results = list(translate_documents(sacct_doc, live_doc, CTX))

    assert len(results) == len(jobs)
    for _job_id, _cluster, result in results:
        assert_one_acceptable_answer(result)
    last = results[-1][2]
    assert (last.start is None, last.skip_reason) == (expected.start is None, expected.skip_reason)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PAIRS), st.lists(st.integers(min_value=0x80, max_value=0xFF), min_size=1, max_size=3))
def test_bytes_that_are_not_utf_8_in_a_name_cost_at_most_that_job(pair, high_bytes):
    """A latin-1 job name from the accounting DB, say (control bytes would be malformed JSON)."""
    sacct = _encode(pair[0])
    name_at = sacct.index(b'"name": "') + len(b'"name": "')
    junk = bytes(high_bytes)
    damaged = sacct[:name_at] + junk + sacct[name_at:]

    assert_one_acceptable_answer(translate_record(damaged, None, None, CTX))
    results = list(translate_documents(b'{"jobs": [' + damaged + b"]}", None, CTX))
    assert len(results) == 1
    assert_one_acceptable_answer(results[0][2])
