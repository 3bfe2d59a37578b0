"""A finished job that sacct still shows as its placeholder is translated from slurmctld's live
record, into exactly the bodies its full sacct record gives a second later.

Real captures of the 22.05 bench (tests/golden/placeholder-22.05/README.md): one `sacct -j`
document in which jobs 45-51 are placeholders (name "allocation", no partition, limit 0) though
they have ended, the `squeue --json` taken right after it, and the same `sacct -j` one snapshot
later with every record in full.
"""

from __future__ import annotations

import json
import os

import msgspec

from actors.slurm_records import JobKey, split_jobs
from actors.topology import parse_clusters
from actors.translate import TranslateContext, translate_documents, translate_record
from tests.golden import GOLDEN, SANDBOX_CLUSTERS

CAPTURES = os.path.join(GOLDEN, "placeholder-22.05")
PLACEHOLDER_JOBS = [45, 46, 47, 48, 49, 50, 51]  #: 50: `-c 2 -J named`; 51: `-N 2 -t 7 -J two`
ENCODER = msgspec.json.Encoder()


def capture(name: str) -> bytes:
    with open(os.path.join(CAPTURES, name), "rb") as f:
        return f.read()


def translated(sacct: bytes, live: bytes | None) -> dict[int, dict]:
    context = TranslateContext(parse_clusters(json.dumps(SANDBOX_CLUSTERS)))
    result = {}
    for job_id, _cluster, t in translate_documents(sacct, live, context):
        result[job_id] = {"start": json.loads(ENCODER.encode(t.start)) if t.start else None,
                          "stop": json.loads(ENCODER.encode(t.stop)) if t.stop else None,
                          "skip": t.skip_reason, "quarantine": t.quarantine}
    return result


def test_the_captured_placeholders_lack_name_partition_limit_and_the_full_node_list():
    placeholders = {j["job_id"]: j for j in json.loads(capture("sacct-json-placeholders.json"))["jobs"]}
    full = {j["job_id"]: j for j in json.loads(capture("sacct-json-full.json"))["jobs"]}

    assert [(placeholders[i]["name"], placeholders[i]["partition"], placeholders[i]["time"]["limit"])
            for i in PLACEHOLDER_JOBS] == [("allocation", "", 0)] * 7
    assert (full[51]["name"], full[51]["partition"], full[51]["time"]["limit"], full[51]["nodes"]) == \
        ("two", "debug", 7, "n[2-3]")
    assert placeholders[51]["nodes"] == "n2"


def test_placeholders_with_their_live_records_give_exactly_the_bodies_of_the_full_records():
    live = capture("squeue-json-live.json")

    from_placeholders = translated(capture("sacct-json-placeholders.json"), live)
    from_full = translated(capture("sacct-json-full.json"), live)

    assert from_placeholders == from_full
    assert all(from_placeholders[i]["start"] is not None and from_placeholders[i]["stop"] is not None
               for i in PLACEHOLDER_JOBS)


def test_a_two_node_placeholder_takes_its_name_partition_walltime_and_node_list_from_the_live_record():
    job = translated(capture("sacct-json-placeholders.json"), capture("squeue-json-live.json"))[51]

    start = job["start"]
    assert (start["partition"], start["metaData"]["jobName"], start["walltime"], start["numNodes"]) == \
        ("debug", "two", 420, 2)
    assert [r["hostname"] for r in start["resources"]] == ["n2", "n3"]
    assert "QOS=normal" in start["metaData"]["slurmInfo"]
    assert "Partition=debug TimeLimit=7 NodeList=n[2-3] NumNodes=2 NumCPUs=2" in start["metaData"]["slurmInfo"]
    assert "WorkDir=/tmp/cap" in start["metaData"]["slurmInfo"]
    assert job["stop"] == {"jobId": 51, "cluster": "testcluster", "startTime": start["startTime"],
                           "jobState": "completed", "stopTime": start["startTime"] + 1}


def test_a_placeholder_without_a_live_record_is_still_skipped():
    jobs = translated(capture("sacct-json-placeholders.json"), None)

    assert {jobs[i]["skip"] for i in PLACEHOLDER_JOBS} == {"placeholder record (sacct's first seconds after a start)"}
    assert all(jobs[i]["start"] is None for i in PLACEHOLDER_JOBS)


def test_a_placeholder_whose_live_record_is_another_job_is_skipped():
    sacct = {j["job_id"]: j for j in json.loads(capture("sacct-json-placeholders.json"))["jobs"]}
    live = {j["job_id"]: j for j in json.loads(capture("squeue-json-live.json"))["jobs"]}

    result = translate_record(json.dumps(sacct[50]).encode(), json.dumps(live[51]).encode(), None, TranslateContext())

    assert result.start is None
    assert result.skip_reason == "placeholder record (sacct's first seconds after a start)"
    assert result.warning == "live record ignored: it is job 51, not 50"


# --- the querier's side: such a job no longer waits for slurmdbd's full record ---------------------

def keys(document: bytes, what: str) -> dict[int, JobKey]:
    return {key.job_id: key for key, _raw in split_jobs(document, what)}


def test_an_ended_placeholder_is_ready_for_its_epilog_when_slurmctld_still_holds_the_job():
    sacct = keys(capture("sacct-json-placeholders.json"), "sacct -j")
    live = keys(capture("squeue-json-live.json"), "live jobs")

    assert [sacct[i].ready_for("epilog_slurmctld", live[i]) for i in PLACEHOLDER_JOBS] == [True] * 7


def test_an_ended_placeholder_waits_for_the_full_record_when_slurmctld_forgot_the_job():
    sacct = keys(capture("sacct-json-placeholders.json"), "sacct -j")

    assert [sacct[i].ready_for("epilog_slurmctld", None) for i in PLACEHOLDER_JOBS] == [False] * 7
    assert [sacct[i].ready_for("epilog_slurmctld") for i in PLACEHOLDER_JOBS] == [False] * 7
    assert all(sacct[i].may_be_completed_by_live for i in PLACEHOLDER_JOBS)


def test_a_placeholder_is_never_ready_for_a_prolog_event_its_start_waits_for_the_full_record():
    sacct = keys(capture("sacct-json-placeholders.json"), "sacct -j")
    live = keys(capture("squeue-json-live.json"), "live jobs")

    assert [sacct[i].ready_for("prolog_slurmctld", live[i]) for i in PLACEHOLDER_JOBS] == [False] * 7


def test_full_records_are_ready_as_before_with_or_without_a_live_record():
    sacct = keys(capture("sacct-json-full.json"), "sacct -j")
    live = keys(capture("squeue-json-live.json"), "live jobs")

    assert all(sacct[i].ready_for("epilog_slurmctld") and sacct[i].ready_for("epilog_slurmctld", live[i])
               for i in range(38, 52))
    assert not any(sacct[i].may_be_completed_by_live for i in range(38, 52))
