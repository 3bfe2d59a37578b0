"""`resources[]` of a start body from slurmctld's live record: per node its hostname, the hardware
threads of the cores Slurm allocated there, and the GPUs its GRES names.

cc-slurm-adapter-spec.md §3.4 with the fixes of §13 and of the translator issue: hardware-thread
ids through cc-backend's topology (SMT siblings included; the original's socket x core numbering
only without a topology), GPU ids from the GRES indices through the first matching gpuPciAddrs
regex in config order (else the topology's accelerators), and a job comment only when every
part of it is a PCI address. job_resources comes in two shapes (slurm-json-across-releases.md
§3.1); each is read into the same (hostname, index, cores) rows, and one loop makes the resources.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from actors.cc_bodies import Resource
from actors.slurm_live_views import LiveJob, NodesV2, NodeV1, NodeV2
from actors.slurm_views import int_value
from actors.topology import HostTopology
from actors.translate_context import TranslateContext

_GRES_GPU = re.compile(r"(?:^|,)gpu(?::[^:(),]+)?(?::\d+)?(?:\(S:[^)]*\))?\(IDX:([0-9,\-]+)\)")
_PCI_ADDRESS = re.compile(r"[0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}\.[0-7]")
#: A GRES index range wider than this is garbage, not GPUs.
MAX_GRES_RANGE = 1024

#: One allocated node: hostname, its position in gres_detail, allocated (socket, core) pairs, and
#: Slurm's cores per socket (0 when unknown).
NodeCores = tuple[str, int, list[tuple[int, int]], int]


def live_resources(live: LiveJob, cluster: str, ctx: TranslateContext) -> list[Resource] | None:
    """One resource per allocated node of job_resources (either shape), ignored hosts dropped;
    None when the live record has no node detail."""
    res = live.job_resources
    if res is None:
        return None
    nodes = res.nodes
    if type(nodes) is NodesV2 and nodes.allocation:
        listed, allocation = len(nodes.allocation), list(_shape2_nodes(nodes.allocation))
    elif res.allocated_nodes:
        listed, allocation = len(res.allocated_nodes), list(_shape1_nodes(res.allocated_nodes))
    else:
        return None
    if len(allocation) < listed:  # a node without a usable name: the detail is damaged, sacct's hostlist is not
        return None
    gres = live.gres_detail or ()
    comment_ids = pci_comment(live.comment)
    resources = []
    for hostname, index, cores, per_socket in allocation:
        ignored, pci, topo = ctx.host(cluster, hostname)
        if ignored:
            continue
        detail = gres[index] if 0 <= index < len(gres) else None
        resources.append(_resource(hostname, cores, per_socket, topo, pci, detail, comment_ids))
    return resources


def _shape2_nodes(allocation: list[NodeV2]) -> Iterator[NodeCores]:
    """Shape 2 (v0.0.41+): sockets and cores are lists with `index`; a core counts when its
    status says ALLOCATED."""
    for position, node in enumerate(allocation):
        hostname = node.name if type(node.name) is str else ""
        if not hostname:
            continue
        index = int_value(node.index)
        cores = []
        per_socket = 0
        for socket in node.sockets or ():
            socket_index = int_value(socket.index) or 0
            core_list = socket.cores or ()
            if not per_socket:
                per_socket = len(core_list)
            for core in core_list:
                status = core.status
                if status == "ALLOCATED" or (type(status) is list and "ALLOCATED" in status):
                    cores.append((socket_index, int_value(core.index) or 0))
        yield hostname, position if index is None else index, cores, per_socket


def _shape1_nodes(allocated_nodes: list[NodeV1]) -> Iterator[NodeCores]:
    """Shape 1 (22.05-23.11): sockets and cores are objects keyed by index strings that list
    only the allocated cores, so Slurm's cores per socket is unknown; that matters only past
    socket 0."""
    for position, node in enumerate(allocated_nodes):
        hostname = node.nodename if type(node.nodename) is str else ""
        if not hostname:
            continue
        cores = []
        for socket_key, socket in (node.sockets or {}).items():
            socket_index = int_value(socket_key)
            if socket_index is None:
                continue
            for core_key in (socket.cores or {}):
                core_index = int_value(core_key)
                if core_index is not None:
                    cores.append((socket_index, core_index))
        yield hostname, position, cores, 0 if any(s for s, _ in cores) else 1


def _resource(hostname: str, cores: list[tuple[int, int]], slurm_per_socket: int, topo: HostTopology | None,
              pci: list[str] | None, gres_detail: str | None, comment_ids: tuple[str, ...]) -> Resource:
    hwthreads = None
    if cores:
        if topo is not None and topo.core_hwthreads:
            per_socket = topo.cores_per_socket
            table = topo.core_hwthreads
            hwthreads = []
            for socket, core in sorted(cores):
                abstract = socket * per_socket + core
                if 0 <= abstract < len(table):
                    hwthreads.extend(table[abstract])
            hwthreads = hwthreads or None
        elif slurm_per_socket:
            hwthreads = sorted(socket * slurm_per_socket + core for socket, core in cores)
    accelerators = None
    if type(gres_detail) is str and "IDX:" in gres_detail:
        indices = gres_indices(gres_detail)
        if indices:
            ids = pci if pci is not None else (topo.accelerator_ids if topo is not None else ())
            accelerators = [ids[i] for i in indices if i < len(ids)] or None
    if accelerators is None and comment_ids:
        accelerators = list(comment_ids)
    return Resource(hostname=hostname, hwthreads=hwthreads, accelerators=accelerators)


def gres_indices(detail: str) -> list[int]:
    """`gpu:a100:2(IDX:0-1)` / `gpu:4(IDX:0,2-3)` / several GRES -> the GPU indices, in order."""
    indices: list[int] = []
    for match in _GRES_GPU.finditer(detail):
        for part in match.group(1).split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                continue
            first, last = int(low), int(high) if dash else int(low)
            if last - first > MAX_GRES_RANGE:
                continue
            indices.extend(range(first, last + 1))
    return list(dict.fromkeys(indices))


def pci_comment(comment) -> tuple[str, ...]:
    """The legacy NHR@FAU comment with GPU PCI ids; any other comment is free text, not GPUs."""
    if type(comment) is not str or ":" not in comment:
        return ()
    parts = [part.strip() for part in comment.split(",")]
    if all(_PCI_ADDRESS.fullmatch(part) for part in parts):
        return tuple(parts)
    return ()
