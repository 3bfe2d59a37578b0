"""The request bodies cc-backend v1.5 accepts, with its exact JSON key names.

cc-backend decodes strictly (cc-backend-contract.md §3): an unknown key is a 400, so these
Structs name only keys of cc-lib's `schema.Job` (start, §5.1) and of the stop request (§6.1).
`omit_defaults` drops the optional keys whose value is empty: partition, walltime, arrayJobId,
a resource's hwthreads/accelerators and the optional metaData entries. Fields without a default
are always written.
"""

from __future__ import annotations

import msgspec

#: cc-backend v1.5's JobState enum (cc-lib); anything else in a stop is a 400.
JOB_STATES = frozenset((
    "boot_fail", "cancelled", "completed", "deadline", "failed", "node_fail", "out_of_memory",
    "pending", "preempted", "running", "suspended", "timeout",
))
#: cc-backend v1.5's `shared` values; anything else is a 500 from a CHECK constraint.
SHARED_VALUES = frozenset(("none", "single_user", "multi_user"))

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class Resource(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    hostname: str
    hwthreads: list[int] | None = None  #: OS hardware thread ids
    accelerators: list[str] | None = None  #: PCI addresses (or ids from the cluster topology)


class JobMeta(msgspec.Struct, omit_defaults=True, gc=False, rename="camel"):
    """`metaData`: a string -> string map on the server; every value here is a string."""

    job_name: str
    submit_time: str  #: unix s as decimal text (top-level submitTime is dropped by cc-backend)
    slurm_info: str  #: short scontrol-like text
    job_script: str = ""
    slurm_state: str = ""  #: Slurm's own state word, e.g. "REQUEUED" when jobState had to map it
    exit_code: str = ""  #: "exit:signal" like sacct's ExitCode, e.g. "1:0", "0:15"


class StartJob(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False, rename="camel"):
    """POST /api/jobs/start_job/ (and the NATS start_job event)."""

    job_id: int
    user: str
    project: str
    cluster: str
    sub_cluster: str  #: always "": cc-backend derives it from resources[0].hostname
    partition: str = ""
    shared: str  #: none | single_user | multi_user
    num_nodes: int
    num_hwthreads: int
    num_acc: int
    walltime: int = 0  #: s; 0 = unlimited/unknown
    array_job_id: int = 0
    start_time: int  #: unix s
    resources: list[Resource]
    meta_data: JobMeta


class StopJob(msgspec.Struct, kw_only=True, gc=False, rename="camel"):
    """POST /api/jobs/stop_job/; startTime picks the right run of a requeued job."""

    job_id: int
    cluster: str
    start_time: int
    job_state: str
    stop_time: int
