"""What the fault suite's tests (tests/test_fault_suite.py, tests/test_fault_fuzz.py) check in every
outage: `ccctl status` and the log name the failure, the daemon runs on as the same processes, and
every job of the test arrives exactly once."""

import re
import subprocess

from tests.support import REPO, ccctl_command, python_env, wait_for
from tests.test_delivery_faults import assert_exactly_once, assert_one_run_per_job, ccctl_status, settled, wait_rows

OUTAGE_REPORT_TIMEOUT_S = 60.0  #: a failing Slurm call may take slurmctld's 9 s connect timeout, twice


def process_ids(d) -> dict:
    """The supervisor's pid and each actor's (pid, restarts)."""
    return {"supervisor": d.process.pid, **{name: (a["pid"], a["restarts"]) for name, a in d.actors().items()}}


def assert_runs_on(d, before: dict) -> None:
    """The daemon is the same process tree as `before`: nothing died, nothing was restarted."""
    assert d.process.poll() is None, "the supervisor exited"
    assert d.all_running(), d.actors()
    assert process_ids(d) == before


def status_actor(status: dict, name: str) -> dict:
    return {a["name"]: a for a in status["actors"]}[name]


def ccctl(d, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ccctl_command("-config", d.config_path, *args), capture_output=True, text=True,
                          env=python_env(), cwd=REPO)


def status_text(d) -> tuple[int, str]:
    done = ccctl(d, "status")
    return done.returncode, done.stdout


def wait_degraded(d, problem_prefix: str) -> tuple[dict, str]:
    """Until `ccctl status` exits 1 naming a problem that starts with `problem_prefix`; (status, problem)."""
    def degraded():
        code, status = ccctl_status(d)
        found = [p for p in status["problems"] if p.startswith(problem_prefix)]
        return code == 1 and found and (status, found[0])
    return wait_for(degraded, OUTAGE_REPORT_TIMEOUT_S, 0.5, f"ccctl status: exit 1, problem {problem_prefix!r}")


def wait_healthy(d) -> dict:
    def healthy():
        code, status = ccctl_status(d)
        return code == 0 and not status["problems"] and status
    return wait_for(healthy, OUTAGE_REPORT_TIMEOUT_S, 0.5, "ccctl status: exit 0, no problem")


def assert_delivered_exactly_once(cc_backend, slurm, tmp_path, job_ids) -> None:
    assert_exactly_once(cc_backend, slurm, job_ids)
    rows = wait_rows(tmp_path, job_ids, settled(job_ids), "every row of the jobs delivered")
    assert {r.state for r in rows} == {"delivered"}
    assert_one_run_per_job(rows)


def all_in_slurmctld(slurm, job_ids, state: str) -> bool:
    """slurmctld shows every job in `state` (squeue: at once, where sacct lags, or fails without slurmdbd)."""
    out = slurm.run("squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(map(str, job_ids))).stdout
    return sorted(out.split()) == sorted([str(j) for j in job_ids] + [state] * len(job_ids))


def assert_slurm_failure_reported(d, status: dict, problem: str) -> None:
    """JSON, text and log name the failing Slurm call; the problem line quotes it."""
    error = status["slurm"]["last_error"]
    assert re.match(r"(sacct|squeue|scontrol|sinfo) ", error), error
    assert problem == f"Slurm: no successful poll for {int(status['slurm']['failing_for_s'])} s: {error}"
    assert status["slurm"]["failing_for_s"] > status["slurm"]["failing_after_s"] == 3 * 2
    code, text = status_text(d)
    lines = text.splitlines()
    assert code == 1
    assert [line for line in lines if line.startswith("slurm: ")][0].endswith(f", error: {error}")
    assert any(line.startswith("PROBLEM: Slurm: no successful poll for ") for line in lines)
    querier_pid = status_actor(status, "slurm_querier")["pid"]
    assert f"ERROR slurm_querier[{querier_pid}]: {error}; retrying in " in d.log_text()

