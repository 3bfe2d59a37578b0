"""`sinfo --json` of any release 22.05-26.05 -> the body of cc-backend's POST /api/nodestate/.

Two shapes (slurm-json-across-releases.md §4):

* 22.05 prints one record per node in `nodes[]`: `name`, lower-case `state` ("idle") plus
  `state_flags` (["DRAIN"]), and the node's own `alloc_cpus`, `alloc_memory` and `gres_used`.
  `scontrol show nodes --json` of later releases has the same shape with `state` as a list.
* 23.02+ print `sinfo[]` groups: nodes of one partition (`nodes.nodes`, a list) with the group's
  `node.state` list and totals (`cpus.allocated`, `memory.allocated`). Nodes whose allocations
  differ land in groups of their own (seen live on 24.11: two MIXED nodes, two groups), so the
  totals are usually one node's. A total is divided by the group's node count (integer
  division), as the original adapter does for CPUs; memory too, where the original sent the
  group total for every node. A node in several partitions keeps the figures of its smallest
  group. `gres.used` is one node's string, never divided.

cc-backend decodes strictly (cc-backend-contract.md §10.1), so the body names exactly its keys.
States are Slurm's words upper-cased, state before flags, each once: cc-backend collapses them
to one scheduler state itself. jobsRunning is 0: sinfo does not say how many jobs run on a node.
"""

from __future__ import annotations

import re

import msgspec

from actors.errors import SlurmError
from actors.slurm_views import NO_VAL32, SlurmInt, StrOrList, expand_hostlist, int_value

#: 2**63: no plain int this large is a count; Slurm's 64-bit sentinels (NO_VAL64 ...) are above it.
INT64_LIMIT = 2**63
#: `gpu:N` or `gpu:TYPE:N` at the start of a gres_used entry; the `(IDX:0,2)` tail is ignored.
_GPU_ENTRY = re.compile(r"(?:^|,)\s*gpu(?::[^:,()]*)?:(\d+)")


# ------------------------------------------------------------------------------ views

class NodeRecord(msgspec.Struct, gc=False):
    """22.05 `sinfo --json` nodes[] (and `scontrol show nodes --json` of any release)."""

    name: str | None = None
    state: StrOrList = None
    state_flags: StrOrList = None
    alloc_cpus: SlurmInt = None
    alloc_memory: SlurmInt = None  #: MB
    gres_used: str | None = None


class GroupState(msgspec.Struct, gc=False):
    state: StrOrList = None


class GroupNodes(msgspec.Struct, gc=False):
    nodes: list[str] | str | None = None  #: a list; a hostlist string is expanded too


class GroupAllocated(msgspec.Struct, gc=False):
    allocated: SlurmInt = None  #: sum over the group's nodes (CPUs, or MB)


class GroupGres(msgspec.Struct, gc=False):
    used: str | None = None


class SinfoGroup(msgspec.Struct, gc=False):
    """23.02+ `sinfo --json` sinfo[]."""

    node: GroupState | None = None
    nodes: GroupNodes | None = None
    cpus: GroupAllocated | None = None
    memory: GroupAllocated | None = None
    gres: GroupGres | None = None


class SlurmMessage(msgspec.Struct, gc=False):
    description: str | None = None
    error: str | None = None


class SinfoDocument(msgspec.Struct, gc=False):
    sinfo: list[SinfoGroup] | None = None  #: 23.02+
    nodes: list[NodeRecord] | None = None  #: 22.05
    errors: list[SlurmMessage | str] | None = None


# ------------------------------------------------------------------------------ body

class NodeState(msgspec.Struct, kw_only=True, gc=False, rename="camel"):
    hostname: str
    states: list[str]
    cpus_allocated: int
    memory_allocated: int  #: MB
    gpus_allocated: int
    jobs_running: int = 0


class NodeStateBody(msgspec.Struct, kw_only=True, gc=False):
    cluster: str
    nodes: list[NodeState]


SINFO_DOCUMENT = msgspec.json.Decoder(SinfoDocument)
ENCODER = msgspec.json.Encoder()


def nodestate_body(sinfo_json: bytes, cluster: str, ignore_hosts: re.Pattern | None) -> bytes:
    """The POST /api/nodestate/ body for `cluster`: one entry per node in first-seen order, nodes
    matching `ignore_hosts` (re.search) left out. Raises SlurmError when this is not sinfo JSON."""
    try:
        document = SINFO_DOCUMENT.decode(sinfo_json)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise SlurmError(f"not a sinfo --json document: {e}") from None
    if document.sinfo is None and document.nodes is None:
        raise SlurmError("not a sinfo --json document: neither sinfo[] (23.02+) nor nodes[] (22.05)"
                         + _errors_text(document.errors))
    if not document.sinfo and not document.nodes and document.errors:
        raise SlurmError("sinfo --json listed no nodes" + _errors_text(document.errors))

    found: dict[str, list] = {}  # hostname -> [states, group size, cpus, memory MB, gpus]
    for record in document.nodes or ():
        if record.name:
            _merge(found, record.name, (record.state, record.state_flags), 1,
                   _count(record.alloc_cpus), _count(record.alloc_memory, wide=True),
                   gpus_in_use(record.gres_used))
    for group in document.sinfo or ():
        hosts = _group_hosts(group.nodes)
        if not hosts:
            continue
        size = len(hosts)
        cpus = _count(group.cpus.allocated if group.cpus else None) // size
        memory = _count(group.memory.allocated if group.memory else None, wide=True) // size
        gpus = gpus_in_use(group.gres.used if group.gres else None)
        for host in hosts:
            _merge(found, host, (group.node.state if group.node else None,), size, cpus, memory, gpus)

    nodes = [NodeState(hostname=host, states=states, cpus_allocated=cpus, memory_allocated=memory,
                       gpus_allocated=gpus)
             for host, (states, _size, cpus, memory, gpus) in found.items()
             if ignore_hosts is None or not ignore_hosts.search(host)]
    return ENCODER.encode(NodeStateBody(cluster=cluster, nodes=nodes))


def gpus_in_use(gres_used: str | None) -> int:
    """GPUs in use from a gres_used string: `gpu:a100:2(IDX:0-1),gpu:v100:1(IDX:3)` -> 3,
    `gpu:fake:0(IDX:N/A)` -> 0; other GRES (shard, gpumem, ...) and unset -> 0."""
    if not gres_used:
        return 0
    total = sum(int(count) for count in _GPU_ENTRY.findall(gres_used))
    return total if total < INT64_LIMIT else 0


def _merge(found: dict, host: str, state_fields: tuple, size: int, cpus: int, memory: int, gpus: int):
    entry = found.get(host)
    if entry is None:
        entry = found[host] = [[], size, cpus, memory, gpus]
    elif size < entry[1]:  # a smaller group's average is closer to this node's own figures
        entry[1:] = [size, cpus, memory, gpus]
    states = entry[0]
    for field in state_fields:
        for word in [field] if type(field) is str else field or ():
            word = word.strip().upper()
            if word and word not in states:
                states.append(word)


def _group_hosts(nodes: GroupNodes | None) -> list[str]:
    listed = nodes.nodes if nodes else None
    if type(listed) is str:
        try:
            return expand_hostlist(listed)
        except ValueError as e:
            raise SlurmError(f"sinfo --json: bad node list {listed!r}: {e}") from None
    return list(dict.fromkeys(host for host in listed or () if host))


def _count(value: SlurmInt, wide: bool = False) -> int:
    """A Slurm counter as a non-negative int; 0 when unset, infinite, a sentinel or garbage.
    `wide`: a 64-bit field (memory in MB), whose plain sums may pass Slurm's 32-bit NO_VAL."""
    if wide and type(value) is int and NO_VAL32 <= value < INT64_LIMIT:
        return value
    number = int_value(value)
    return number if number is not None and 0 < number < INT64_LIMIT else 0


def _errors_text(errors: list | None) -> str:
    texts = [e if type(e) is str else (e.description or e.error or "") for e in errors or ()]
    texts = [t for t in texts if t]
    return f"; Slurm says: {'; '.join(texts)}" if texts else ""
