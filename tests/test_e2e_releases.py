"""The same job mix on Slurm 22.05, 24.11 and 26.05 (one code path) reaches cc-backend exactly once, and
the bodies the adapter sent are the same on every release apart from ids, times and host choices."""

import json
import os

import pytest

from actors.outbox import Outbox
from tests.bench.ccbackend import CcBackend
from tests.bench.slurm import SlurmSandbox
from tests.conftest import service_unavailable
from tests.support import Daemon, free_port_base, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

RELEASES = ("22.05", "24.11", "26.05")
#: Each job runs longer than a poll interval, so that every release's first look at it is while it
#: runs (a job first seen finished has lost its per-core detail on 22.05, which is not a release trait).
JOB_MIX = {
    "completed": ["-c", "2", "--wrap", "sleep 6"],
    "failed": ["--wrap", "sleep 6; exit 3"],
    "multinode": ["-N", "2", "--wrap", "srun hostname; sleep 6"],
    "gpu": ["--gres=gpu:fake:1", "--wrap", "sleep 6"],
    "testuser": ["--wrap", "sleep 6"],
}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
#: What differs between two runs of the same job by nature: ids, times, the scheduler's host choice.
VARYING_META = ("submitTime", "slurmInfo")


def comparable(start: dict, stop: dict) -> dict:
    meta = {k: v for k, v in start["metaData"].items() if k not in VARYING_META}
    resources = [{"hwthreads": len(r.get("hwthreads", [])), "accelerators": len(r.get("accelerators", []))}
                 for r in start["resources"]]
    kept = {k: v for k, v in start.items() if k not in ("jobId", "startTime", "resources", "metaData")}
    return {**kept, "metaData": meta, "resources": resources, "stop": stop["jobState"]}


def run_job_mix(release: str, tmp_path) -> dict:
    """Starts a sandbox of `release`, cc-backend and the daemon; returns case -> comparable body."""
    sandbox = SlurmSandbox(release, directory=f"/tmp/ccsa-slurm-{release}-m{os.getpid()}",
                           port_base=free_port_base())
    backend = CcBackend()
    daemon = None
    try:
        try:
            sandbox.start()
            backend.start()
        except Exception as e:  # noqa: BLE001
            service_unavailable(f"Slurm {release} or cc-backend", e)
        config = write_config(tmp_path, ccRestUrl=backend.url, ccRestJwt=backend.jwt, slurmPollInterval=2)
        daemon = Daemon(config, tmp_path / "daemon.log", env=sandbox.env()).start()
        daemon.wait_all_running()
        ids = {case: sandbox.sbatch(*args, user="testuser" if case == "testuser" else None)
               for case, args in JOB_MIX.items()}
        for job_id in ids.values():
            sandbox.wait_for_state(job_id, FINAL, timeout=120)
        jobs = backend.wait_for_jobs(lambda jobs: sum(j["jobId"] in ids.values() and j["jobState"] != "running"
                                                      for j in jobs) == len(ids), timeout_s=180)
        for case, job_id in ids.items():
            assert [j["jobId"] for j in jobs].count(job_id) == 1, f"{release} {case}: not exactly once"
        outbox = Outbox(str(tmp_path / "state" / "outbox.sqlite3"), readonly=True)
        bodies = {}
        for case, job_id in ids.items():
            rows = {r.event: json.loads(r.body) for r in outbox.rows(job_id=job_id)}
            assert all(r.state == "delivered" for r in outbox.rows(job_id=job_id)), f"{release} {case}"
            bodies[case] = comparable(rows["start_job"], rows["stop_job"])
        outbox.close()
        return bodies
    finally:
        if daemon is not None:
            daemon.stop()
        backend.stop()
        sandbox.clean()


def test_the_same_job_mix_gives_the_same_bodies_on_22_05_24_11_and_26_05(tmp_path):
    results = {release: run_job_mix(release, tmp_path / release.replace(".", "")) for release in RELEASES}
    reference = results["22.05"]
    assert reference["failed"]["stop"] == "failed" and reference["completed"]["stop"] == "completed"
    assert reference["multinode"]["numNodes"] == 2 and reference["gpu"]["numAcc"] == 1
    assert reference["testuser"]["user"] == "testuser" and reference["testuser"]["project"] == "projecta"
    for release in ("24.11", "26.05"):
        for case in JOB_MIX:
            assert results[release][case] == reference[case], f"{case} on {release} differs from 22.05"
