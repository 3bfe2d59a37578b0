"""What the mapping needs beyond the Slurm records: the config's gpuPciAddrs and ignoreHosts,
cc-backend's cluster topology, and caches of what every job on the same hosts shares."""

from __future__ import annotations

import re

from actors.cc_bodies import Resource
from actors.slurm_views import expand_hostlist
from actors.topology import HostTopology, Topology

#: Entries per cache before it is emptied (hosts, hostlists, TRES lists).
CACHE_MAX = 16384


class TranslateContext:
    """What the mapping needs beyond the records, plus per-host caches."""

    __slots__ = ("topology", "gpu_pci_addrs", "ignore_hosts", "_hosts", "_resources", "tres_cache")

    def __init__(self, topology: Topology | None = None,
                 gpu_pci_addrs: list[tuple[re.Pattern, list[str]]] | None = None,
                 ignore_hosts: re.Pattern | None = None):
        self.topology = topology
        self.gpu_pci_addrs = list(gpu_pci_addrs or ())
        self.ignore_hosts = ignore_hosts
        self._hosts: dict[tuple[str, str], tuple[bool, list[str] | None, HostTopology | None]] = {}
        self._resources: dict[tuple[str, str], list[Resource]] = {}
        #: allocated TRES bytes -> (cpus, gpus, text): jobs of one shape share the answer
        self.tres_cache: dict[bytes, tuple[int | None, int | None, str]] = {}

    @classmethod
    def from_config(cls, config, topology: Topology | None = None) -> TranslateContext:
        """From actors.config.Config: gpuPciAddrs in file order, ignoreHosts compiled."""
        pci = [(re.compile(pattern), list(ids)) for pattern, ids in config.gpu_pci_addrs.items()]
        ignore = re.compile(config.ignore_hosts) if config.ignore_hosts else None
        return cls(topology, pci, ignore)

    def host(self, cluster: str, hostname: str) -> tuple[bool, list[str] | None, HostTopology | None]:
        """(ignored, PCI ids from the first matching gpuPciAddrs regex, topology) for a host."""
        key = (cluster, hostname)
        found = self._hosts.get(key)
        if found is None:
            ignored = self.ignore_hosts is not None and self.ignore_hosts.search(hostname) is not None
            pci = next((ids for pattern, ids in self.gpu_pci_addrs if pattern.search(hostname)), None)
            topo = self.topology.lookup(cluster, hostname) if self.topology is not None else None
            found = (ignored, pci, topo)
            if len(self._hosts) >= CACHE_MAX:
                self._hosts.clear()
            self._hosts[key] = found
        return found

    def plain_resources(self, cluster: str, nodes: str) -> list[Resource]:
        """Resources for a sacct `nodes` hostlist (no per-node detail), ignored hosts dropped."""
        key = (cluster, nodes)
        found = self._resources.get(key)
        if found is None:
            found = [Resource(hostname=h) for h in expand_hostlist(nodes) if not self.host(cluster, h)[0]]
            if len(self._resources) >= CACHE_MAX:
                self._resources.clear()
            self._resources[key] = found
        return list(found)
