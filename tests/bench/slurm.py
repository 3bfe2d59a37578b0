"""The real single-machine Slurm cluster of scripts/slurm-sandbox, for pytest fixtures.

    sandbox = SlurmSandbox("22.05")            # or "24.11", "26.05" (Debian chroots)
    sandbox.start()                            # idempotent; seconds, or minutes for a first chroot
    job_id = sandbox.sbatch("-N", "2", "--wrap", "srun hostname")
    sandbox.wait_for_state(job_id, {"COMPLETED"}, timeout=60)
    sandbox.run("sacct", "--json", "-j", str(job_id)).stdout
    sandbox.set_hook_target(adapter_bin, config_path)   # slurmctld's prolog/epilog run the adapter
    sandbox.stop_daemon("slurmctld")           # an outage of one daemon ("slurmctld", "slurmdbd") ...
    sandbox.start_daemon("slurmctld")          # ... ended: started as before, waits until it answers
    sandbox.stop()

Client commands run with `env()`: SLURM_CONF of the sandbox and its bin/ first on PATH (wrappers
that run the release's clients, inside the chroot for 24.11 and 26.05).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-sandbox"
RELEASES = ("22.05", "24.11", "26.05")
CLUSTER_NAME = "testcluster"  #: ClusterName in the sandbox's slurm.conf
TEST_USER = "testuser"  #: the unprivileged user with accounts projecta (default) and projectb
START_TIMEOUT_S = 900.0  #: a first start of a chroot release builds the chroot (minutes)
STOP_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 60.0  #: one Slurm client command
POLL_INTERVAL_S = 0.25  #: between two sacct polls in wait_for_state
#: the daemons stop_daemon/start_daemon handle, and the client call that answers once each is up
DAEMON_READY = {"slurmctld": ("scontrol", "ping"), "slurmdbd": ("sacctmgr", "-n", "show", "cluster")}


class SlurmSandbox:
    """One sandbox of scripts/slurm-sandbox: a Slurm release, its directory and ports."""

    def __init__(self, release: str = "22.05", directory: str | None = None,
                 port_base: int | None = None, min_job_age_s: int | None = None):
        if release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, not {release!r}")
        self.release = release
        self.cluster_name = CLUSTER_NAME
        self.test_user = TEST_USER
        self._script_env = dict(os.environ, SLURM_RELEASE=release, SANDBOX_PYTHON=sys.executable)
        if directory is not None:
            self._script_env["SANDBOX_DIR"] = directory
        if port_base is not None:
            self._script_env["SANDBOX_PORT_BASE"] = str(port_base)
        if min_job_age_s is not None:
            self._script_env["SANDBOX_MIN_JOB_AGE"] = str(min_job_age_s)
        self._env: dict[str, str] | None = None
        self._stopped: dict[str, tuple[list[str], dict[str, str], str]] = {}  # name -> argv, environ, cwd

    def _script(self, *args: str, timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env=self._script_env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        """Starts the cluster (no-op when it runs) and waits until every node is idle.

        Raises RuntimeError with the end of the script's output when it does not come up.
        """
        done = self._script("start", timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise RuntimeError(f"scripts/slurm-sandbox start (Slurm {self.release}) failed:\n{tail}")

    def stop(self) -> None:
        """Cancels all jobs and stops every daemon of the sandbox; its directory stays."""
        self._script("stop", timeout=STOP_TIMEOUT_S)

    def clean(self) -> None:
        """Stops the sandbox and deletes its directory (database, state, logs)."""
        self._script("clean", timeout=STOP_TIMEOUT_S)

    def status(self) -> bool:
        """True when every daemon runs and the cluster answers."""
        return self._script("status").returncode == 0

    def env(self) -> dict[str, str]:
        """The variables a Slurm client needs (SLURM_CONF, PATH, SLURM_RELEASE, SANDBOX_DIR)."""
        if self._env is None:
            done = self._script("env")
            done.check_returncode()
            env = {}
            for line in done.stdout.splitlines():
                words = shlex.split(line)
                if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                    name, value = words[1].split("=", 1)
                    env[name] = value
            self._env = env
        return dict(self._env)

    @property
    def directory(self) -> Path:
        """The sandbox directory (configs, logs, state, jobs/)."""
        return Path(self.env()["SANDBOX_DIR"])

    @property
    def jobs_dir(self) -> Path:
        """A world-writable directory to submit jobs from (their output files land here)."""
        return self.directory / "jobs"

    def run(self, *argv: str, check: bool = True, user: str | None = None,
            input: str | None = None, timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Runs a Slurm client (e.g. "sacct", "--json") with env(); as `user` when given.

        Output is captured as text. With check=True a non-zero exit raises RuntimeError naming
        the command and its stderr.
        """
        env = dict(os.environ, **self.env())
        env.pop("SANDBOX_RUN_AS", None)
        if user is not None:
            env["SANDBOX_RUN_AS"] = user  # the bin/ wrappers switch to that user (runuser)
        command = [str(self.directory / "bin" / argv[0]), *argv[1:]]
        done = subprocess.run(command, env=env, capture_output=True, text=True, input=input,
                              timeout=timeout, cwd=self.jobs_dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def sbatch(self, *args: str, user: str | None = None) -> int:
        """Submits a job from jobs_dir (as `user` when given) and returns its job id."""
        done = self.run("sbatch", "--parsable", "-D", str(self.jobs_dir), *args, user=user)
        return int(done.stdout.strip().split(";")[0])

    def job_state(self, job_id: int) -> str:
        """The job's state in sacct ("COMPLETED", "CANCELLED", ...), "" while sacct has none."""
        out = self.run("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State").stdout
        lines = out.split()
        return lines[0] if lines else ""  # "CANCELLED by 0" -> "CANCELLED"

    def wait_for_state(self, job_id: int, states, timeout: float = 60.0) -> str:
        """Polls sacct until the job is in one of `states`; returns that state.

        Raises TimeoutError naming the last state seen when the deadline passes.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout} s "
                                   f"(last sacct state: {state or 'none'})")
            time.sleep(POLL_INTERVAL_S)

    def set_hook_target(self, binary: str | os.PathLike | None, config: str | os.PathLike | None = None) -> None:
        """slurmctld's prolog/epilog run `binary -config config` from now on; None turns the hook off."""
        if binary is None:
            done = self._script("hook-target", "--off")
        else:
            done = self._script("hook-target", str(binary), str(config or ""))
        done.check_returncode()

    def stop_daemon(self, name: str) -> None:
        """Stops one daemon of the running sandbox (a key of DAEMON_READY) with SIGTERM and waits
        until it is gone; the others keep running. start_daemon(name) ends the outage."""
        if name not in DAEMON_READY:
            raise ValueError(f"name must be one of {sorted(DAEMON_READY)}, not {name!r}")
        pid_file = self.directory / "pids" / f"{name}.pid"
        pid = int(pid_file.read_text())
        proc = Path(f"/proc/{pid}")
        argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        environ = dict(item.split("=", 1) for item in
                       (proc / "environ").read_bytes().rstrip(b"\0").decode().split("\0") if "=" in item)
        root = os.readlink(proc / "root")
        if root != "/":  # a chroot release: start it inside the chroot again
            argv = ["chroot", root, *argv]
        self._stopped[name] = (argv, environ, os.readlink(proc / "cwd"))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _running(pid):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{name} (pid {pid}) still runs {STOP_TIMEOUT_S} s after SIGTERM")
            time.sleep(0.1)

    def start_daemon(self, name: str, timeout: float = CLIENT_TIMEOUT_S) -> None:
        """Starts a daemon stop_daemon stopped, as scripts/slurm-sandbox had started it (same command
        line, environment, log, pid file: `stop` and `clean` stop it too), and waits until it answers."""
        argv, environ, cwd = self._stopped.pop(name)
        log = self.directory / "log" / f"{name}.out"
        done = subprocess.run(["sh", "-c", 'log=$1; shift; nohup "$@" >>"$log" 2>&1 </dev/null & echo $!',
                               "sh", str(log), *argv], env=environ, cwd=cwd, capture_output=True, text=True,
                              check=True)
        (self.directory / "pids" / f"{name}.pid").write_text(done.stdout)
        deadline = time.monotonic() + timeout
        while True:
            answer = self.run(*DAEMON_READY[name], check=False)
            if answer.returncode == 0 and (name != "slurmctld" or "is UP" in answer.stdout):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{name} does not answer {timeout} s after its start: {answer.stderr.strip()}")
            time.sleep(POLL_INTERVAL_S)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (this machine's PID 1 reaps orphans late)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
