"""The jobs of the real 24.11 fixtures, in the shapes of 23.02, 23.11, 24.05 and 25.05, translate to
exactly the checked 24.11 bodies.

The bench runs Slurm 22.05, 24.11 and 26.05. For the releases between, tests/release_shapes.py
rewrites the real 24.11 records into each release's documented shape (only the differences
reference/slurm-json-across-releases.md documents). Where Slurm's own older data_parsers run here
(v0.0.40 and v0.0.41 inside 24.11, v0.0.43 inside 26.05), the converter is checked against what
they printed for one job mix (tests/golden/older-plugins/), through the adapter's view Structs.
"""

from __future__ import annotations

import json
import os

import msgspec
import pytest

from actors.slurm_live_views import LIVE_DOCUMENT
from actors.slurm_views import SACCT_DOCUMENT, Meta, release_of
from tests.golden import GOLDEN, case_ids, golden_names, load_golden
from tests.release_shapes import SHAPES, live_as, sacct_as
from tests.test_translate_golden import read, translations

INTERMEDIATE = tuple(SHAPES)  #: 23.02, 23.11, 24.05, 25.05
OLDER_PLUGINS = os.path.join(GOLDEN, "older-plugins")
CASES = [(release, name) for release in INTERMEDIATE for name in golden_names("24.11")]


class MetaDocument(msgspec.Struct):
    meta: Meta | None = None


def converted(name: str, release: str) -> tuple[dict, dict | None]:
    """The sacct and live documents of tests/golden/24.11/<name>.json in the shape of `release`."""
    golden = load_golden("24.11", name)
    sacct = sacct_as(json.loads(read(golden["sacct"])), release)
    live = live_as(json.loads(read(golden["live"])), release) if golden["live"] else None
    return sacct, live


def encoded(document: dict | None) -> bytes | None:
    return None if document is None else json.dumps(document).encode()


@pytest.mark.parametrize("release,name", CASES, ids=[f"{r}/{n}" for r, n in CASES])
def test_a_24_11_record_in_an_intermediate_releases_shape_gives_the_checked_24_11_bodies(release, name):
    sacct, live = converted(name, release)

    assert translations(encoded(sacct), encoded(live)) == load_golden("24.11", name)["jobs"]


def test_the_converted_records_really_have_each_releases_shape():
    """Guard: the test above compares different shapes, not the same document five times."""
    job_id = case_ids("24.11")["multinode"]
    shapes = {}
    for release in (*INTERMEDIATE, "24.11"):
        sacct, live = converted("multinode", release) if release != "24.11" else (
            json.loads(read("slurm-24.11/sacct-json-multinode.json")),
            json.loads(read("slurm-24.11/scontrol-json-multinode-finished.json")))
        job = sacct["jobs"][0]
        live_job = next(j for j in live["jobs"] if j["job_id"] == job_id)
        shapes[release] = (type(job["state"]["current"]).__name__, type(job["exit_code"]["status"]).__name__,
                           "allocated_nodes" in live_job["job_resources"], live_job.get("exclusive"),
                           type(live_job["start_time"]).__name__, type(live_job["job_state"]).__name__,
                           job["association"]["account"], sorted(sacct["meta"]))
    assert shapes == {
        "23.02": ("str", "str", True, [], "int", "str", "projecta", ["Slurm", "command", "plugins"]),
        "23.11": ("list", "list", True, [], "dict", "list", "projecta", ["client", "command", "plugin", "slurm"]),
        "24.05": ("list", "list", False, [], "dict", "list", "projecta", ["client", "command", "plugin", "slurm"]),
        "24.11": ("list", "list", False, None, "dict", "list", "projecta", ["client", "command", "plugin", "slurm"]),
        "25.05": ("list", "list", False, None, "dict", "list", "", ["client", "command", "plugin", "slurm"]),
    }


@pytest.mark.parametrize("release,expected", [("23.02", (23, 2, 8, "data_parser/v0.0.39")),
                                              ("23.11", (23, 11, 11, "data_parser/v0.0.40")),
                                              ("24.05", (24, 5, 8, "data_parser/v0.0.41")),
                                              ("25.05", (25, 5, 8, "data_parser/v0.0.43"))])
def test_the_release_is_read_from_each_converted_meta(release, expected):
    sacct, _ = converted("completed", release)

    found = release_of(msgspec.json.decode(encoded(sacct), type=MetaDocument).meta)

    assert (found.major, found.minor, found.micro, found.data_parser) == expected


def test_on_23_02_a_failed_jobs_exit_code_comes_from_slurmctld_because_sacct_says_success():
    sacct, live = converted("failed", "23.02")
    job_id = case_ids("24.11")["failed"]

    assert sacct["jobs"][0]["exit_code"] == {"status": "SUCCESS", "return_code": 0}
    assert next(j for j in live["jobs"] if j["job_id"] == job_id)["exit_code"] == \
        {"set": True, "infinite": False, "number": 256}
    [job] = translations(encoded(sacct), encoded(live))
    assert (job["start"]["metaData"]["exitCode"], job["stop"]["jobState"]) == ("1:0", "failed")


def older_plugin(source: str, command: str, version: str) -> dict:
    with open(os.path.join(OLDER_PLUGINS, f"{source}-{command}-json-{version}.json"), "rb") as f:
        return json.load(f)


def as_the_adapter_reads_it(decoder: msgspec.json.Decoder, document: dict):
    """The jobs through the adapter's view Structs, back to plain values (raw parts included)."""
    return msgspec.json.decode(msgspec.json.encode(decoder.decode(json.dumps(document).encode()).jobs))


@pytest.mark.parametrize("release,source,version", [("23.11", "slurm-24.11", "v0.0.40"),
                                                    ("24.05", "slurm-24.11", "v0.0.41"),
                                                    ("25.05", "slurm-26.05", "v0.0.43")])
def test_the_converter_gives_what_slurms_own_older_data_parser_prints(release, source, version):
    sacct = older_plugin(source, "sacct", "v0.0.42")
    live = older_plugin(source, "scontrol", "v0.0.42")

    assert as_the_adapter_reads_it(SACCT_DOCUMENT, sacct_as(sacct, release)) == \
        as_the_adapter_reads_it(SACCT_DOCUMENT, older_plugin(source, "sacct", version))
    assert as_the_adapter_reads_it(LIVE_DOCUMENT, live_as(live, release)) == \
        as_the_adapter_reads_it(LIVE_DOCUMENT, older_plugin(source, "scontrol", version))


def test_the_older_plugin_captures_differ_where_the_reference_says():
    """Guard: the comparison above is between documents that really differ in the fields read."""
    v40 = older_plugin("slurm-24.11", "scontrol", "v0.0.40")
    v42 = older_plugin("slurm-24.11", "scontrol", "v0.0.42")

    assert as_the_adapter_reads_it(LIVE_DOCUMENT, v40) != as_the_adapter_reads_it(LIVE_DOCUMENT, v42)
    assert [type(j["job_resources"]).__name__ for j in v40["jobs"]] == ["dict"] * len(v40["jobs"])
    assert [sorted(j["job_resources"])[:2] for j in v40["jobs"] if j["job_resources"]][0] == \
        ["allocated_cores", "allocated_cpus"]
