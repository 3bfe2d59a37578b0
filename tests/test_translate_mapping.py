"""The mapping rules, one at a time, on real Slurm records (and small edits of them)."""

from __future__ import annotations

import copy
import json
import re

import msgspec
import pytest

from actors.cc_bodies import JOB_STATES, SHARED_VALUES
from actors.slurm_views import expand_hostlist
from actors.topology import parse_clusters
from actors.translate import TranslateContext, translate_documents, translate_record
from tests.golden import RELEASES, SANDBOX_CLUSTERS, case_ids, fixture_bytes, golden_names, load_golden

ENCODER = msgspec.json.Encoder()

#: cc-backend v1.5's accepted keys (contract §5.1 and §6.1).
START_KEYS = {"jobId", "cluster", "subCluster", "partition", "project", "user", "shared", "jobState",
              "resources", "numNodes", "numHwthreads", "numAcc", "walltime", "arrayJobId", "startTime",
              "smt", "monitoringStatus", "metaData", "tags", "footprint", "energy", "energyFootprint",
              "duration", "submitTime", "requestedMemory", "statistics", "concurrentJobs", "id"}
RESOURCE_KEYS = {"hostname", "hwthreads", "accelerators", "configuration"}
STOP_KEYS = {"jobId", "cluster", "startTime", "jobState", "stopTime"}
INT32_MAX = 2**31 - 1


def sacct_record(release: str, case: str, job_id: int | None = None) -> dict:
    jobs = json.loads(fixture_bytes(release, f"sacct-json-{case}.json"))["jobs"]
    job_id = case_ids(release)[case.split("-")[0]] if job_id is None else job_id
    return next(job for job in jobs if job["job_id"] == job_id)


def live_record(release: str, file: str, job_id: int) -> dict:
    return next(job for job in json.loads(fixture_bytes(release, file))["jobs"] if job["job_id"] == job_id)


def sandbox_topology():
    return parse_clusters(json.dumps(SANDBOX_CLUSTERS))


def translate(sacct: dict, live: dict | None = None, ctx: TranslateContext | None = None, script=None):
    return translate_record(json.dumps(sacct).encode(), json.dumps(live).encode() if live else None,
                            script, ctx or TranslateContext())


def start_of(result) -> dict:
    assert result.start is not None, (result.skip_reason, result.quarantine)
    return json.loads(ENCODER.encode(result.start))


def all_golden_bodies():
    for release in RELEASES:
        for name in golden_names(release):
            for job in load_golden(release, name)["jobs"]:
                yield f"{release}/{name}/{job['jobId']}", job


# ------------------------------------------------------------------------ what cc-backend accepts

def test_every_body_uses_only_keys_cc_backend_v1_5_accepts():
    for where, job in all_golden_bodies():
        if "start" in job:
            assert set(job["start"]) <= START_KEYS, where
            for resource in job["start"]["resources"]:
                assert set(resource) <= RESOURCE_KEYS, where
            assert all(type(v) is str for v in job["start"]["metaData"].values()), where
        if "stop" in job:
            assert set(job["stop"]) == STOP_KEYS, where


def test_every_start_passes_cc_backends_sanity_checks_and_every_stop_has_a_valid_state():
    starts = 0
    for where, job in all_golden_bodies():
        if "start" in job:
            starts += 1
            body = job["start"]
            assert body["user"] and body["cluster"], where
            assert 1 <= body["numNodes"] == len(body["resources"]), where
            assert 0 <= body["numHwthreads"] <= INT32_MAX and 0 <= body["numAcc"] <= INT32_MAX, where
            assert body["shared"] in SHARED_VALUES, where
            assert body["subCluster"] == "", where
        if "stop" in job:
            assert job["stop"]["jobState"] in JOB_STATES, where
            assert job["stop"]["stopTime"] >= job["stop"]["startTime"], where
    assert starts == 15 + 19 + 19  # 22.05 has no running record that is not a placeholder


# ---------------------------------------------------------------------------------------- states

@pytest.mark.parametrize("slurm,sent", [
    ("REQUEUED", "preempted"), ("REQUEUE_HOLD", "preempted"), ("SPECIAL_EXIT", "failed"),
    ("REVOKED", "cancelled"), ("RESIZING", "completed"), ("NODE_FAIL", "node_fail"),
    ("BOOT_FAIL", "boot_fail"), ("DEADLINE", "deadline"), ("OUT_OF_MEMORY", "out_of_memory"),
    ("PREEMPTED", "preempted"), ("SOMETHING_NEW", "failed"),
])
def test_a_final_slurm_state_maps_into_cc_backends_enum_and_slurms_word_stays_in_metadata(slurm, sent):
    for release in RELEASES:
        record = sacct_record(release, "completed")
        record["state"]["current"] = slurm if release == "22.05" else [slurm]

        result = translate(record)

        assert result.stop.job_state == sent
        assert start_of(result)["metaData"]["slurmState"] == slurm


def test_a_running_record_gives_a_start_without_a_stop():
    result = translate(sacct_record("24.11", "completed-running"))

    assert result.stop is None
    assert start_of(result)["metaData"]["slurmState"] == "RUNNING"
    assert "exitCode" not in start_of(result)["metaData"]


def test_a_requeued_run_is_stopped_by_its_own_start_time():
    record = sacct_record("26.05", "completed")
    record["time"]["start"] += 600
    record["time"]["end"] += 600

    result = translate(record)

    assert (result.stop.start_time, result.stop.stop_time) == (record["time"]["start"], record["time"]["end"])


def test_a_stop_time_before_the_start_time_is_raised_to_the_start_time():
    record = sacct_record("24.11", "failed")
    record["time"]["end"] = record["time"]["start"] - 5

    result = translate(record)

    assert result.stop.stop_time == record["time"]["start"]


def test_a_pending_record_with_a_start_time_is_skipped_as_pending():
    record = sacct_record("26.05", "completed")
    record["state"]["current"] = ["PENDING"]

    assert translate(record).skip_reason == "pending"


# ------------------------------------------------------------------------------------ exit codes

def test_on_22_05_the_exit_code_comes_from_squeues_raw_status_because_sacct_says_success():
    record = sacct_record("22.05", "failed")
    live = live_record("22.05", "squeue-json-all-after-run.json", 3)
    assert record["exit_code"] == {"status": "SUCCESS", "return_code": 0}
    live["exit_code"] = 2 << 8

    assert start_of(translate(record, live))["metaData"]["exitCode"] == "2:0"


def test_on_22_05_without_a_live_record_a_failed_job_reads_1_0_and_a_signal_in_sacct_is_kept():
    record = sacct_record("22.05", "failed")
    assert start_of(translate(record))["metaData"]["exitCode"] == "1:0"

    record["exit_code"] = {"status": "SIGNALED", "return_code": None, "signal": {"signal_id": 9, "name": "Killed"}}
    assert start_of(translate(record))["metaData"]["exitCode"] == "0:9"


def test_from_24_11_on_sacct_exit_codes_are_trusted_as_they_are():
    record = sacct_record("24.11", "failed")
    record["exit_code"] = {"status": ["SIGNALED"], "return_code": {"set": False, "infinite": False, "number": 0},
                           "signal": {"id": {"set": True, "infinite": False, "number": 9}, "name": "KILL"}}

    assert start_of(translate(record))["metaData"]["exitCode"] == "0:9"


# ----------------------------------------------------------------------------- nodes and threads

def test_ignore_hosts_drops_matching_hosts_and_the_job_keeps_the_others():
    ctx = TranslateContext(sandbox_topology(), ignore_hosts=re.compile("n2"))
    for release, live in (("22.05", live_record("22.05", "squeue-json-all-after-run.json", 9)), ("24.11", None)):
        body = start_of(translate(sacct_record(release, "multinode"), live, ctx))

        assert [r["hostname"] for r in body["resources"]] == ["n1", "n3"]
        assert body["numNodes"] == 2


def test_a_job_whose_hosts_are_all_ignored_is_skipped():
    ctx = TranslateContext(ignore_hosts=re.compile(r"^n\d$"))
    live = live_record("26.05", "scontrol-json-multinode-finished.json", 44)

    assert translate(sacct_record("26.05", "multinode"), live, ctx).skip_reason == "all hosts ignored (ignoreHosts)"
    assert translate(sacct_record("26.05", "multinode"), None, ctx).skip_reason == "all hosts ignored (ignoreHosts)"


def test_without_a_live_record_the_sacct_hostlist_gives_plain_resources():
    body = start_of(translate(sacct_record("24.11", "pending_resources")))

    assert body["resources"] == [{"hostname": "n1"}, {"hostname": "n2"}, {"hostname": "n3"}]
    assert body["numNodes"] == 3


def test_smt_siblings_of_each_allocated_core_are_sent_as_hardware_threads():
    clusters = copy.deepcopy(SANDBOX_CLUSTERS)
    clusters["clusters"][0]["subClusters"][0]["topology"].update(
        node=list(range(8)), socket=[list(range(8))], core=[[0, 4], [1, 5], [2, 6], [3, 7]])
    ctx = TranslateContext(parse_clusters(json.dumps(clusters)))
    for release, live in (("22.05", live_record("22.05", "squeue-json-all-after-run.json", 2)),
                          ("24.11", live_record("24.11", "scontrol-json-completed-finished.json", 37))):
        body = start_of(translate(sacct_record(release, "completed"), live, ctx))

        assert body["resources"] == [{"hostname": "n1", "hwthreads": [1, 5, 2, 6]}]


def test_without_topology_shape_2_uses_the_original_socket_times_cores_numbering():
    live = live_record("24.11", "scontrol-json-completed-finished.json", 37)
    live["job_resources"]["nodes"]["allocation"][0]["sockets"].append(
        {"index": 1, "cores": [{"index": i, "status": ["ALLOCATED" if i == 2 else "UNALLOCATED"]} for i in range(4)]})

    body = start_of(translate(sacct_record("24.11", "completed"), live))

    assert body["resources"][0]["hwthreads"] == [1, 2, 6]


def test_shape_1_beyond_socket_0_needs_the_topology_and_omits_hwthreads_without_it():
    live = live_record("22.05", "squeue-json-all-after-run.json", 2)
    live["job_resources"]["allocated_nodes"][0]["sockets"] = {"1": {"cores": {"0": "allocated"}}}
    clusters = copy.deepcopy(SANDBOX_CLUSTERS)
    clusters["clusters"][0]["subClusters"][0]["topology"].update(socket=[[0, 1], [2, 3]])

    plain = start_of(translate(sacct_record("22.05", "completed"), live))
    mapped = start_of(translate(sacct_record("22.05", "completed"), live,
                                TranslateContext(parse_clusters(json.dumps(clusters)))))

    assert plain["resources"] == [{"hostname": "n1"}]
    assert mapped["resources"] == [{"hostname": "n1", "hwthreads": [2]}]


def test_a_live_record_of_another_run_is_not_used_for_this_runs_nodes():
    live = live_record("24.11", "scontrol-json-multinode-finished.json", 44)
    live["start_time"]["number"] += 3600

    body = start_of(translate(sacct_record("24.11", "multinode"), live, TranslateContext(sandbox_topology())))

    assert body["resources"] == [{"hostname": "n1"}, {"hostname": "n2"}, {"hostname": "n3"}]


def test_an_empty_job_resources_object_falls_back_to_the_sacct_hostlist():
    live = live_record("24.11", "scontrol-json-failed-finished.json", 38)
    live["job_resources"] = {}

    body = start_of(translate(sacct_record("24.11", "failed"), live))

    assert body["resources"] == [{"hostname": "n1"}]


# ---------------------------------------------------------------------------------- accelerators

def gpu_running(release="24.11"):
    return sacct_record(release, "gpu-running"), live_record(release, "squeue-json-gpu-running.json", 50)


def test_gpu_ids_come_from_the_first_gpu_pci_addrs_regex_in_config_order():
    record, live = gpu_running()
    first = TranslateContext(gpu_pci_addrs=[(re.compile(r"n\d"), ["0000:AA:00.0", "0000:BB:00.0"]),
                                            (re.compile("n1"), ["0000:CC:00.0"])])
    second = TranslateContext(gpu_pci_addrs=[(re.compile("n1"), ["0000:CC:00.0"]),
                                             (re.compile(r"n\d"), ["0000:AA:00.0", "0000:BB:00.0"])])

    assert start_of(translate(record, live, first))["resources"][0]["accelerators"] == ["0000:AA:00.0"]
    assert start_of(translate(record, live, second))["resources"][0]["accelerators"] == ["0000:CC:00.0"]


def test_gpu_pci_addrs_win_over_the_topology_and_a_gres_index_beyond_the_list_is_dropped():
    record, live = gpu_running("26.05")
    live["gres_detail"] = ["gpu:fake:2(IDX:0-1)"]
    ctx = TranslateContext(sandbox_topology(), [(re.compile("n1"), ["0000:CC:00.0"])])

    assert start_of(translate(record, live, ctx))["resources"][0]["accelerators"] == ["0000:CC:00.0"]
    assert start_of(translate(record, live, TranslateContext(sandbox_topology())))["resources"][0]["accelerators"] \
        == ["00000000:01:00.0", "00000000:02:00.0"]


def test_without_config_or_topology_no_accelerator_ids_are_invented():
    record, live = gpu_running()

    body = start_of(translate(record, live))

    assert body["resources"] == [{"hostname": "n1", "hwthreads": [0]}]
    assert body["numAcc"] == 1


def test_a_comment_becomes_gpu_ids_only_when_every_part_is_a_pci_address():
    record = sacct_record("24.11", "completed-running")
    live = live_record("24.11", "squeue-json-completed-running.json", 37)
    live["comment"] = "00000000:3B:00.0,00000000:86:00.0"
    assert start_of(translate(record, live))["resources"][0]["accelerators"] == ["00000000:3B:00.0", "00000000:86:00.0"]

    live["comment"] = "00000000:3B:00.0,please run fast"
    assert "accelerators" not in start_of(translate(record, live))["resources"][0]


def test_the_unicode_jobs_free_text_comment_is_not_taken_for_gpus():
    record = sacct_record("22.05", "unicode_script")
    live = live_record("22.05", "squeue-json-all-after-run.json", 13)
    assert live["comment"] == "comment with spaces & ümlaut"

    assert "accelerators" not in start_of(translate(record, live))["resources"][0]


# ----------------------------------------------------------------------------------------- shared

@pytest.mark.parametrize("shared,exclusive,sent", [
    ("user", None, "single_user"), ("none", None, "none"), ("oversubscribe", None, "multi_user"),
    ([], ["true"], "none"), (["user"], ["false"], "single_user"), ([], [], "multi_user"), (None, None, "multi_user"),
])
def test_shared_follows_the_live_records_shared_and_exclusive(shared, exclusive, sent):
    live = live_record("22.05", "squeue-json-all-after-run.json", 2)
    live["shared"] = shared
    if exclusive is not None:
        live["exclusive"] = exclusive

    assert start_of(translate(sacct_record("22.05", "completed"), live)).get("shared") == sent


@pytest.mark.parametrize("exclusive,sent", [("YES", "none"), ("USER", "single_user"), ("NO", "multi_user"),
                                            ("MCS", "multi_user")])
def test_on_26_05_sacct_exclusive_decides_shared_because_squeue_has_no_shared_any_more(exclusive, sent):
    record = sacct_record("26.05", "completed")
    record["exclusive"] = exclusive
    live = live_record("26.05", "scontrol-json-completed-finished.json", 37)
    assert live["shared"] == []

    assert start_of(translate(record, live))["shared"] == sent


# ----------------------------------------------------------------------------------- meta data

def test_the_job_script_goes_into_metadata_and_an_empty_one_is_left_out():
    record = sacct_record("24.11", "unicode_script")
    script = fixture_bytes("24.11", "sacct-batch-script-unicode_script.txt").decode()

    assert start_of(translate(record, script=script))["metaData"]["jobScript"] == script
    assert "jobScript" not in start_of(translate(record))["metaData"]


def test_slurm_info_is_a_short_scontrol_like_text_of_the_record():
    info = start_of(translate(sacct_record("24.11", "timeout")))["metaData"]["slurmInfo"]

    assert info.splitlines()[:3] == ["JobId=36 JobName=timeout_job", "UserId=root Account=projecta QOS=normal",
                                     "JobState=TIMEOUT ExitCode=0:0"]
    assert "StartTime=2026-11-23T04:33:16Z" in info and "TimeLimit=1 " in info


@pytest.mark.parametrize("release,offset", [("22.05", 1), ("24.11", {"set": True, "infinite": False, "number": 1})])
def test_a_heterogeneous_job_component_is_its_own_job_and_its_slurm_info_names_the_het_job(release, offset):
    """sacct prints one record per component, each with its own job_id and `het` naming the leader
    and the offset (as the sandboxes of both releases print a `-c 1 : -N 2 -c 2` job); cc-backend
    gets each component as a job of its own, as the original sends them (spec §4.8)."""
    record = sacct_record(release, "multinode")
    leader = record["job_id"] - 1
    record["het"] = {"job_id": leader, "job_offset": offset}

    start = start_of(translate(record))

    assert (start["jobId"], start["numNodes"], start.get("arrayJobId")) == (record["job_id"], 3, None)
    assert f"\nHetJobId={leader} HetJobOffset=1\n" in start["metaData"]["slurmInfo"]


@pytest.mark.parametrize("release", RELEASES)
def test_a_job_that_is_not_heterogeneous_has_no_het_line(release):
    record = sacct_record(release, "multinode")

    assert record["het"]["job_id"] == 0
    assert "HetJobId" not in start_of(translate(record))["metaData"]["slurmInfo"]


# ---------------------------------------------------------------------------- quarantine, skips

@pytest.mark.parametrize("user", ["", None])
def test_a_record_without_user_is_quarantined_because_cc_backend_would_reject_it(user):
    record = sacct_record("24.11", "completed")
    record["user"] = user

    result = translate(record)

    assert result.start is None
    assert result.quarantine == ("$.user", "user is empty: cc-backend rejects a start without a user")


def test_a_cpu_count_beyond_int32_is_quarantined():
    record = sacct_record("24.11", "completed")
    record["tres"]["allocated"][0]["count"] = 2**31

    assert translate(record).quarantine[0] == "$.tres"


def test_a_hostlist_that_does_not_expand_is_quarantined_at_nodes():
    record = sacct_record("24.11", "completed")
    record["nodes"] = "n[1-"

    assert translate(record).quarantine[0] == "$.nodes"


def test_a_field_of_the_wrong_type_is_quarantined_with_its_json_path():
    record = sacct_record("22.05", "completed")
    record["time"]["start"] = [1]

    assert translate(record).quarantine == ("$.time.start", "Expected `int | float | str | object | null`, got `array`")


def test_one_bad_job_in_a_document_is_set_aside_with_its_path_and_id_and_the_others_flow():
    document = json.loads(fixture_bytes("22.05", "sacct-json-all-since-start.json"))
    document["jobs"][2]["state"] = "FAILED"

    results = list(translate_documents(json.dumps(document).encode(), None, TranslateContext()))

    assert [(job_id, r.quarantine) for job_id, _, r in results if r.quarantine] == [
        (3, ("$.jobs[2].state", "Expected `object | null`, got `str`"))]
    assert sum(1 for _, _, r in results if r.start is not None) == 14


def test_strings_numbers_and_nulls_read_the_same_as_plain_integers():
    record = sacct_record("22.05", "completed")
    plain = start_of(translate(record))
    record["time"]["start"] = str(record["time"]["start"])
    record["allocation_nodes"] = {"set": True, "infinite": False, "number": 1}
    record["tres"]["allocated"][0]["count"] = "2"

    assert start_of(translate(record)) == plain


# -------------------------------------------------------------------------------------- hostlist

@pytest.mark.parametrize("expression,hosts", [
    ("n1", ["n1"]), ("n[1-3]", ["n1", "n2", "n3"]), ("n[1-3,5],gpu[01-02]", ["n1", "n2", "n3", "n5", "gpu01", "gpu02"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]), ("n[9-11]", ["n9", "n10", "n11"]),
    ("a,b,a", ["a", "b"]), ("None assigned", []), ("", []), ("node-[008-010].ib", ["node-008.ib", "node-009.ib", "node-010.ib"]),
])
def test_slurm_hostlists_expand_in_slurms_order(expression, hosts):
    assert expand_hostlist(expression) == hosts


@pytest.mark.parametrize("expression", ["n[1-", "n1]", "n[a-b]", "n[3-1]", "n[[1]]", "n[0-99999999]"])
def test_a_broken_or_absurd_hostlist_is_refused(expression):
    with pytest.raises(ValueError):
        expand_hostlist(expression)
