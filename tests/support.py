"""Helpers for tests that run real processes: wait on conditions with a deadline, never sleep and hope."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTOR_NAMES = {"slurm_querier", "translator", "rest_submitter", "nats_publisher", "hook_listener"}


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {message}")
        time.sleep(interval_s)


def free_port_base(span: int = 40, low: int = 20000, high: int = 60000) -> int:
    """A port P such that P..P+span-1 are all free on loopback right now (for a Slurm sandbox)."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(low, high - span)
        sockets = []
        try:
            for port in range(base, base + span):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range found")


def python_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def adapter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "actors.cli", *args]


def ccctl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "actors.ctl", *args]


def write_config(directory, **overrides) -> str:
    """A daemon config whose every path lives under `directory` (a pathlib.Path)."""
    run, state = directory / "run", directory / "state"
    run.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    config = {
        "pidFilePath": str(run / "daemon.pid"),
        "prepSockListenPath": str(run / "daemon.sock"),
        "prepSockConnectPath": str(run / "daemon.sock"),
        "ctlSockPath": str(run / "ctl.sock"),
        "lastRunPath": str(state / "lastrun"),
        "stateDir": str(state),
        "ccRestUrl": "http://127.0.0.1:9",
        "ccRestJwt": "test-jwt",
        "slurmPollInterval": 3600,
        # The bench cc-backend commits every 5 s: stops wait for it (7 s), else cc-backend v1.5.4's
        # stop/commit race can stop the wrong job and break GET /api/jobs/ for the rest of the session.
        "ccCommitInterval": 5,
    }
    config.update(overrides)
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
    return str(path)


class Daemon:
    """`cc-slurm-adapter -daemon` as a real process tree, with ccctl beside it."""

    def __init__(self, config_path: str, log_path, env: dict | None = None, debug: int = 3):
        self.config_path = config_path
        self.log_path = log_path
        self.env = python_env(env)
        self.debug = debug
        self.process: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            adapter_command("-daemon", "-config", self.config_path, "-debug", str(self.debug)),
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True,
        )
        return self

    def status(self, timeout_s: float = 2.0) -> tuple[int, dict | None]:
        result = subprocess.run(
            ccctl_command("-config", self.config_path, "status", "--json", "--timeout", str(timeout_s)),
            capture_output=True, text=True, env=self.env, cwd=REPO,
        )
        try:
            return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None
        except json.JSONDecodeError:
            return result.returncode, None

    def actors(self) -> dict:
        code, data = self.status()
        return {a["name"]: a for a in data["actors"]} if data else {}

    def all_running(self) -> dict | None:
        actors = self.actors()
        if set(actors) == ACTOR_NAMES and all(a["state"] == "running" for a in actors.values()):
            return actors
        return None

    def wait_all_running(self, timeout_s: float = 20.0) -> dict:
        return wait_for(self.all_running, timeout_s, 0.1, "all five actors running")

    def log_text(self) -> str:
        return open(self.log_path, encoding="utf-8", errors="replace").read()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
