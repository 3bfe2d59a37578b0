"""cc-backend's cluster answer -> per-hostname topology, with cc-backend's own node-list grammar."""

from __future__ import annotations

import copy
import json

import pytest

from actors.topology import NodeList, parse_clusters
from tests.golden import SANDBOX_CLUSTERS


def answer(*sub_clusters, name="testcluster") -> str:
    return json.dumps({"clusters": [{"name": name, "subClusters": list(sub_clusters)}]})


def sub(name, nodes, cores=4, sockets=1, threads=1, gpus=()):
    per_socket = cores // sockets
    core = [[c + t * cores for t in range(threads)] for c in range(cores)]
    socket = [sum(core[s * per_socket:(s + 1) * per_socket], []) for s in range(sockets)]
    return {"name": name, "nodes": nodes, "topology": {
        "node": sorted(sum(core, [])), "socket": socket, "core": core,
        "accelerators": [{"id": g, "type": "Nvidia GPU", "model": "x"} for g in gpus]}}


@pytest.mark.parametrize("expression,host,matches", [
    ("n[1-3]", "n2", True), ("n[1-3]", "n4", False), ("n[1-3]", "n02", False),
    ("node[01-10]", "node05", True), ("node[01-10]", "node5", False), ("node[01-10]", "node010", False),
    ("f[0101-0188,0201-0288]", "f0250", True), ("f[0101-0188,0201-0288]", "f0190", False),
    ("f[0101-0188]", "f0101.cluster", False),
    ("login,cn[001-100]", "login", True), ("login,cn[001-100]", "cn100", True), ("login,cn[001-100]", "cn", False),
    ("node01,node02", "node02", True), ("node01,node02", "node03", False),
    ("*", "anything", False), ("", "n1", False),
])
def test_host_names_match_cc_backends_node_list_grammar_exactly(expression, host, matches):
    assert NodeList(expression).matches(host) is matches


@pytest.mark.parametrize("expression", ["n[1-10]", "n[a-b]", "n[1-", "a.b", "n[01-02]x[1-2]"])
def test_node_lists_the_server_would_refuse_are_refused(expression):
    with pytest.raises(ValueError):
        NodeList(expression)


def test_the_sandbox_cluster_gives_cores_and_gpus_for_its_hosts_and_nothing_for_others():
    topology = parse_clusters(json.dumps(SANDBOX_CLUSTERS))

    host = topology.lookup("testcluster", "n2")

    assert (host.sub_cluster, host.core_hwthreads, host.cores_per_socket) == ("main", ((0,), (1,), (2,), (3,)), 4)
    assert host.accelerator_ids == ("00000000:01:00.0", "00000000:02:00.0")
    assert topology.lookup("testcluster", "n4") is None
    assert topology.lookup("othercluster", "n2") is None


def test_smt_siblings_and_sockets_are_read_from_the_topology():
    topology = parse_clusters(answer(sub("big", "c[01-04]", cores=8, sockets=2, threads=2)))

    host = topology.lookup("testcluster", "c03")

    assert host.cores_per_socket == 4
    assert host.core_hwthreads[5] == (5, 13)


def test_the_first_matching_sub_cluster_wins_in_the_answers_order():
    topology = parse_clusters(answer(sub("gpu", "g[1-2]", gpus=["0000:01:00.0"]), sub("cpu", "g[1-9],c[1-9]")))

    assert topology.lookup("testcluster", "g2").sub_cluster == "gpu"
    assert topology.lookup("testcluster", "g5").sub_cluster == "cpu"


def test_a_wildcard_never_matches_by_name_but_is_the_fallback_when_it_comes_first():
    first = parse_clusters(answer(sub("any", "*"), sub("named", "n[1-3]")))
    later = parse_clusters(answer(sub("named", "n[1-3]"), sub("any", "*")))

    assert first.lookup("testcluster", "n2").sub_cluster == "named"
    assert first.lookup("testcluster", "x9").sub_cluster == "any"
    assert later.lookup("testcluster", "x9") is None


def test_a_sub_cluster_with_a_broken_node_list_matches_nothing_and_the_others_still_work():
    broken = copy.deepcopy(sub("bad", "n[1-10]"))

    topology = parse_clusters(answer(broken, sub("good", "m[1-2]")))

    assert topology.lookup("testcluster", "n5") is None
    assert topology.lookup("testcluster", "m1").sub_cluster == "good"


def test_an_answer_that_does_not_decode_is_a_value_error():
    with pytest.raises(ValueError, match="does not decode"):
        parse_clusters(b'{"clusters": 5}')
