"""cc-backend's cluster topology, looked up by hostname.

Input: the answer of `GET /api/clusters/`:
`{"clusters": [{"name", "subClusters": [{"name", "nodes": "<expr>", "topology": {"node",
"socket", "core", "accelerators": [{"id", ...}]}}]}]}`.

Hostnames are matched with cc-backend's own node-list grammar (cc-backend-contract.md §5.3), not
Slurm's: comma-separated terms, each a prefix of letters, digits and `-` with at most one bracket
group of zero-padded, equal-width ranges `a-b`; a hostname matches a term when it is the prefix
followed by exactly `width` digits inside one range. `"*"` never matches by name, but like the
server we fall back to the first sub-cluster when its list is `"*"` and nothing else matched.
"""

from __future__ import annotations

import re

import msgspec


class Accelerator(msgspec.Struct, gc=False):
    id: str = ""


class TopologyView(msgspec.Struct, gc=False):
    node: list[int] | None = None
    socket: list[list[int]] | None = None
    core: list[list[int]] | None = None
    accelerators: list[Accelerator] | None = None


class SubClusterView(msgspec.Struct, gc=False):
    name: str = ""
    nodes: str = ""
    topology: TopologyView | None = None


class ClusterView(msgspec.Struct, gc=False):
    name: str = ""
    sub_clusters: list[SubClusterView] = msgspec.field(default_factory=list, name="subClusters")


class ClustersAnswer(msgspec.Struct, gc=False):
    clusters: list[ClusterView] = []


_ANSWER = msgspec.json.Decoder(ClustersAnswer)
_TERM = re.compile(r"([A-Za-z0-9-]*)(?:\[([0-9,\-]+)\])?")
_LOOKUP_CACHE_MAX = 65536


class HostTopology(msgspec.Struct, frozen=True, gc=False):
    """What the translator needs about one node type."""

    sub_cluster: str
    core_hwthreads: tuple[tuple[int, ...], ...]  #: core i (Slurm's abstract core) -> hwthread ids
    cores_per_socket: int
    accelerator_ids: tuple[str, ...]  #: index i (Slurm's GRES IDX) -> accelerator id


class NodeList:
    """One sub-cluster's `nodes` expression in cc-backend's grammar."""

    __slots__ = ("names", "ranges", "wildcard")

    def __init__(self, expression: str):
        self.wildcard = expression.strip() == "*"
        self.names: set[str] = set()
        #: (prefix, width, low, high)
        self.ranges: list[tuple[str, int, int, int]] = []
        if self.wildcard:
            return
        for term in _split_terms(expression):
            if not term:
                continue
            match = _TERM.fullmatch(term)
            if match is None:
                raise ValueError(f"node list {expression!r}: term {term!r} is not prefix[ranges]")
            prefix, group = match.groups()
            if group is None:
                self.names.add(prefix)
                continue
            for part in group.split(","):
                low, dash, high = part.partition("-")
                if not dash:
                    high = low
                if not low.isdigit() or not high.isdigit() or len(low) != len(high):
                    raise ValueError(f"node list {expression!r}: range {part!r} is not two equal-width numbers")
                self.ranges.append((prefix, len(low), int(low), int(high)))

    def matches(self, hostname: str) -> bool:
        if self.wildcard:
            return False
        if hostname in self.names:
            return True
        for prefix, width, low, high in self.ranges:
            if len(hostname) == len(prefix) + width and hostname.startswith(prefix):
                digits = hostname[len(prefix):]
                if digits.isdigit() and digits.isascii() and low <= int(digits) <= high:
                    return True
        return False


def _split_terms(expression: str) -> list[str]:
    """Split on commas outside brackets."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(expression):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(expression[start:i].strip())
            start = i + 1
    terms.append(expression[start:].strip())
    return terms


def _host_topology(sub: SubClusterView) -> HostTopology:
    topo = sub.topology or TopologyView()
    cores = tuple(tuple(core) for core in (topo.core or ()))
    sockets = topo.socket or []
    cores_per_socket = len(cores)
    if sockets and cores:
        first_socket = set(sockets[0])
        in_first = sum(1 for core in cores if core and core[0] in first_socket)
        cores_per_socket = in_first or max(1, len(cores) // len(sockets))
    accelerators = tuple(a.id for a in (topo.accelerators or ()))
    return HostTopology(sub.name, cores, cores_per_socket, accelerators)


class Topology:
    """Per-cluster list of (node list, topology), looked up by hostname with a cache."""

    def __init__(self, clusters: dict[str, list[tuple[NodeList, HostTopology]]]):
        self._clusters = clusters
        self._cache: dict[tuple[str, str], HostTopology | None] = {}

    @property
    def cluster_names(self) -> list[str]:
        return list(self._clusters)

    def lookup(self, cluster: str, hostname: str) -> HostTopology | None:
        key = (cluster, hostname)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        subs = self._clusters.get(cluster, ())
        for node_list, host in subs:
            if node_list.matches(hostname):
                found = host
                break
        else:
            if subs and subs[0][0].wildcard:
                found = subs[0][1]
        if len(self._cache) >= _LOOKUP_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found


def parse_clusters(body: bytes | str) -> Topology:
    """Parse `GET /api/clusters/`; raises ValueError when the answer does not decode.

    A sub-cluster whose node list breaks the grammar matches no hostname (cc-backend itself
    would not have started with it)."""
    try:
        answer = _ANSWER.decode(body)
    except msgspec.DecodeError as e:
        raise ValueError(f"cluster list from cc-backend does not decode: {e}") from None
    clusters: dict[str, list[tuple[NodeList, HostTopology]]] = {}
    for cluster in answer.clusters:
        entries = clusters.setdefault(cluster.name, [])
        for sub in cluster.sub_clusters:
            try:
                node_list = NodeList(sub.nodes)
            except ValueError:
                node_list = NodeList("")  # the server refuses such a list; match nothing
            entries.append((node_list, _host_topology(sub)))
    return Topology(clusters)
