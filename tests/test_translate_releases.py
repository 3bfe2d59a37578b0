"""The same job mix on Slurm 22.05, 24.11 and 26.05 yields the same bodies, apart from ids and times.

Each release prints these jobs in its own shapes (plain ints vs no-value objects, state strings vs
lists, job_resources shape 1 vs shape 2, null vs "" strings, meta.Slurm vs meta.slurm, NO_VAL
start times); the translator has to see through all of it.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from actors.slurm_views import Meta, release_of
from actors.topology import parse_clusters
from actors.translate import TranslateContext, translate_documents
from tests.golden import RELEASES, SANDBOX_CLUSTERS, case_ids, fixture_bytes

CASES = ["timeout", "completed", "failed", "cancelled_running", "pending_cancelled", "array", "multinode",
         "pending_resources", "srun", "unicode_script", "testuser_default_account", "gpu", "gpus2",
         "dependency_never"]
ENCODER = msgspec.json.Encoder()


class MetaDocument(msgspec.Struct):
    meta: Meta | None = None


def live_document(release: str, case: str) -> bytes:
    if release == "22.05":
        return fixture_bytes(release, "squeue-json-all-after-run.json")
    return fixture_bytes(release, f"scontrol-json-{case}-finished.json")


def comparable(release: str, case: str) -> list[dict]:
    """The case's translation with job ids renumbered by order and times, paths and ids removed."""
    ctx = TranslateContext(parse_clusters(json.dumps(SANDBOX_CLUSTERS)))
    results = translate_documents(fixture_bytes(release, f"sacct-json-{case}.json"),
                                  live_document(release, case), ctx)
    out = []
    for _job_id, _cluster, result in results:
        entry = {"skip": result.skip_reason, "quarantine": result.quarantine}
        if result.start is not None:
            start = json.loads(ENCODER.encode(result.start))
            for key in ("jobId", "startTime", "arrayJobId"):
                start.pop(key, None)
            meta = start["metaData"]
            del meta["submitTime"], meta["slurmInfo"]  # times, ids and the working directory
            entry["start"] = start
        if result.stop is not None:
            stop = json.loads(ENCODER.encode(result.stop))
            entry["stop"] = {"jobState": stop["jobState"], "cluster": stop["cluster"]}
        out.append(entry)
    return sorted(out, key=lambda e: json.dumps(e, sort_keys=True))


@pytest.mark.parametrize("case", CASES)
def test_the_case_translates_the_same_on_22_05_24_11_and_26_05(case):
    on_22, on_24, on_26 = (comparable(release, case) for release in RELEASES)

    assert on_22 == on_24 == on_26


def test_the_cases_really_differ_in_shape_between_the_releases():
    """Guard: the comparison above is not trivially true because the inputs were alike."""
    shapes = {}
    for release in RELEASES:
        job = json.loads(fixture_bytes(release, "sacct-json-completed.json"))["jobs"][0]
        live = json.loads(live_document(release, "completed"))["jobs"]
        live_job = next(j for j in live if j["job_id"] == case_ids(release)["completed"])
        shapes[release] = (type(job["state"]["current"]).__name__, type(job["time"]["limit"]).__name__,
                           "allocated_nodes" in live_job["job_resources"])
    assert shapes == {"22.05": ("str", "NoneType", True), "24.11": ("list", "dict", False),
                      "26.05": ("list", "dict", False)}


@pytest.mark.parametrize("release,expected", [("22.05", (22, 5, 8, "openapi/dbv0.0.38")),
                                              ("24.11", (24, 11, 5, "data_parser/v0.0.42")),
                                              ("26.05", (26, 5, 5, "data_parser/v0.0.45"))])
def test_the_release_is_read_from_meta_slurm_or_meta_Slurm(release, expected):
    meta = msgspec.json.decode(fixture_bytes(release, "sacct-json-completed.json"), type=MetaDocument).meta

    found = release_of(meta)

    assert (found.major, found.minor, found.micro, found.data_parser) == expected
