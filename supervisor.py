"""The supervisor: forks the five actors, watches them, restarts them, answers ccctl.

One loop, like gunicorn's arbiter: signal handlers only enqueue; each pass reaps with
waitpid(WNOHANG), reads heartbeats and control requests, kills hung actors, respawns what is due,
and pets systemd. Nothing here knows about Slurm or cc-backend.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import socket
import time

import msgspec
import zmq

from actors import VERSION
from actors import restart_policy as policy
from actors import systemd
from actors.config import Config, check_daemon_config, load_config, probe_metrics_listen
from actors.ctl_commands import answer_control
from actors.endpoints import Pipes, ipc_path, parse_prep_address
from actors.errors import ConfigError
from actors.messages import CtlReply, CtlRequest, Heartbeat
from actors.pidfile import AlreadyRunning, PidFile
from actors.runtime import EXIT_CONFIG, run_actor

#: The five actors, in start order: name -> the module whose run(runtime) is the actor.
#: Each is imported in its own process after the fork, so a library only one actor needs
#: (requests, nats-py) is loaded once, not copied into every process of the tree.
ACTORS = {
    "hook_listener": "actors.hook_listener",
    "translator": "actors.translator",
    "rest_submitter": "actors.rest_submitter",
    "nats_publisher": "actors.nats_publisher",
    "slurm_querier": "actors.slurm_querier",
}
#: Libraries that two or more actors import (the store, TLS, email parsing under HTTP, subprocess):
#: loaded once before the fork, their pages are shared by the whole tree instead of copied into each.
SHARED_MODULES = ("sqlite3", "ssl", "subprocess", "email.parser", "email.message", "importlib.metadata",
                  "zipfile", "hashlib", "hmac", "base64", "csv", "tempfile", "actors.outbox", "actors.slurm_views",
                  "actors.slurm_live_views", "actors.backoff")
#: Forked only when metricsListen is set: off, it is not started, not listed, and nothing of
#: prometheus_client is loaded anywhere in the tree.
METRICS_ACTOR = {"metrics_exporter": "actors.metrics_exporter"}
LOOP_TIMEOUT_MS = 200
SHUTDOWN_GRACE_S = 4.0  #: SIGTERM to SIGKILL on shutdown; the whole stop stays under 5 s
EXIT_OK = 0
EXIT_START_FAILED = 1

log = logging.getLogger("supervisor")


class ActorSlot:
    """What the supervisor knows about one actor; shown by `ccctl status`."""

    def __init__(self, name: str):
        self.name = name
        self.pid: int | None = None
        self.state = "stopped"  # running | restarting | flapping | stopped
        self.restarts = 0
        self.consecutive_failures = 0
        self.exit_times: list[float] = []
        self.started_at = 0.0
        self.last_heartbeat_at: float | None = None
        self.next_start_at = 0.0
        self.term_sent_at: float | None = None
        self.last_exit = ""
        self.facts: dict = {}

    def heartbeat_age_s(self, now: float) -> float | None:
        return None if self.last_heartbeat_at is None else round(now - self.last_heartbeat_at, 1)


class Supervisor:
    def __init__(self, config: Config, config_path: str | None, debug_level: int):
        self.config = config
        self.config_path = config_path
        self.debug_level = debug_level
        self.pipes = Pipes(config.runtime_dir, config.ctl_sock_path)
        self.modules = actor_modules(config)
        self.slots = {name: ActorSlot(name) for name in self.modules}
        self.started_at = time.time()
        self.pending_signals: list[int] = []
        self.stopping = False
        self.ready_sent = False
        self.exit_code = EXIT_OK
        self.pidfile = PidFile(config.pid_file_path)
        self.version = VERSION
        self._watchdog_s = systemd.watchdog_interval_s()
        self._last_watchdog_at = 0.0
        self._decoder = msgspec.json.Decoder(Heartbeat)
        self._ctl_decoder = msgspec.json.Decoder(CtlRequest)
        self._encoder = msgspec.json.Encoder()

    # --- life cycle ---------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.pidfile.acquire()
        except AlreadyRunning as e:
            log.critical("%s", e)
            return EXIT_START_FAILED
        try:
            self._open_sockets()
        except zmq.ZMQError as e:
            log.critical("cannot open the control socket %s: %s", self.config.ctl_sock_path, e)
            self.pidfile.release()
            return EXIT_START_FAILED
        self._install_signal_handlers()
        log.info("supervisor %s started (pid %d), actors: %s", VERSION, os.getpid(), ", ".join(self.modules))
        for module in SHARED_MODULES:
            importlib.import_module(module)
        gc.freeze()  # keep the pre-fork heap shared with the children (copy-on-write)
        try:
            while not self.stopping:
                self._one_pass()
        finally:
            self._shutdown()
        return self.exit_code

    def _open_sockets(self) -> None:
        self.context = zmq.Context(io_threads=1)
        for path in self.pipes.files():
            _remove_stale_socket(path)  # safe: we hold the pid-file lock
        self.control = self.context.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        old_umask = os.umask(0o177)
        try:
            self.control.bind(self.pipes.control)
        finally:
            os.umask(old_umask)
        os.chmod(ipc_path(self.pipes.control), 0o600)
        self.heartbeats = self.context.socket(zmq.PULL)
        self.heartbeats.setsockopt(zmq.LINGER, 0)
        self.heartbeats.bind(self.pipes.heartbeats)
        self.wakeup_reader, self.wakeup_writer = socket.socketpair()
        self.wakeup_reader.setblocking(False)
        self.wakeup_writer.setblocking(False)
        self.poller = zmq.Poller()
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.heartbeats, zmq.POLLIN)
        self.poller.register(self.wakeup_reader.fileno(), zmq.POLLIN)

    def _hook_socket_path(self) -> str | None:
        endpoint = parse_prep_address(self.config.prep_sock_listen_path, key="prepSockListenPath", listen=False)
        return ipc_path(endpoint)

    def _install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self.wakeup_writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        self.pending_signals.append(signum)  # only enqueue; the loop acts on it

    def _shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        log.info("stopping actors")
        for slot in self.slots.values():
            if slot.pid:
                _kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while any(s.pid for s in self.slots.values()) and time.monotonic() < deadline:
            self._reap(respawn=False)
            time.sleep(0.05)
        for slot in self.slots.values():
            if slot.pid:
                log.warning("%s (pid %d) did not stop in time; killing it", slot.name, slot.pid)
                _kill(slot.pid, signal.SIGKILL)
        self._reap(respawn=False, block=True)
        self.control.close(linger=0)
        self.heartbeats.close(linger=0)
        self.context.term()
        for path in self.pipes.files() + [self._hook_socket_path()]:
            _remove_stale_socket(path)
        self.pidfile.release()
        log.info("supervisor stopped")

    # --- one pass of the loop -------------------------------------------------------------------

    def _one_pass(self) -> None:
        events = dict(self.poller.poll(LOOP_TIMEOUT_MS))
        if self.wakeup_reader.fileno() in events:
            self._drain_wakeups()
        self._handle_signals()
        if self.heartbeats in events:
            self._read_heartbeats()
        if self.control in events:
            self._answer_control()
        now = time.time()
        self._reap(respawn=True)
        self._kill_hung(now)
        if not self.stopping:
            self._spawn_due(now)
        self._notify_systemd(now)

    def _drain_wakeups(self) -> None:
        try:
            while self.wakeup_reader.recv(512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.pending_signals:
            signum = self.pending_signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("got %s: shutting down", signal.Signals(signum).name)
                self.stopping = True
            elif signum == signal.SIGHUP:
                self._reload()

    def _read_heartbeats(self) -> None:
        while True:
            try:
                frame = self.heartbeats.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                beat = self._decoder.decode(frame)
            except msgspec.DecodeError as e:
                log.warning("dropping a heartbeat frame that does not decode: %s", e)
                continue
            slot = self.slots.get(beat.actor)
            if slot is None or slot.pid != beat.pid:
                continue  # a late beat from a process we already replaced
            slot.last_heartbeat_at = time.time()
            slot.facts = beat.facts
            if slot.state == "restarting":
                slot.state = "running"

    def _answer_control(self) -> None:
        while True:
            try:
                envelope = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            *route, frame = envelope
            try:
                request = self._ctl_decoder.decode(frame)
                reply = answer_control(self, request)
            except msgspec.DecodeError as e:
                reply = CtlReply(ok=False, error=f"request does not decode: {e}")
            except Exception as e:  # a bad command must never take the supervisor down
                log.exception("control command failed")
                reply = CtlReply(ok=False, error=f"{type(e).__name__}: {e}")
            self.control.send_multipart([*route, self._encoder.encode(reply)])

    def _reap(self, respawn: bool, block: bool = False) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots.values() if s.pid == pid), None)
            if slot is not None:
                self._on_exit(slot, status, respawn)

    def _on_exit(self, slot: ActorSlot, status: int, respawn: bool) -> None:
        now = time.time()
        code = os.waitstatus_to_exitcode(status)
        slot.last_exit = f"signal {-code}" if code < 0 else f"exit {code}"
        slot.pid = None
        slot.term_sent_at = None
        slot.last_heartbeat_at = None
        if not respawn or self.stopping:
            slot.state = "stopped"
            return
        if code == EXIT_CONFIG:
            log.critical("%s cannot work with this configuration (exit %d); stopping the daemon", slot.name, code)
            self.exit_code = EXIT_CONFIG
            self.stopping = True
            slot.state = "stopped"
            return
        slot.exit_times = policy.recent_exits(slot.exit_times + [now], now)
        slot.consecutive_failures = policy.consecutive_failures_after_exit(slot.consecutive_failures, now - slot.started_at)
        flapping = policy.is_flapping(slot.exit_times, now)
        slot.state = "flapping" if flapping else "restarting"
        delay = policy.restart_delay_s(slot.consecutive_failures, flapping)
        slot.next_start_at = now + delay
        log.error("%s died (%s); restarting in %.1f s%s", slot.name, slot.last_exit, delay, " (flapping)" if flapping else "")

    def _kill_hung(self, now: float) -> None:
        timeout = self.config.heartbeat_timeout
        for slot in self.slots.values():
            if not slot.pid:
                continue
            if policy.should_kill(slot.term_sent_at, now):
                log.error("%s (pid %d) ignored SIGTERM; killing it", slot.name, slot.pid)
                _kill(slot.pid, signal.SIGKILL)
            elif slot.term_sent_at is None and policy.is_hung(slot.last_heartbeat_at or slot.started_at, now, timeout):
                log.error("%s (pid %d) sent no heartbeat for %d s; terminating it", slot.name, slot.pid, timeout)
                _kill(slot.pid, signal.SIGTERM)
                slot.term_sent_at = now

    def _spawn_due(self, now: float) -> None:
        for slot in self.slots.values():
            if slot.pid is None and now >= slot.next_start_at:
                self._spawn(slot, now)

    def _spawn(self, slot: ActorSlot, now: float) -> None:
        if slot.started_at:
            slot.restarts += 1
        slot.started_at = now
        pid = os.fork()
        if pid == 0:
            code = EXIT_START_FAILED
            try:
                code = run_actor(slot.name, self.modules[slot.name], self.config, self.pipes, self.debug_level)
            finally:
                os._exit(code)
        slot.pid = pid
        if slot.state != "flapping":
            slot.state = "restarting" if slot.restarts else "running"
        log.debug("started %s (pid %d)", slot.name, pid)

    def _notify_systemd(self, now: float) -> None:
        if not self.ready_sent and all(s.last_heartbeat_at for s in self.slots.values()):
            self.ready_sent = True
            systemd.notify(f"READY=1\nSTATUS={self.summary()}")
            log.info("all actors reported in: %s", self.summary())
        if self._watchdog_s and now - self._last_watchdog_at >= self._watchdog_s:
            self._last_watchdog_at = now
            systemd.notify(f"WATCHDOG=1\nSTATUS={self.summary()}")

    def summary(self) -> str:
        states = [s.state for s in self.slots.values()]
        running = states.count("running")
        return f"{running}/{len(states)} actors running" + ("" if running == len(states) else ": degraded")

    def _reload(self) -> None:
        try:
            new = load_config(self.config_path, warn=log.warning)
            check_daemon_config(new)
        except ConfigError as e:
            log.error("SIGHUP: new configuration refused, keeping the old one: %s", e)
            return
        for key in ("pid_file_path", "ctl_sock_path", "metrics_listen"):
            if getattr(new, key) != getattr(self.config, key):
                log.warning("SIGHUP: %s changed; it takes effect only after a restart", key)
                new = msgspec.structs.replace(new, **{key: getattr(self.config, key)})
        self.config = new
        log.info("SIGHUP: configuration reloaded; restarting actors")
        for slot in self.slots.values():
            if slot.pid:
                _kill(slot.pid, signal.SIGTERM)
                slot.term_sent_at = time.time()


def actor_modules(config: Config) -> dict[str, str]:
    """The actors this config runs, in start order: the five, and metrics_exporter when metricsListen is set."""
    return {**ACTORS, **METRICS_ACTOR} if config.metrics_listen else dict(ACTORS)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _remove_stale_socket(path: str | None) -> None:
    if path and os.path.exists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def run_daemon(config_path: str | None, debug_level: int) -> int:
    """`cc-slurm-adapter -daemon`: check everything, then supervise until told to stop."""
    from actors.logs import setup_logging
    from actors.malloc_tuning import keep_big_blocks_out_of_the_heap

    keep_big_blocks_out_of_the_heap()
    setup_logging(debug_level)
    try:
        config = load_config(config_path, warn=log.warning)
        check_daemon_config(config)
        parse_prep_address(config.prep_sock_connect_path, key="prepSockConnectPath", listen=False)
        probe_metrics_listen(config)
    except ConfigError as e:
        log.critical("%s", e)
        return EXIT_START_FAILED
    setup_logging(debug_level, config.secrets())
    return Supervisor(config, config_path, debug_level).run()
