"""The fault suite, part two: Slurm and the disk fail under the running daemon (real Slurm sandbox,
real cc-backend). Malformed Slurm JSON through the live pipeline is tests/test_fault_fuzz.py.

Each test checks the same three things, in its own outage: `ccctl status` (JSON and text) and the
log name the failure, the daemon runs on (the supervisor and the very same actor processes), and
once the fault is gone every job of the test is in cc-backend exactly once (read back through its
REST API). Killed processes and cc-backend faults are tests/test_delivery_faults.py; one poisoned
job, tests/test_poison.py.
"""

import contextlib
import json
import os
import subprocess
import time

import pytest

from actors.slurm_querier import WINDOW_OVERLAP_S
from tests.fault_helpers import (
    all_in_slurmctld, assert_delivered_exactly_once, assert_runs_on, assert_slurm_failure_reported, ccctl,
    process_ids, status_text, wait_degraded, wait_healthy,
)
from tests.support import wait_for
from tests.test_delivery_faults import START, outbox_rows, start_adapter, submit, wait_caught_up, wait_rows

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]


# --- (1) and (2): a Slurm daemon stopped and started again ------------------------------------------------


def test_while_slurmctld_is_down_status_reports_it_the_daemon_runs_on_and_every_job_arrives_once_it_is_back(
        daemon, slurm, cc_backend, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    before = process_ids(d)
    # Given jobs that end during the outage and jobs that run through it, all running now
    short_jobs, long_jobs = submit(slurm, 2, seconds=5), submit(slurm, 2, seconds=20)
    wait_for(lambda: all_in_slurmctld(slurm, short_jobs + long_jobs, "RUNNING"), 60, 0.2, "the jobs running")
    # When slurmctld stops
    slurm.stop_daemon("slurmctld")
    try:
        # Then ccctl status names the failing Slurm call, and exits 1 once it lasts 3 poll intervals
        status, problem = wait_degraded(d, "Slurm: ")
        assert_slurm_failure_reported(d, status, problem)
        assert_runs_on(d, before)
    finally:
        slurm.start_daemon("slurmctld")
    # and once slurmctld is back, the report goes away and every job arrives exactly once
    wait_healthy(d)
    assert_delivered_exactly_once(cc_backend, slurm, tmp_path, short_jobs + long_jobs)
    assert_runs_on(d, before)


def test_while_slurmdbd_is_down_status_reports_it_the_daemon_runs_on_and_jobs_that_ended_meanwhile_arrive_once_it_is_back(
        daemon, slurm, cc_backend, tmp_path):
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    before = process_ids(d)
    # Given jobs that run through the outage
    long_jobs = submit(slurm, 2, seconds=20)
    wait_for(lambda: all_in_slurmctld(slurm, long_jobs, "RUNNING"), 60, 0.2, "the jobs running")
    # When slurmdbd stops, and jobs start and end while it is down (slurmctld keeps their records)
    slurm.stop_daemon("slurmdbd")
    try:
        outage_jobs = submit(slurm, 3, seconds=1)
        wait_for(lambda: all_in_slurmctld(slurm, outage_jobs, "COMPLETED"), 60, 0.5, "the outage jobs ended")
        # Then ccctl status names the failing sacct, and exits 1 once it lasts 3 poll intervals
        status, problem = wait_degraded(d, "Slurm: ")
        assert_slurm_failure_reported(d, status, problem)
        assert status["slurm"]["last_error"].startswith("sacct ")
        assert not outbox_rows(tmp_path, outage_jobs)  # nothing of them read while slurmdbd is away
        assert_runs_on(d, before)
    finally:
        slurm.start_daemon("slurmdbd")
    # and once slurmdbd is back, the report goes away and every job arrives exactly once
    wait_healthy(d)
    assert_delivered_exactly_once(cc_backend, slurm, tmp_path, long_jobs + outage_jobs)
    assert_runs_on(d, before)



def test_jobs_that_ended_longer_than_the_window_overlap_before_slurmdbd_came_back_arrive_exactly_once(
        daemon, slurm, cc_backend, tmp_path):
    # slurmdbd back, sacct answers at once, but slurmctld hands over the records it queued only on its
    # next connection: the first poll finds none of these jobs, and windows after it start later than
    # their ends. slurmctld still holds them, ended: the watermark waits (actors/accounting_lag.py).
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    before = process_ids(d)
    # Given jobs that ended while slurmdbd was down, longer ago than the window's overlap
    slurm.stop_daemon("slurmdbd")
    try:
        outage_jobs = submit(slurm, 3, seconds=1)
        wait_for(lambda: all_in_slurmctld(slurm, outage_jobs, "COMPLETED"), 60, 0.5, "the outage jobs ended")
        time.sleep(WINDOW_OVERLAP_S + 5)
    finally:
        slurm.start_daemon("slurmdbd")
    # When slurmdbd is back, then every one of them arrives exactly once
    wait_healthy(d)
    assert_delivered_exactly_once(cc_backend, slurm, tmp_path, outage_jobs)
    assert_runs_on(d, before)

# --- (3) stateDir full, stateDir read-only ----------------------------------------------------------------


@contextlib.contextmanager
def mounted_on(directory, *mount_args: str):
    """`mount ARGS directory` for the block; unmounted lazily after it (the daemon may still hold files)."""
    subprocess.run(["mount", *mount_args, str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill_up(directory):
    """A file that takes every free block of the file system (until ENOSPC); delete it to free them."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(chunk))
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return path


def test_while_the_state_dir_disk_is_full_status_reports_it_the_daemon_runs_on_and_every_job_arrives_once_there_is_space(
        daemon, slurm, cc_backend, proxy, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with mounted_on(state, "-t", "tmpfs", "-o", "size=16m,mode=0700", "ccsa-fault-suite"):
        d = start_adapter(daemon, slurm, tmp_path, proxy.url, cc_backend.jwt)
        wait_caught_up(d, tmp_path)
        before = process_ids(d)
        # Given jobs whose rows wait in the outbox: cc-backend answers their starts 503 for now
        proxy.fail(START, 503)
        early_jobs = submit(slurm, 2)
        wait_rows(tmp_path, early_jobs, lambda rows: len(rows) == 4 and any(r.last_status == 503 for r in rows),
                  "a start of the early jobs answered 503", 60)
        # When the disk of stateDir fills up, and more jobs run
        filler = fill_up(state)
        try:
            late_jobs = submit(slurm, 2)
            # Then ccctl status names the full disk and every failed write, and exits 1
            status, _ = wait_degraded(d, "translator cannot write stateDir: ")
            status, _ = wait_degraded(d, "rest_submitter cannot write stateDir: ")
            assert status["store"]["free_bytes"] == 0
            assert status["problems"] == [f"stateDir {state}: only 0 bytes free",
                                          "rest_submitter cannot write stateDir: outbox: database or disk is full",
                                          "translator cannot write stateDir: outbox: database or disk is full"]
            code, text = status_text(d)
            assert code == 1 and f"stateDir: {state}, 0 bytes free; rest_submitter: outbox: database or disk is full;" \
                                 " translator: outbox: database or disk is full" in text.splitlines()
            log = d.log_text()
            translator_pid, submitter_pid = before["translator"][0], before["rest_submitter"][0]
            assert (f"ERROR translator[{translator_pid}]: cannot write the outbox (database or disk is full): batch "
                    in log)
            assert f"ERROR rest_submitter[{submitter_pid}]: cannot write the outbox (database or disk is full)" in log
            assert not outbox_rows(tmp_path, late_jobs)  # nothing of them could be recorded
            assert_runs_on(d, before)
        finally:
            filler.unlink()
        # and once there is space again (and cc-backend takes starts), every job arrives exactly once
        proxy.clear()
        wait_healthy(d)
        assert_delivered_exactly_once(cc_backend, slurm, tmp_path, early_jobs + late_jobs)
        assert_runs_on(d, before)
        assert not [q for q in json.loads(ccctl(d, "quarantine", "list", "--json").stdout)]


def test_while_the_state_dir_is_read_only_status_reports_it_the_daemon_runs_on_and_every_job_arrives_exactly_once(
        daemon, slurm, cc_backend, tmp_path):
    # A file system the daemon holds files open on cannot be remounted read-only (EBUSY), and one the
    # kernel forced read-only (errors=remount-ro) cannot be made writable while mounted. A read-only
    # bind mount over stateDir is what an admin can do to a running daemon: every path operation and
    # every new open there fails with EROFS; descriptors opened before (the outbox's) stay writable.
    state = tmp_path / "state"
    d = start_adapter(daemon, slurm, tmp_path, cc_backend.url, cc_backend.jwt)
    wait_caught_up(d, tmp_path)
    before = process_ids(d)
    lastrun = state / "lastrun"
    with mounted_on(state, "--bind", str(state)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        watermark = os.stat(lastrun).st_mtime
        # When jobs run while stateDir is read-only
        job_ids = submit(slurm, 3)
        # Then ccctl status names it and the watermark that cannot move, and exits 1
        error = f"lastRunPath {lastrun}: Read-only file system"
        status, _ = wait_degraded(d, "slurm_querier cannot write stateDir: ")
        assert status["problems"] == [f"stateDir {state} is read-only", f"slurm_querier cannot write stateDir: {error}"]
        assert status["store"]["read_only"] is True
        code, text = status_text(d)
        assert code == 1 and f"PROBLEM: stateDir {state} is read-only" in text.splitlines()
        querier_pid = before["slurm_querier"][0]
        assert (f"ERROR slurm_querier[{querier_pid}]: cannot move the poll watermark, {error}; the next poll reads "
                "the window again") in d.log_text()
        assert os.stat(lastrun).st_mtime == watermark
        assert_runs_on(d, before)
    # and once it is writable again, the watermark moves on and every job arrives exactly once
    wait_healthy(d)
    assert os.stat(lastrun).st_mtime > watermark
    assert_delivered_exactly_once(cc_backend, slurm, tmp_path, job_ids)
    assert_runs_on(d, before)
