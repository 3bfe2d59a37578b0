"""Every real Slurm record of the three fixture releases -> exactly the bodies in tests/golden/.

The expected files were checked by hand (tests/golden/README.md); the spot checks below restate
the facts that matter most as plain assertions, so a wrong golden file cannot hide them.
"""

from __future__ import annotations

import json
import os

import msgspec
import pytest

from actors.topology import parse_clusters
from actors.translate import TranslateContext, translate_documents
from tests.golden import FIXTURES, RELEASES, SANDBOX_CLUSTERS, case_ids, golden_names, load_golden

ENCODER = msgspec.json.Encoder()


def sandbox_context() -> TranslateContext:
    return TranslateContext(parse_clusters(json.dumps(SANDBOX_CLUSTERS)))


def read(relative: str | None) -> bytes | None:
    if relative is None:
        return None
    with open(os.path.join(FIXTURES, relative), "rb") as f:
        return f.read()


def translate_golden_inputs(golden: dict) -> list[dict]:
    """The translator's answer to a golden file's inputs, in the golden files' layout."""
    return translations(read(golden["sacct"]), read(golden["live"]))


def translations(sacct: bytes, live: bytes | None) -> list[dict]:
    """The translator's answer to a sacct document (and a live one), in the golden files' layout."""
    jobs = []
    for job_id, _cluster, result in translate_documents(sacct, live, sandbox_context()):
        entry: dict = {"jobId": job_id}
        if result.start is not None:
            entry["start"] = json.loads(ENCODER.encode(result.start))
        if result.stop is not None:
            entry["stop"] = json.loads(ENCODER.encode(result.stop))
        if result.skip_reason:
            entry["skip"] = result.skip_reason
        if result.quarantine is not None:
            entry["quarantine"] = list(result.quarantine)
        jobs.append(entry)
    return jobs


def bodies(release: str, name: str) -> dict[int, dict]:
    return {job["jobId"]: job for job in translate_golden_inputs(load_golden(release, name))}


GOLDEN_FILES = [(release, name) for release in RELEASES for name in golden_names(release)]


@pytest.mark.parametrize("release,name", GOLDEN_FILES, ids=[f"{r}/{n}" for r, n in GOLDEN_FILES])
def test_each_fixture_record_translates_to_exactly_the_checked_bodies(release, name):
    golden = load_golden(release, name)

    assert translate_golden_inputs(golden) == golden["jobs"]


def test_there_is_a_golden_file_for_every_per_job_sacct_fixture_of_every_release():
    for release in RELEASES:
        names = {n[len("sacct-json-"):-5] for n in os.listdir(os.path.join(FIXTURES, f"slurm-{release}"))
                 if n.startswith("sacct-json-") and n.endswith(".json")}
        per_job = {n for n in names if not n.startswith("all-") and n != "as-testuser"}
        assert per_job == set(golden_names(release)), release


@pytest.mark.parametrize("release", RELEASES)
def test_every_started_case_yields_a_start_and_a_stop_and_the_never_started_ones_are_skipped(release):
    ids = case_ids(release)
    started = ["timeout", "completed", "failed", "cancelled_running", "multinode", "pending_resources",
               "srun", "unicode_script", "testuser_default_account", "gpu", "gpus2"]
    for case in started:
        job = bodies(release, case)[ids[case]]
        assert "start" in job and "stop" in job, case
    for case in ("pending_cancelled", "dependency_never"):
        job = bodies(release, case)[ids[case]]
        assert job["skip"].startswith("never started"), case


@pytest.mark.parametrize("release", RELEASES)
def test_a_multinode_job_gets_one_resource_per_node_with_the_core_slurm_allocated_there(release):
    job = bodies(release, "multinode")[case_ids(release)["multinode"]]["start"]

    assert job["numNodes"] == 3
    assert job["resources"] == [{"hostname": "n1", "hwthreads": [1]}, {"hostname": "n2", "hwthreads": [0]},
                                {"hostname": "n3", "hwthreads": [0]}]


@pytest.mark.parametrize("release", RELEASES)
def test_a_failed_job_stops_failed_with_exit_code_1_even_on_22_05_whose_sacct_says_success(release):
    job = bodies(release, "failed")[case_ids(release)["failed"]]

    assert job["stop"]["jobState"] == "failed"
    assert job["start"]["metaData"]["exitCode"] == "1:0"


@pytest.mark.parametrize("release", RELEASES)
def test_array_task_1_exits_3_and_every_task_carries_the_array_id(release):
    array_id = case_ids(release)["array"]
    jobs = bodies(release, "array")

    assert sorted(j["start"]["metaData"]["exitCode"] for j in jobs.values()) == ["0:0", "0:0", "3:0"]
    assert {j["start"]["arrayJobId"] for j in jobs.values()} == {array_id}
    assert sorted(j["start"]["resources"][0]["hwthreads"][0] for j in jobs.values()) == [1, 2, 3]


@pytest.mark.parametrize("release", RELEASES)
def test_a_timed_out_job_has_a_60_s_walltime_and_stops_as_timeout(release):
    job = bodies(release, "timeout")[case_ids(release)["timeout"]]

    assert job["start"]["walltime"] == 60
    assert job["stop"]["jobState"] == "timeout"
    assert job["stop"]["startTime"] == job["start"]["startTime"]


@pytest.mark.parametrize("release", RELEASES)
def test_the_testuser_jobs_carry_testuser_and_their_accounts(release):
    ids = case_ids(release)
    unicode_job = bodies(release, "unicode_script")[ids["unicode_script"]]["start"]
    default_job = bodies(release, "testuser_default_account")[ids["testuser_default_account"]]["start"]

    assert (unicode_job["user"], unicode_job["project"]) == ("testuser", "projectb")
    assert (default_job["user"], default_job["project"]) == ("testuser", "projecta")
    assert unicode_job["metaData"]["jobName"] == "name with spaces `double` 'single' ünïcødé ✓ 日本語"
    assert unicode_job["walltime"] == 300


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_a_running_gpu_job_gets_the_topologys_first_gpu_for_gres_index_0(release):
    job = bodies(release, "gpu-running")[case_ids(release)["gpu"]]["start"]

    assert job["numAcc"] == 1
    assert job["resources"] == [{"hostname": "n1", "hwthreads": [0], "accelerators": ["00000000:01:00.0"]}]
    assert "stop" not in bodies(release, "gpu-running")[case_ids(release)["gpu"]]


def test_the_22_05_placeholder_records_are_skipped_not_sent():
    for name in ("completed-running-TRANSIENT-placeholder", "failed-TRANSIENT-placeholder",
                 "gpu-running", "multinode-running", "unicode_script-running", "array-running"):
        (job,) = bodies("22.05", name).values()
        assert job == {"jobId": job["jobId"], "skip": "placeholder record (sacct's first seconds after a start)"}


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_a_pending_array_is_skipped_until_its_tasks_run(release):
    (job,) = bodies(release, "array-running").values()

    assert job["skip"] == "pending array (tasks not started)"


def test_every_start_job_of_the_22_05_whole_run_document_is_produced():
    with open(os.path.join(FIXTURES, "slurm-22.05", "sacct-json-all-since-start.json"), "rb") as f:
        document = f.read()

    results = list(translate_documents(document, None, TranslateContext()))

    started = [job_id for job_id, _, r in results if r.start is not None]
    assert started == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert all(r.stop is not None for _, _, r in results)
