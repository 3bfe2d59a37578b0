"""Daemon down while real jobs start and end: slurmctld's prolog and epilog still run our hook client,
every run exits 0, the jobs run to completion, and once the daemon starts the spooled events bring
the jobs to the real cc-backend, exactly once."""

import sys
import time

import msgspec
import pytest

from actors.messages import HookEvent
from tests.support import REPO, wait_for
from tests.test_hook_e2e import came_through_the_hook, listed_once

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

JOBS = 3
CONTEXTS = ("prolog_slurmctld", "epilog_slurmctld")


def recording_hook_client(tmp_path, record) -> str:
    """What etc/hook.sh runs as the adapter: this checkout's hook client, writing down each run's exit status
    (etc/hook.sh itself always exits 0, so its status would say nothing)."""
    path = tmp_path / "cc-slurm-adapter"
    path.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} {sys.executable} -m actors.cli \"$@\"\nstatus=$?\n"
                    f"echo \"$SLURM_JOB_ID $SLURM_SCRIPT_CONTEXT $status\" >> {record}\nexit $status\n")
    path.chmod(0o755)
    return str(path)


def read_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_events_spooled_while_the_daemon_is_down_bring_the_jobs_once_it_starts(daemon, slurm, cc_backend, tmp_path):
    # Given a daemon that is configured but not running; when it starts, its one poll reads only the
    # last second (slurmQueryMaxSpan 1) and the next is an hour away: only the spool can bring the jobs
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt, slurmPollInterval=3600,
               slurmQueryDelay=1, slurmQueryMaxSpan=1)
    record = tmp_path / "hook-exits.txt"
    slurm.set_hook_target(recording_hook_client(tmp_path, record), d.config_path)
    try:
        # When real jobs start and end
        job_ids = [slurm.sbatch("--wrap", "sleep 1") for _ in range(JOBS)]
        # Then they run to completion, and every prolog and epilog hook exits 0 having spooled its event
        assert [slurm.wait_for_state(j, {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"}, timeout=120)
                for j in job_ids] == ["COMPLETED"] * JOBS
        wait_for(lambda: len(read_lines(record)) >= 2 * JOBS, 60, message="every prolog and epilog hook")
        assert sorted(read_lines(record)) == sorted(f"{j} {c} 0" for j in job_ids for c in CONTEXTS)
        spool = tmp_path / "state" / "hook-spool.jsonl"
        spooled = [msgspec.json.decode(line, type=HookEvent) for line in spool.read_bytes().splitlines()]
        assert sorted((int(e.job_id), e.context) for e in spooled) == sorted((j, c) for j in job_ids for c in CONTEXTS)
        time.sleep(2)  # the jobs' ends now lie before the window of the daemon's first poll

        # When the daemon starts
        d.start()
        d.wait_all_running()

        # Then the replayed events bring every job to cc-backend, start and stop, exactly once
        wait_for(lambda: f"replayed {2 * JOBS} spooled hook events" in d.log_text(), 30, message="the replay")
        log = d.log_text()
        assert [f"job {j}@testcluster: epilog_slurmctld event (spool)" in log for j in job_ids] == [True] * JOBS
        wait_for(lambda: came_through_the_hook(tmp_path / "state", job_ids), 60, 0.5, "every job delivered")
        listed_once(cc_backend, job_ids)
        polls = wait_for(lambda: [line for line in d.log_text().splitlines() if ": poll " in line], 30,
                         message="the daemon's first poll")
        assert polls[0].endswith(": 0 batches to the translator"), "the poll found none of the jobs"
        assert came_through_the_hook(tmp_path / "state", job_ids), "and it changed nothing"
        assert not spool.exists() and not (tmp_path / "state" / "hook-spool.jsonl.replaying").exists()
    finally:
        slurm.set_hook_target(None)
