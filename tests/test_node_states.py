"""POST /api/nodestate/ bodies from `sinfo --json` of 22.05, 24.11 and 26.05.

The real fixtures were captured on an idle sandbox (sinfo-N-l.txt of each release: n1..n3 idle,
4 CPUs, 1000 MB, 2 fake GPUs each), so every figure in them is 0. Allocations are exercised on
copies of those same documents with the allocation fields edited, in the shape each release
prints; the busy cases repeat what `sinfo --json` of a live 22.05 and 24.11 sandbox printed with
three jobs running (n1: 2 CPUs, 300 MB, 1 GPU; n2: 4 CPUs, 200 MB; n3: 1 CPU, 100 MB).
The last test sends every body to the real cc-backend v1.5.4.
"""

from __future__ import annotations

import copy
import json
import re

import msgspec
import pytest

from actors.errors import SlurmError
from actors.node_states import gpus_in_use, nodestate_body
from tests.golden import RELEASES, fixture_bytes

CLUSTER = "testcluster"
NODE_KEYS = ["hostname", "states", "cpusAllocated", "memoryAllocated", "gpusAllocated", "jobsRunning"]


def sinfo(release: str, name: str = "sinfo-json.json") -> dict:
    return json.loads(fixture_bytes(release, name))


def body(document: dict | bytes, ignore_hosts: re.Pattern | None = None) -> dict:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return json.loads(nodestate_body(raw, CLUSTER, ignore_hosts))


def node(hostname, states, cpus=0, memory=0, gpus=0) -> dict:
    return {"hostname": hostname, "states": states, "cpusAllocated": cpus, "memoryAllocated": memory,
            "gpusAllocated": gpus, "jobsRunning": 0}


def group(release: str, hosts, states, cpus, memory, gres_used) -> dict:
    """A copy of the release's real sinfo[] group with the fields we read replaced."""
    g = copy.deepcopy(sinfo(release)["sinfo"][0])
    g["node"]["state"] = states
    g["nodes"]["nodes"] = hosts
    g["nodes"]["total"] = len(hosts) if isinstance(hosts, list) else g["nodes"]["total"]
    g["cpus"]["allocated"] = cpus
    g["memory"]["allocated"] = memory
    g["gres"]["used"] = gres_used
    return g


def with_groups(release: str, *groups) -> dict:
    document = sinfo(release)
    document["sinfo"] = list(groups)
    return document


IDLE_BODY = {"cluster": CLUSTER, "nodes": [node("n1", ["IDLE"]), node("n2", ["IDLE"]), node("n3", ["IDLE"])]}


# ------------------------------------------------------------------------------ real fixtures

@pytest.mark.parametrize("release, name", [
    ("22.05", "sinfo-json.json"),
    ("24.11", "sinfo-json.json"), ("24.11", "sinfo-json-end.json"),
    ("26.05", "sinfo-json.json"), ("26.05", "sinfo-json-end.json"),
])
def test_the_real_idle_sandbox_gives_three_idle_nodes_with_nothing_allocated(release, name):
    # Given sinfo --json of the idle sandbox: 22.05 lists n1..n3 in nodes[] with state "idle",
    # alloc_cpus 0, alloc_memory 0, gres_used "gpu:fake:0(IDX:N/A)"; 24.11 and 26.05 have one
    # sinfo[] group ["n1","n2","n3"], node.state ["IDLE"], cpus.allocated 0, memory.allocated 0
    # and the same gres.used
    raw = fixture_bytes(release, name)

    # When the body is built
    sent = nodestate_body(raw, CLUSTER, None)

    # Then it is exactly this, byte for byte (key order of cc-backend-contract.md §10.1)
    assert sent == msgspec.json.encode(IDLE_BODY)


def test_22_05_node_records_give_each_node_its_own_figures_and_state_flags():
    # Given 22.05 nodes[] as a live capture of the sandbox showed them with three jobs running
    # (n1: 2 CPUs, 300 MB, 1 GPU; n2: 4 CPUs, 200 MB; n3: 1 CPU, 100 MB), n2 also draining
    document = sinfo("22.05")
    n1, n2, n3 = document["nodes"]
    n1.update(state="mixed", alloc_cpus=2, alloc_memory=300, idle_cpus=2, gres_used="gpu:fake:1(IDX:0)")
    n2.update(state="allocated", state_flags=["DRAIN"], alloc_cpus=4, alloc_memory=200, idle_cpus=0)
    n3.update(state="mixed", alloc_cpus=1, alloc_memory=100, idle_cpus=3)

    # Then the figures are per node, and states are state + flags, upper-case
    assert body(document) == {"cluster": CLUSTER, "nodes": [
        node("n1", ["MIXED"], cpus=2, memory=300, gpus=1),
        node("n2", ["ALLOCATED", "DRAIN"], cpus=4, memory=200),
        node("n3", ["MIXED"], cpus=1, memory=100),
    ]}


def test_scontrol_style_node_records_with_state_lists_read_the_same():
    # Given node records as `scontrol show nodes --json` prints them from 23.02 on (state a list,
    # numbers as no-value objects)
    document = sinfo("22.05")
    document["nodes"] = [{"name": "n1", "state": ["MIXED", "DRAIN"],
                          "alloc_cpus": {"set": True, "infinite": False, "number": 3},
                          "alloc_memory": "512", "gres_used": "gpu:fake:2(IDX:0-1)"}]

    assert body(document)["nodes"] == [node("n1", ["MIXED", "DRAIN"], cpus=3, memory=512, gpus=2)]


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_nodes_with_different_allocations_come_in_one_node_groups_and_keep_exact_figures(release):
    # Given sinfo[] as a live 24.11 capture showed the same three jobs: sinfo put the two MIXED
    # nodes in groups of their own because their allocations differ, in the order n1, n3, n2
    document = with_groups(release,
                           group(release, ["n1"], ["MIXED"], 2, 300, "gpu:fake:1(IDX:0)"),
                           group(release, ["n3"], ["MIXED"], 1, 100, "gpu:fake:0(IDX:N/A)"),
                           group(release, ["n2"], ["ALLOCATED"], 4, 200, "gpu:fake:0(IDX:N/A)"))

    # Then every node has its own figures, in sinfo's order
    assert body(document)["nodes"] == [
        node("n1", ["MIXED"], cpus=2, memory=300, gpus=1),
        node("n3", ["MIXED"], cpus=1, memory=100),
        node("n2", ["ALLOCATED"], cpus=4, memory=200),
    ]


def test_a_group_of_several_nodes_shares_its_totals_by_integer_division():
    # Given one MIXED group of n1 and n2 holding 5 CPUs and 501 MB in all
    document = with_groups("24.11", group("24.11", ["n1", "n2"], ["MIXED"], 5, 501, "gpu:fake:1(IDX:1)"))

    # Then each gets 5 // 2 CPUs and 501 // 2 MB; gres.used is one node's string, not divided
    assert body(document)["nodes"] == [node("n1", ["MIXED"], 2, 250, 1), node("n2", ["MIXED"], 2, 250, 1)]


def test_a_node_in_two_partitions_keeps_its_smallest_groups_figures_and_all_states():
    # Given n1 both in a 3-node partition group and alone in a second partition's group
    document = with_groups("26.05",
                           group("26.05", ["n1", "n2", "n3"], ["MIXED"], 9, 900, "gpu:fake:1(IDX:0)"),
                           group("26.05", ["n1"], ["MIXED", "RESERVED"], 4, 400, "gpu:fake:2(IDX:0-1)"))

    # Then n1 takes the exact one-node figures whatever the order, and states are the union
    assert body(document)["nodes"] == [
        node("n1", ["MIXED", "RESERVED"], 4, 400, 2),
        node("n2", ["MIXED"], 3, 300, 1),
        node("n3", ["MIXED"], 3, 300, 1),
    ]
    document["sinfo"].reverse()
    assert body(document)["nodes"][0] == node("n1", ["MIXED", "RESERVED"], 4, 400, 2)


def test_numbers_in_every_release_shape_are_read_and_unset_ones_are_zero():
    # Given groups whose counters are a no-value object, a string, unset, infinite and null
    document = with_groups("24.11",
                           group("24.11", ["n1"], ["MIXED"], {"set": True, "infinite": False, "number": 3}, "700", None),
                           group("24.11", ["n2"], ["MIXED"], {"set": False, "infinite": False, "number": 0},
                                 {"set": True, "infinite": True, "number": 0}, None),
                           group("24.11", "n[3]", "IDLE", None, None, "(null)"))

    assert body(document)["nodes"] == [node("n1", ["MIXED"], 3, 700), node("n2", ["MIXED"]), node("n3", ["IDLE"])]


def test_group_memory_sums_beyond_32_bits_are_kept():
    # Given a 4-node group holding 4 x 2 TB = 8 388 608 000 MB (above Slurm's 32-bit NO_VAL)
    document = with_groups("24.11", group("24.11", ["a1", "a2", "a3", "a4"], ["ALLOCATED"], 512, 8_388_608_000, ""))

    assert {n["memoryAllocated"] for n in body(document)["nodes"]} == {2_097_152_000}


@pytest.mark.parametrize("gres_used, gpus", [
    ("gpu:fake:0(IDX:N/A)", 0),
    ("gpu:fake:1(IDX:0)", 1),
    ("gpu:fake:2(IDX:0,1)", 2),
    ("gpu:a100:2(IDX:0-1),gpu:v100:1(IDX:3)", 3),
    ("gpu:3(IDX:0-2)", 3),
    ("gpu:a100:1(IDX:0),shard:a100:4(IDX:0),gpumem:8G", 1),
    ("(null)", 0), ("", 0), (None, 0), ("gpu", 0),
])
def test_gpus_in_use_sums_the_gpu_entries_of_gres_used(gres_used, gpus):
    assert gpus_in_use(gres_used) == gpus


# ------------------------------------------------------------------------------ ignore_hosts

@pytest.mark.parametrize("release", RELEASES)
def test_hosts_matching_ignore_hosts_are_left_out(release):
    # Given ignoreHosts "^n[13]$", and an unanchored "2" (re.search, like the original)
    assert [n["hostname"] for n in body(fixture_bytes(release, "sinfo-json.json"), re.compile(r"^n[13]$"))["nodes"]] == ["n2"]
    assert [n["hostname"] for n in body(fixture_bytes(release, "sinfo-json.json"), re.compile("2"))["nodes"]] == ["n1", "n3"]
    # And a pattern matching every host leaves a valid body with no nodes
    assert body(fixture_bytes(release, "sinfo-json.json"), re.compile("n")) == {"cluster": CLUSTER, "nodes": []}


# ------------------------------------------------------------------------------ not sinfo, damaged sinfo

@pytest.mark.parametrize("raw, words", [
    (b"", "not a sinfo --json document"),
    (b"sinfo: error: Unable to contact slurm controller", "not a sinfo --json document"),
    (b"[]", "not a sinfo --json document"),
    (b'{"meta": {}, "errors": []}', "neither sinfo[] (23.02+) nor nodes[] (22.05)"),
    (b'{"sinfo": [], "errors": [{"description": "Unable to contact slurm controller (connect failure)"}]}',
     "Slurm says: Unable to contact slurm controller (connect failure)"),
    (b'{"sinfo": [{"nodes": {"nodes": "n[3-1]"}}]}', "bad node list 'n[3-1]'"),
])
def test_input_that_is_not_sinfo_json_raises_slurm_error_saying_so(raw, words):
    with pytest.raises(SlurmError, match=re.escape(words)):
        nodestate_body(raw, CLUSTER, None)


def test_a_sacct_document_is_not_taken_for_sinfo():
    with pytest.raises(SlurmError, match="neither sinfo"):
        nodestate_body(fixture_bytes("24.11", "sacct-json-completed.json"), CLUSTER, None)


ODD_VALUES = [None, "", "x", -1, 0, 2**64, 1.5, True, [], ["x"], {}, {"set": True, "number": "x"}]


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, path + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, path + (i,))


def _damaged(document):
    """Every document with one value replaced by an odd one, or one key/element removed."""
    for path in _paths(document):
        if not path:
            continue
        for odd in ODD_VALUES + ["<removed>"]:
            copy_ = copy.deepcopy(document)
            parent = copy_
            for step in path[:-1]:
                parent = parent[step]
            if odd == "<removed>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = odd
            yield path, copy_


@pytest.mark.parametrize("release", RELEASES)
def test_a_damaged_or_cut_document_gives_a_valid_body_or_slurm_error_never_anything_else(release):
    # Given the real document with each value in turn replaced, removed, or the bytes cut short
    raw = fixture_bytes(release, "sinfo-json.json")
    cases = [(path, json.dumps(doc).encode()) for path, doc in _damaged(json.loads(raw))]
    cases += [(("cut", n), raw[:n]) for n in range(0, len(raw), 97)]
    outcomes = {"body": 0, "SlurmError": 0}
    for path, damaged in cases:
        # When the body is built
        try:
            sent = json.loads(nodestate_body(damaged, CLUSTER, None))
        except SlurmError:
            outcomes["SlurmError"] += 1
            continue
        # Then any body has exactly cc-backend's keys and non-negative int64 figures
        outcomes["body"] += 1
        assert list(sent) == ["cluster", "nodes"], path
        for entry in sent["nodes"]:
            assert list(entry) == NODE_KEYS, path
            assert entry["hostname"] and all(isinstance(s, str) and s for s in entry["states"]), path
            assert all(type(entry[k]) is int and 0 <= entry[k] < 2**63 for k in NODE_KEYS[2:]), path
    assert outcomes["body"] > 0 and outcomes["SlurmError"] > 0, outcomes


# ------------------------------------------------------------------------------ the real cc-backend

def _busy(release: str) -> bytes:
    if release == "22.05":
        document = sinfo(release)
        document["nodes"][0].update(state="mixed", state_flags=["DRAIN"], alloc_cpus=2, alloc_memory=300,
                                    gres_used="gpu:fake:1(IDX:0)")
    else:
        document = with_groups(release, group(release, ["n1"], ["MIXED", "DRAIN"], 2, 300, "gpu:fake:1(IDX:0)"),
                               group(release, ["n2", "n3"], ["IDLE"], 0, 0, "gpu:fake:0(IDX:N/A)"))
    return json.dumps(document).encode()


@pytest.mark.ccbackend
@pytest.mark.parametrize("release", RELEASES)
def test_the_real_cc_backend_accepts_every_releases_body(cc_backend, release):
    headers = {"Authorization": f"Bearer {cc_backend.jwt}", "Content-Type": "application/json"}
    for raw in (fixture_bytes(release, "sinfo-json.json"), _busy(release)):
        # Given the body built from this release's sinfo --json (idle, and busy with MIXED+DRAIN)
        sent = nodestate_body(raw, CLUSTER, None)

        # When it is posted to /api/nodestate/
        answer = cc_backend.request("POST", "/api/nodestate/", auth=False, headers=headers, data=sent)

        # Then cc-backend says 200 with an empty body (contract §10.3) and, since it says 200 even
        # when it drops a node, its log names no node it could not store
        assert (answer.status_code, answer.text) == (200, ""), sent
        assert "BatchUpdateNodeStates" not in cc_backend.log_text()

    # And the same server does reject a key it does not know, so the 200 above means something
    extra = json.loads(sent)
    extra["nodes"][0]["partition"] = "debug"
    answer = cc_backend.request("POST", "/api/nodestate/", auth=False, headers=headers, json=extra)
    assert (answer.status_code, answer.json()["error"]) == (
        400, 'parsing request body failed: json: unknown field "partition"')
