"""End to end on the real parts: Slurm sandbox -> the daemon -> the real cc-backend, read back via its REST API."""

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]


def adapter_for(daemon, slurm, cc_backend, **config):
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt,
               slurmPollInterval=2, slurmQueryDelay=1, **config)
    d.start()
    d.wait_all_running()
    return d


def only_job(jobs, job_id):
    mine = [j for j in jobs if j["jobId"] == job_id]
    assert len(mine) == 1, f"job {job_id} is in cc-backend {len(mine)} times"
    return mine[0]


def test_a_real_sbatch_job_arrives_exactly_once_with_user_project_nodes_and_state(daemon, slurm, cc_backend):
    adapter_for(daemon, slurm, cc_backend)
    job_id = slurm.sbatch("-N", "2", "-A", "projecta", "--wrap", "srun hostname")
    slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=90)
    jobs = cc_backend.wait_for_jobs(
        lambda jobs: any(j["jobId"] == job_id and j["jobState"] == "completed" for j in jobs), timeout_s=120)
    job = only_job(jobs, job_id)
    assert (job["cluster"], job["user"], job["project"], job["numNodes"]) == ("testcluster", "root", "projecta", 2)
    hosts = [r["hostname"] for r in job["resources"]]
    assert len(hosts) == 2 and set(hosts) <= {"n1", "n2", "n3"}


def test_a_stop_is_sent_once_its_start_is_older_than_cc_backends_commit_interval(daemon, slurm, cc_backend, tmp_path):
    from actors.outbox import Outbox

    commit_s = int(cc_backend.commit_interval.rstrip("s"))
    adapter_for(daemon, slurm, cc_backend, ccCommitInterval=commit_s)
    job_id = slurm.sbatch("--wrap", "true")
    slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=90)
    jobs = cc_backend.wait_for_jobs(
        lambda jobs: any(j["jobId"] == job_id and j["jobState"] == "completed" for j in jobs), timeout_s=120)
    assert only_job(jobs, job_id)["jobState"] == "completed"
    box = Outbox(str(tmp_path / "state" / "outbox.sqlite3"), readonly=True)
    try:
        rows = {r.event: r for r in box.rows(job_id=job_id, sink="rest")}
    finally:
        box.close()
    assert rows["stop_job"].delivered_at - rows["start_job"].delivered_at >= commit_s + 2.0
