"""Views of slurmctld's live JSON, `squeue --json` (22.05) and `scontrol show job --json` (23.02+)
jobs[]: only the fields we use, with the types and normalisers of actors/slurm_views.py.

job_resources comes in shape 1 (22.05-23.11, objects keyed by index strings, allocated cores only)
or shape 2 (24.05+, lists with `index` and status lists), `{}`, null or absent: both shapes decode
into the one `JobResources` view, and translate_resources.py walks whichever part is filled in.
"""

from __future__ import annotations

import msgspec

from actors.slurm_views import ExitSignal, Meta, SlurmInt, StrOrList


class CoreV2(msgspec.Struct, gc=False):
    index: SlurmInt = None
    status: StrOrList = None


class SocketV2(msgspec.Struct, gc=False):
    index: SlurmInt = None
    cores: list[CoreV2] | None = None


class NodeV2(msgspec.Struct, gc=False):
    index: SlurmInt = None
    name: str | None = None
    sockets: list[SocketV2] | None = None


class NodesV2(msgspec.Struct, gc=False):
    allocation: list[NodeV2] | None = None


class SocketV1(msgspec.Struct, gc=False):
    cores: dict[str, StrOrList] | None = None


class NodeV1(msgspec.Struct, gc=False):
    nodename: str | None = None
    sockets: dict[str, SocketV1] | None = None


class JobResources(msgspec.Struct, gc=False):
    """Shape 1 fills `allocated_nodes` (and `nodes` is a hostlist string); shape 2 fills
    `nodes.allocation`. `{}` decodes with everything None."""

    nodes: str | NodesV2 | None = None
    allocated_nodes: list[NodeV1] | None = None
    threads_per_core: SlurmInt = None


class LiveExit(msgspec.Struct, gc=False):
    """squeue's exit_code when it is an object: the v0.0.39 no-value object of the raw wait
    status (23.02.4+) or obj B (v0.0.40+). Both decode here; 22.05 prints a plain int."""

    set: bool | None = None
    infinite: bool | None = None
    number: int | float | None = None
    status: StrOrList = None
    return_code: SlurmInt = None
    signal: ExitSignal | None = None


class LiveJob(msgspec.Struct, gc=False):
    job_id: int
    job_state: StrOrList = None
    start_time: SlurmInt = None
    exit_code: int | float | str | LiveExit | None = None
    job_resources: JobResources | None = None
    gres_detail: list[str] | None = None
    comment: str | None = None
    shared: StrOrList = None  # str/null in 22.05, [str] 23.02+, always [] in 26.05
    exclusive: str | list[str] | bool | None = None  # [str] in 23.02-24.05 only
    # what a sacct placeholder record lacks (translate_placeholder.py)
    name: str | None = None
    partition: str | None = None
    qos: str | None = None
    nodes: str | None = None
    node_count: SlurmInt = None
    time_limit: SlurmInt = None  #: minutes
    current_working_directory: str | None = None
    cpus: SlurmInt = None


class LiveDocument(msgspec.Struct, gc=False):
    jobs: list[LiveJob]
    meta: Meta | None = None


class LiveRawDocument(msgspec.Struct, gc=False):
    jobs: list[msgspec.Raw]
    meta: Meta | None = None


# One decoder per shape, built once and reused (docs/perf-tips.rst).
LIVE_DOCUMENT = msgspec.json.Decoder(LiveDocument)
LIVE_RAW_DOCUMENT = msgspec.json.Decoder(LiveRawDocument)
LIVE_JOB = msgspec.json.Decoder(LiveJob)
