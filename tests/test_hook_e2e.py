"""The hook path on real Slurm: slurmctld's prolog/epilog call our hook client, and a job reaches the
real cc-backend without waiting for a poll (slurmPollInterval is an hour here)."""

import sys

import pytest

from tests.support import REPO

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
