"""A job that crashes the translator (an interpreter abort, not an exception) is quarantined after
MAX_CRASHES crashes on it alone; the jobs beside it reach cc-backend and the translator keeps running."""

import json
import subprocess

import pytest

from actors.translator import CRASH_ON_JOB_ENV, MAX_CRASHES
from tests.support import REPO, ccctl_command, python_env, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]


def test_a_job_that_kills_the_translator_is_quarantined_and_the_others_arrive(daemon, slurm, cc_backend):
    held = slurm.sbatch("--hold", "--wrap", "sleep 1")
    d = daemon(env={**slurm.env(), CRASH_ON_JOB_ENV: str(held)}, ccRestUrl=cc_backend.url,
               ccRestJwt=cc_backend.jwt, slurmPollInterval=2)
    d.start()
    d.wait_all_running()
    good = [slurm.sbatch("--wrap", "sleep 1") for _ in range(2)]
    slurm.run("scontrol", "release", str(held))
    for job in [held, *good]:
        slurm.wait_for_state(job, {"COMPLETED"}, timeout=90)
    cc_backend.wait_for_jobs(lambda jobs: sum(j["jobId"] in good and j["jobState"] == "completed" for j in jobs) == 2,
                             timeout_s=180)

    def quarantined():
        done = subprocess.run(ccctl_command("-config", d.config_path, "quarantine", "list", "--json"),
                              capture_output=True, text=True, env=python_env(), cwd=REPO)
        return [q for q in json.loads(done.stdout or "[]") if q["jobId"] == held]

    [entry] = wait_for(quarantined, 240, 1.0, f"job {held} quarantined")
    assert entry["error"] == f"the translator crashed {MAX_CRASHES} times on this job"
    assert d.actors()["translator"]["restarts"] >= MAX_CRASHES
    assert held not in [j["jobId"] for j in cc_backend.get_jobs()]
    assert d.log_text().count("translator died (signal 6)") >= MAX_CRASHES
