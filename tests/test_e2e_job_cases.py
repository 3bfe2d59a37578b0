"""End to end, one kind of job per test: a real Slurm -> the daemon -> the real cc-backend, read back
through cc-backend's REST API (GET /api/jobs/ with metaData).

Kinds: a job past its time limit, one cancelled while running, one cancelled while pending (never
started: nothing may reach cc-backend), an array (each task its own job), a multi-node batch job
with a step, a GPU job, a job started by `srun` alone, and a heterogeneous job (each component its
own job, as Slurm numbers them and as the original adapter sends them, spec §4.8).

Every release of RELEASES runs the whole mix at once with its own cc-backend and daemon (the
session's sandbox for the default release, an own one for the other), both releases side by side,
so that 24.11 adds its set-up and not a second run of the time-limit job. Two phases:
* before the daemon starts, the array runs to its end: the adapter first sees it finished, so the
  start carries the exit codes (on 22.05 read from slurmctld's raw status, sacct's JSON says 0);
* then the other jobs; those that must be seen running wait for a gate file that the test creates
  once the adapter has translated their start (never a sleep that hopes the poll came in time).
Slurm is the reference for what varies from run to run: hostnames (`scontrol show hostnames`),
start, end, state and ExitCode come from sacct; the mapping itself is spelled out per case.
GPU ids come from the daemon's gpuPciAddrs, which decides before cc-backend's topology: the
translator only reads that topology once rest_submitter has fetched it, which may be after the
first poll of a fresh daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from actors.outbox import Outbox
from tests.bench.ccbackend import CcBackend
from tests.bench.slurm import SlurmSandbox
from tests.conftest import service_unavailable
from tests.support import Daemon, free_port_base, wait_for, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

RELEASES = ("22.05", "24.11")
ACCOUNT = "projecta"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
JOB_WAIT_S = 240.0  #: the time-limit job ends 60-90 s after its start; the het job waits for backfill
ARRAY_SCRIPT = 'sleep 1; [ "$SLURM_ARRAY_TASK_ID" = 1 ] && exit 3; exit 0'
#: gpuPciAddrs of the daemon: GRES index i on n1..n3 -> the i-th address. Not the sandbox topology's
#: addresses, so the test tells that the config's list decided (it wins over the topology).
GPU_PCI_ADDRS = {"^n[1-3]$": ["00000000:0a:00.0", "00000000:0b:00.0"]}


@dataclass
class SlurmJob:
    """One job as Slurm reports it after the run."""

    state: str  #: first word of sacct's State ("CANCELLED by 0" -> "CANCELLED")
    exit_code: str  #: sacct's ExitCode text
    start: int
    end: int
    hosts: list[str]  #: sacct's NodeList through `scontrol show hostnames`
    steps: list[str]  #: sacct's JobID of each step, e.g. "12.0"
    het: tuple[int, int] | None  #: (het job id, offset) of a het component


@dataclass
class Outcome:
    """What one release's run left to check."""

    release: str
    ids: dict[str, int] = field(default_factory=dict)  #: case -> job id
    array_tasks: dict[int, int] = field(default_factory=dict)  #: task index -> job id
    het_components: dict[int, int] = field(default_factory=dict)  #: offset -> job id
    slurm: dict[int, SlurmJob] = field(default_factory=dict)
    cc_jobs: list[dict] = field(default_factory=list)  #: GET /api/jobs/ with metaData
    pending_rows: list = field(default_factory=list)  #: outbox rows of the job cancelled while pending
    watermark: float = 0.0  #: where the adapter's poll window stood at the end

    def cc(self, job_id: int) -> dict:
        mine = [j for j in self.cc_jobs if j["jobId"] == job_id]
        assert len(mine) == 1, f"{self.release}: job {job_id} is in cc-backend {len(mine)} times"
        return mine[0]


# --- running the mix ---------------------------------------------------------------------------------


def gate_command(path: str) -> str:
    return f"while [ ! -e {path} ]; do sleep 0.5; done"


def sacct_records(sandbox: SlurmSandbox, job_ids) -> list[dict]:
    out = sandbox.run("sacct", "--json", "--allusers", "-j", ",".join(map(str, job_ids))).stdout
    return json.loads(out)["jobs"]


def number(value) -> int | None:
    """A plain int (22.05) or a no-value object (23.02+) as an int; None when unset."""
    if isinstance(value, dict):
        return value["number"] if value.get("set") else None
    return value


def first_word(state) -> str:
    return (state if isinstance(state, str) else state[0]).split()[0]


def finished(sandbox: SlurmSandbox, job_ids) -> bool:
    records = {r["job_id"]: r for r in sacct_records(sandbox, job_ids)}
    return all(j in records and first_word(records[j]["state"]["current"]) in FINAL for j in job_ids)


def slurm_facts(sandbox: SlurmSandbox, job_ids) -> dict[int, SlurmJob]:
    ids = ",".join(map(str, job_ids))
    text = sandbox.run("sacct", "-P", "-n", "--allusers", "-j", ids, "-o", "JobIDRaw,State,ExitCode").stdout
    lines = [line.split("|") for line in text.splitlines() if line]
    facts = {}
    for record in sacct_records(sandbox, job_ids):
        job_id = record["job_id"]
        [(state, exit_code)] = [(s, e) for raw, s, e in lines if raw == str(job_id)]
        steps = [raw for raw, _, _ in lines if raw.startswith(f"{job_id}.")]
        nodes = record["nodes"]
        hosts = sandbox.run("scontrol", "show", "hostnames", nodes).stdout.split() if nodes != "None assigned" else []
        het = record.get("het") or {}
        facts[job_id] = SlurmJob(state=state.split()[0], exit_code=exit_code, start=record["time"]["start"],
                                 end=record["time"]["end"], hosts=hosts, steps=steps,
                                 het=(het["job_id"], number(het["job_offset"])) if het.get("job_id") else None)
    return facts


class MixRun:
    """One release's run of the mix, step by step; `outcome` is what the tests read."""

    def __init__(self, release: str, sandbox: SlurmSandbox, own_sandbox: bool, workdir):
        self.sandbox, self.own_sandbox, self.workdir = sandbox, own_sandbox, workdir
        self.outcome = Outcome(release)
        self.ids = self.outcome.ids
        self.backend = CcBackend()
        self.daemon: Daemon | None = None
        self.outbox: Outbox | None = None
        self.srun: subprocess.Popen | None = None
        self.gates = workdir / "gates"

    def run(self) -> Outcome:
        try:
            self.start_services()
            self.run_array_before_the_daemon()
            self.start_daemon()
            self.submit_the_others()
            self.cancel_the_pending_job()
            self.open_each_gate_once_the_start_is_translated()
            self.wait_until_slurm_and_cc_backend_are_done()
            return self.outcome
        finally:
            self.clean_up()

    def start_services(self) -> None:
        try:
            if self.own_sandbox:
                self.sandbox.start()
            self.backend.start()
        except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
            service_unavailable(f"Slurm {self.outcome.release} or cc-backend", e)

    def run_array_before_the_daemon(self) -> None:
        sandbox = self.sandbox
        array_id = self.ids["array"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-array", "--array=0-2",
                                                      "--wrap", ARRAY_SCRIPT)

        def tasks():
            indices = {number(r["array"]["task_id"]): r["job_id"] for r in sacct_records(sandbox, [array_id])
                       if r["array"]["job_id"] == array_id and number(r["array"]["task_id"]) is not None}
            return indices if sorted(indices) == [0, 1, 2] and finished(sandbox, indices.values()) else None

        self.outcome.array_tasks = wait_for(tasks, JOB_WAIT_S, 0.5, f"array {array_id} finished")

    def start_daemon(self) -> None:
        config = write_config(self.workdir, ccRestUrl=self.backend.url, ccRestJwt=self.backend.jwt,
                              slurmPollInterval=2, slurmQueryDelay=1, gpuPciAddrs=GPU_PCI_ADDRS)
        self.daemon = Daemon(config, self.workdir / "daemon.log", env=self.sandbox.env()).start()
        self.daemon.wait_all_running(timeout_s=60)
        self.outbox = Outbox(str(self.workdir / "state" / "outbox.sqlite3"), readonly=True)

    def submit_the_others(self) -> None:
        sandbox, ids, gates = self.sandbox, self.ids, self.gates
        gates.mkdir()
        ids["timeout"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-timeout", "--time=1", "--wrap", "sleep 300")
        ids["cancelled_running"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-cancel", "--wrap", "sleep 300")
        ids["cancelled_pending"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-pending", "--begin=now+3600",
                                                  "--wrap", "sleep 1")
        ids["multinode"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-multinode", "-N", "3", "--ntasks-per-node=1",
                                          "--wrap", f"srun hostname; {gate_command(gates / 'multinode')}")
        ids["gpu"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-gpu", "--gres=gpu:fake:1",
                                    "--wrap", gate_command(gates / "gpu"))
        srun_out = self.workdir / "srun.out"  # stdout only: "srun: job N queued ..." goes to stderr
        with open(srun_out, "wb") as out, open(self.workdir / "srun.err", "wb") as err:
            self.srun = subprocess.Popen(
                [str(sandbox.directory / "bin" / "srun"), "-A", ACCOUNT, "-J", "e2e-srun", "-N", "2", "-n", "2",
                 "bash", "-c", f"echo $SLURM_JOB_ID; {gate_command(gates / 'srun')}"],
                env=dict(os.environ, **sandbox.env()), cwd=sandbox.jobs_dir, stdout=out, stderr=err)
        ids["srun"] = int(wait_for(lambda: srun_out.read_text().split()[:1], 60, 0.2, "srun's job id")[0])
        # Last: a pending het job holds up the main scheduler for the jobs behind it until backfill.
        ids["het"] = sandbox.sbatch("-A", ACCOUNT, "-J", "e2e-het", "-c", "1", "--wrap",
                                    f"{gate_command(gates / 'het')}; exit 2", ":", "-A", ACCOUNT, "-N", "2", "-c", "2")

        def het_components():  # from squeue: 24.11's sacct knows the components only once they run
            lines = sandbox.run("squeue", "-h", "-o", "%i|%A").stdout.split()
            found = {int(name.split("+")[1]): int(job_id) for name, job_id in (line.split("|") for line in lines)
                     if name.startswith(f"{ids['het']}+")}
            return found if len(found) == 2 else None

        self.outcome.het_components = wait_for(het_components, 30, 0.5, "the het job's two components")

    def cancel_the_pending_job(self) -> None:
        self.sandbox.wait_for_state(self.ids["cancelled_pending"], {"PENDING"}, timeout=30)
        self.sandbox.run("scancel", str(self.ids["cancelled_pending"]))

    def open_each_gate_once_the_start_is_translated(self) -> None:
        """A gated job ends once the adapter has translated its start; the running job to cancel
        is cancelled then. Gate by gate: the het job can only start once others made room."""
        ids = self.ids
        gated = {(ids["multinode"],): "multinode", (ids["gpu"],): "gpu", (ids["srun"],): "srun",
                 tuple(self.outcome.het_components.values()): "het", (ids["cancelled_running"],): "cancel"}

        def started(job_id: int) -> bool:
            return any(r.event == "start_job" for r in self.outbox.rows(job_id=job_id, sink="rest"))

        def open_gates():
            for job_ids, name in list(gated.items()):
                if all(started(j) for j in job_ids):
                    if name == "cancel":
                        self.sandbox.run("scancel", str(ids["cancelled_running"]))
                    else:
                        (self.gates / name).touch()
                    del gated[job_ids]
            return not gated

        wait_for(open_gates, JOB_WAIT_S, 0.2, "every gated job translated while running")

    def wait_until_slurm_and_cc_backend_are_done(self) -> None:
        ids, outcome = self.ids, self.outcome
        all_ids = [j for case, j in ids.items() if case not in ("array", "het")]
        all_ids += [*outcome.array_tasks.values(), *outcome.het_components.values()]
        wait_for(lambda: finished(self.sandbox, all_ids), JOB_WAIT_S, 1.0, "every job finished in Slurm")
        outcome.slurm = slurm_facts(self.sandbox, all_ids)
        sent = {j for j in all_ids if j != ids["cancelled_pending"]}
        self.backend.wait_for_jobs(lambda jobs: {j["jobId"] for j in jobs if j["jobState"] != "running"} >= sent,
                                   timeout_s=JOB_WAIT_S)
        # The job cancelled while pending: wait until the poll window has passed its end in Slurm.
        lastrun = self.workdir / "state" / "lastrun"
        pending_end = outcome.slurm[ids["cancelled_pending"]].end
        outcome.watermark = wait_for(lambda: lastrun.stat().st_mtime > pending_end + 1 and lastrun.stat().st_mtime,
                                     60, 0.5, "a poll past the pending job's end")
        outcome.cc_jobs = self.backend.get_jobs(with_metadata="true")
        outcome.pending_rows = self.outbox.rows(job_id=ids["cancelled_pending"])

    def clean_up(self) -> None:
        if self.srun is not None and self.srun.poll() is None:
            self.srun.kill()
            self.srun.wait()
        if self.outbox is not None:
            self.outbox.close()
        if self.daemon is not None:
            self.daemon.stop()
        self.backend.stop()
        if self.own_sandbox:
            self.sandbox.clean()
        elif self.ids:  # the session's sandbox: leave nothing of ours running there
            self.sandbox.run("scancel", *map(str, self.ids.values()), check=False)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome | BaseException]:
    """Runs the mix on every release at once; a release that failed keeps its exception."""
    default = os.environ.get("SLURM_RELEASE", "22.05")
    sandboxes = {}
    for release in RELEASES:
        if release == default:
            sandboxes[release] = (request.getfixturevalue("slurm"), False)
        else:
            directory = f"/tmp/ccsa-slurm-{release}-c{os.getpid()}"
            sandboxes[release] = (SlurmSandbox(release, directory=directory, port_base=free_port_base()), True)
    with ThreadPoolExecutor(len(RELEASES)) as pool:
        futures = {release: pool.submit(MixRun(release, sandbox, own,
                                               tmp_path_factory.mktemp(f"cases-{release.replace('.', '')}")).run)
                   for release, (sandbox, own) in sandboxes.items()}
        return {release: future.exception() or future.result() for release, future in futures.items()}


@pytest.fixture(params=RELEASES)
def run(request, outcomes) -> Outcome:
    outcome = outcomes[request.param]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def hostnames(job: dict) -> list[str]:
    return [r["hostname"] for r in job["resources"]]


def assert_identity(job: dict) -> None:
    assert (job["cluster"], job["user"], job["project"], job["partition"]) == ("testcluster", "root", ACCOUNT, "debug")


# --- the cases ---------------------------------------------------------------------------------------


def test_a_job_past_its_time_limit_stops_as_timeout_with_its_60_s_walltime(run):
    job_id = run.ids["timeout"]
    slurm, job = run.slurm[job_id], run.cc(job_id)

    assert slurm.state == "TIMEOUT"
    assert_identity(job)
    assert (job["jobState"], job["walltime"], job["numNodes"], job["numHwthreads"]) == ("timeout", 60, 1, 1)
    assert hostnames(job) == slurm.hosts
    assert (job["startTime"], job["duration"]) == (slurm.start, slurm.end - slurm.start)
    assert job["metaData"]["slurmState"] == "RUNNING"  # its start went out while it ran ...
    assert "exitCode" not in job["metaData"]  # ... so no exit code was known yet


def test_a_job_cancelled_while_running_was_sent_running_and_stops_as_cancelled(run):
    job_id = run.ids["cancelled_running"]
    slurm, job = run.slurm[job_id], run.cc(job_id)

    assert slurm.state == "CANCELLED"
    assert (job["jobState"], job["numNodes"], job["metaData"]["slurmState"]) == ("cancelled", 1, "RUNNING")
    assert hostnames(job) == slurm.hosts
    assert (job["startTime"], job["duration"]) == (slurm.start, slurm.end - slurm.start)


def test_a_job_cancelled_while_pending_never_reaches_cc_backend(run):
    """Spec §4.8: never started, so neither start nor stop. (sacct's time window does not even list
    such a job on 22.05 or 24.11; read by job id, its record is skipped as never started, see the
    pending_cancelled golden files.)"""
    job_id = run.ids["cancelled_pending"]
    slurm = run.slurm[job_id]

    assert (slurm.state, slurm.hosts) == ("CANCELLED", [])
    assert run.watermark > slurm.end  # the adapter's polls have read past its cancellation
    assert [j for j in run.cc_jobs if j["jobId"] == job_id] == []
    assert run.pending_rows == []


def test_each_array_task_is_its_own_job_carrying_the_array_id_and_its_exit_code(run):
    array_id = run.ids["array"]
    jobs = {task: run.cc(job_id) for task, job_id in run.array_tasks.items()}

    assert {task: j["jobId"] for task, j in jobs.items()} == run.array_tasks
    assert {j["arrayJobId"] for j in jobs.values()} == {array_id}
    assert {task: j["jobState"] for task, j in jobs.items()} == {0: "completed", 1: "failed", 2: "completed"}
    # First seen finished, so the start carries the exit code; on 22.05 sacct's JSON says 0 for all.
    exit_codes = {task: j["metaData"]["exitCode"] for task, j in jobs.items()}
    assert exit_codes == {0: "0:0", 1: "3:0", 2: "0:0"}
    assert exit_codes == {task: run.slurm[job_id].exit_code for task, job_id in run.array_tasks.items()}
    for task, job in jobs.items():
        assert f"\nArrayJobId={array_id} ArrayTaskId={task}\n" in job["metaData"]["slurmInfo"]
        assert hostnames(job) == run.slurm[job["jobId"]].hosts


def test_a_multinode_job_gets_one_resource_per_node_each_with_its_allocated_core(run):
    job_id = run.ids["multinode"]
    slurm, job = run.slurm[job_id], run.cc(job_id)

    assert slurm.hosts == ["n1", "n2", "n3"]
    assert f"{job_id}.0" in slurm.steps  # the srun step is not a job of its own
    assert_identity(job)
    assert (job["jobState"], job["numNodes"], job["numHwthreads"]) == ("completed", 3, 3)
    assert hostnames(job) == ["n1", "n2", "n3"]
    assert [len(r["hwthreads"]) for r in job["resources"]] == [1, 1, 1]


def test_a_gpu_job_gets_the_pci_address_gpu_pci_addrs_lists_for_its_gres_index(run):
    job_id = run.ids["gpu"]
    slurm, job = run.slurm[job_id], run.cc(job_id)

    assert (job["jobState"], job["numNodes"], job["numAcc"]) == ("completed", 1, 1)
    [resource] = job["resources"]  # the only GPU job: Slurm gives it GRES index 0 (gres_detail IDX:0)
    assert (resource["hostname"], resource["accelerators"], len(resource["hwthreads"])) == \
        (slurm.hosts[0], ["00000000:0a:00.0"], 1)


def test_a_job_started_by_srun_alone_is_one_job_not_one_per_step(run):
    job_id = run.ids["srun"]
    slurm, job = run.slurm[job_id], run.cc(job_id)

    assert f"{job_id}.0" in slurm.steps
    assert [j["jobId"] for j in run.cc_jobs if j["jobId"] in {int(s.split(".")[0]) for s in slurm.steps}] == [job_id]
    assert_identity(job)
    assert (job["jobState"], job["numNodes"], job["numHwthreads"]) == ("completed", 2, 2)
    assert hostnames(job) == slurm.hosts and len(slurm.hosts) == 2


def test_each_component_of_a_heterogeneous_job_is_its_own_job_under_its_own_id(run):
    het_id = run.ids["het"]
    components = run.het_components

    assert sorted(components) == [0, 1] and components[0] == het_id
    for offset, job_id in components.items():
        slurm, job = run.slurm[job_id], run.cc(job_id)
        assert slurm.het == (het_id, offset)
        assert slurm.state == "FAILED"  # Slurm gives every component the leader's end
        assert_identity(job)
        assert job["jobState"] == "failed"
        assert hostnames(job) == slurm.hosts
        assert (job["numNodes"], job["numHwthreads"]) == ((1, 1) if offset == 0 else (2, 4))
        assert "arrayJobId" not in job
        assert f"\nHetJobId={het_id} HetJobOffset={offset}\n" in job["metaData"]["slurmInfo"]
