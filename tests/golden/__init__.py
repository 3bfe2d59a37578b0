"""Expected cc-backend bodies for every real Slurm fixture, and what they were made from.

`<release>/<name>.json` holds, for `fixtures/slurm-<release>/sacct-json-<name>.json`, the live
record file used with it ("live", or null) and per job of the sacct document what the translator
must produce: "start"/"stop" bodies exactly as sent, "skip" (reason) or "quarantine" ([path,
error]). Every body was checked by hand against the case table in fixtures/slurm-22.05/README.md,
`sacct -P` (sacct-P-*.txt) and `scontrol show job` text of the same release; see README.md here.
"""

from __future__ import annotations

import json
import os

GOLDEN = os.path.dirname(os.path.abspath(__file__))
#: The real Slurm outputs live in the shared/ folder beside the checkout (CCSA_FIXTURES overrides).
FIXTURES = os.environ.get("CCSA_FIXTURES") or os.path.normpath(os.path.join(GOLDEN, "..", "..", "..", "shared", "fixtures"))
RELEASES = ("22.05", "24.11", "26.05")

#: The cluster cc-backend serves in the test bench (scripts/cc-backend `write_cluster`), as
#: GET /api/clusters/ answers it: one sub-cluster n[1-3], 1 socket x 4 cores, no SMT, 2 GPUs.
SANDBOX_CLUSTERS = {"clusters": [{"name": "testcluster", "subClusters": [{
    "name": "main", "nodes": "n[1-3]",
    "topology": {
        "node": [0, 1, 2, 3], "socket": [[0, 1, 2, 3]], "memoryDomain": [[0, 1, 2, 3]],
        "core": [[0], [1], [2], [3]],
        "accelerators": [
            {"id": "00000000:01:00.0", "type": "Nvidia GPU", "model": "Sandbox GPU"},
            {"id": "00000000:02:00.0", "type": "Nvidia GPU", "model": "Sandbox GPU"},
        ],
    },
}]}]}


def fixture_path(release: str, name: str) -> str:
    return os.path.join(FIXTURES, f"slurm-{release}", name)


def fixture_bytes(release: str, name: str) -> bytes:
    with open(fixture_path(release, name), "rb") as f:
        return f.read()


def golden_names(release: str) -> list[str]:
    return sorted(n[:-5] for n in os.listdir(os.path.join(GOLDEN, release)) if n.endswith(".json"))


def load_golden(release: str, name: str) -> dict:
    with open(os.path.join(GOLDEN, release, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def case_ids(release: str) -> dict[str, int]:
    """cases.tsv: case name -> job id."""
    ids = {}
    with open(fixture_path(release, "cases.tsv"), encoding="utf-8") as f:
        for line in f:
            case, job_id, *_ = line.rstrip("\n").split("\t")
            ids[case] = int(job_id)
    return ids
