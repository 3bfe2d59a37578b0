"""One bad job never blocks the others: a poisoned Slurm record is quarantined with its JSON path,
shown by ccctl, retried on request, and every other job still reaches cc-backend."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from tests.support import REPO, ccctl_command, python_env, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

#: A `sacct` in front of the real one that breaks the `user` of the jobs listed in POISON_FILE.
POISONING_SACCT = """#!{python}
import json, os, subprocess, sys
real = {real!r}
done = subprocess.run([real, *sys.argv[1:]], capture_output=True)
sys.stderr.buffer.write(done.stderr)
out = done.stdout
if "--json" in sys.argv and done.returncode == 0:
    poison = set(open({poison!r}).read().split())
    doc = json.loads(out)
    for job in doc.get("jobs", []):
        if str(job.get("job_id")) in poison:
            job["user"] = {{"not": "a user"}}
    out = json.dumps(doc).encode()
sys.stdout.buffer.write(out)
sys.exit(done.returncode)
"""


@pytest.fixture
def poisoned_slurm_env(slurm, tmp_path):
    """The sandbox's Slurm environment with the poisoning sacct first on PATH; yields (env, poison file)."""
    env = slurm.env()
    real = shutil.which("sacct", path=env["PATH"])
    bin_dir = tmp_path / "poison-bin"
    bin_dir.mkdir()
    poison = tmp_path / "poison.txt"
    poison.write_text("")
    wrapper = bin_dir / "sacct"
    wrapper.write_text(POISONING_SACCT.format(python=sys.executable, real=real, poison=str(poison)))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    yield {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}, poison


def ccctl(config_path, *args):
    return subprocess.run(ccctl_command("-config", config_path, *args), capture_output=True, text=True,
                          env=python_env(), cwd=REPO)


def test_a_poisoned_job_is_quarantined_and_the_others_arrive(daemon, slurm, cc_backend, poisoned_slurm_env):
    env, poison = poisoned_slurm_env
    d = daemon(env=env, ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt, slurmPollInterval=2)
    bad = slurm.sbatch("--wrap", "sleep 1")
    poison.write_text(f"{bad}\n")
    good = [slurm.sbatch("--wrap", "sleep 1") for _ in range(3)]
    d.start()
    d.wait_all_running()
    for job in [bad, *good]:
        slurm.wait_for_state(job, {"COMPLETED"}, timeout=90)
    jobs = cc_backend.wait_for_jobs(
        lambda jobs: sum(j["jobId"] in good and j["jobState"] == "completed" for j in jobs) == 3, timeout_s=120)
    assert bad not in [j["jobId"] for j in jobs]

    listed = json.loads(ccctl(d.config_path, "quarantine", "list", "--json").stdout)
    assert [(q["jobId"], q["path"], q["state"]) for q in listed] == [(bad, "$.user", "held")]
    assert listed[0]["error"] == "Expected `str | null`, got `object`"
    shown = json.loads(ccctl(d.config_path, "quarantine", "show", str(bad)).stdout)
    assert shown["record"]["job_id"] == bad and shown["record"]["user"] == {"not": "a user"}
    assert f"job {bad}@testcluster quarantined" in d.log_text()
    code, status = d.status()
    assert status["delivery"]["quarantined"] == 1

    # The Slurm side is mended (an upgrade, a fixed record): a retry on request lets it through.
    poison.write_text("")
    assert ccctl(d.config_path, "quarantine", "retry", str(bad)).returncode == 0
    cc_backend.wait_for_jobs(lambda jobs: any(j["jobId"] == bad and j["jobState"] == "completed" for j in jobs),
                             timeout_s=120)
    wait_for(lambda: d.status()[1]["delivery"]["quarantined"] == 0, 30, 0.5, "quarantine emptied")
