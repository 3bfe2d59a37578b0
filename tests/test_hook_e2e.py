"""The hook path on real Slurm: slurmctld's prolog/epilog call our hook client, and a job reaches the
real cc-backend without waiting for a poll (slurmPollInterval is an hour here)."""

import socket
import subprocess
import sys

import pytest

from actors.outbox import Outbox
from tests.support import REPO, adapter_command, python_env, wait_for, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]


def hook_client_executable(tmp_path) -> str:
    """What etc/hook.sh runs as the adapter: this checkout's hook client under this interpreter."""
    path = tmp_path / "cc-slurm-adapter"
    path.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m actors.cli \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def test_start_and_stop_arrive_through_the_hook_without_a_poll(daemon, slurm, cc_backend, tmp_path):
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt,
               slurmPollInterval=3600, slurmQueryDelay=1)
    d.start()
    d.wait_all_running()
    slurm.set_hook_target(hook_client_executable(tmp_path), d.config_path)
    try:
        job_id = slurm.sbatch("--wrap", "sleep 15")  # outlives cc-backend's 5 s commit interval
        running = cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == job_id for j in jobs), timeout_s=60)
        assert [j["jobState"] for j in running if j["jobId"] == job_id] == ["running"]
        done = cc_backend.wait_for_jobs(
            lambda jobs: any(j["jobId"] == job_id and j["jobState"] == "completed" for j in jobs), timeout_s=60)
        assert [j["jobId"] for j in done].count(job_id) == 1
        log = d.log_text()
        assert f"job {job_id}@testcluster: prolog_slurmctld event (hook)" in log
        assert f"job {job_id}@testcluster: epilog_slurmctld event (hook)" in log
        polls = [line for line in log.splitlines() if "slurm_querier" in line and ": poll " in line]
        assert len(polls) == 1, "only the poll at start-up; the job came through the hook"
    finally:
        slurm.set_hook_target(None)


def came_through_the_hook(state_dir, job_ids) -> bool:
    """Every job's start and stop went to cc-backend once each and cc-backend said yes to both, and the
    querier found the job through hook nudges only (a poll would show as the job's last source)."""
    outbox = Outbox(str(state_dir / "outbox.sqlite3"), readonly=True)
    try:
        for job_id in job_ids:
            rows = sorted((r.event, r.state) for r in outbox.rows(job_id=job_id, sink="rest"))
            seen = [s.last_source for s in outbox.seen(None, job_id)]
            if rows != [("start_job", "delivered"), ("stop_job", "delivered")] or seen != ["hook"]:
                return False
        return True
    finally:
        outbox.close()


def listed_once(cc_backend, job_ids) -> list:
    """cc-backend's job list once it shows every job (after its commit interval); each exactly once."""
    jobs = cc_backend.wait_for_jobs(lambda jobs: all(any(x["jobId"] == j for x in jobs) for j in job_ids), timeout_s=60)
    assert [sum(x["jobId"] == j for x in jobs) for j in job_ids] == [1] * len(job_ids)
    return jobs


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tcp_listener_takes_the_events_of_the_primary_and_the_backup_slurmctld(daemon, slurm, cc_backend, tmp_path):
    # Given a daemon listening on tcp, its one poll behind it, and two jobs that ran with the hook off
    address = f"tcp:127.0.0.1:{free_tcp_port()}"
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt, slurmPollInterval=3600,
               prepSockListenPath=address, prepSockConnectPath=address)
    d.start()
    d.wait_all_running()
    wait_for(lambda: "batches to the translator" in d.log_text(), 30, message="the daemon's first poll")
    slurm.set_hook_target(None)
    job_ids = [slurm.sbatch("--wrap", "true") for _ in range(2)]
    states = [slurm.wait_for_state(j, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120) for j in job_ids]
    assert states == ["COMPLETED"] * 2

    # When the primary slurmctld host and the backup host each run the hook client for one job's end,
    # at the same time, each with its own config and state directory
    clients = []
    for host, job_id in zip(("primary", "backup"), job_ids):
        config = write_config(tmp_path / host, prepSockConnectPath=address)
        env = {k: v for k, v in python_env().items() if not k.startswith("SLURM_")}
        env.update(SLURM_JOB_ID=str(job_id), SLURM_CLUSTER_NAME="testcluster", SLURM_SCRIPT_CONTEXT="epilog_slurmctld")
        clients.append(subprocess.Popen(adapter_command("-config", config), env=env, cwd=REPO, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [(c.wait(30), c.stderr.read()) for c in clients]

    # Then both were acknowledged (exit 0, nothing said, nothing spooled) and both jobs arrived through the hook
    assert results == [(0, ""), (0, "")]
    spools = [tmp_path / host / "state" / "hook-spool.jsonl" for host in ("primary", "backup")]
    assert [spool.exists() for spool in spools] == [False, False]
    log = d.log_text()
    assert [f"job {j}@testcluster: epilog_slurmctld event (hook)" in log for j in job_ids] == [True, True]
    wait_for(lambda: came_through_the_hook(tmp_path / "state", job_ids), 60, 0.5, "both jobs delivered")
    listed_once(cc_backend, job_ids)
