"""What every actor process shares: its ZeroMQ context, heartbeats, signals, parent watch."""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from typing import Callable

import msgspec
import zmq

from actors.config import Config
from actors.endpoints import Pipes
from actors.logs import setup_logging
from actors.messages import Heartbeat

HEARTBEAT_INTERVAL_S = 1.0
LINGER_MS = 200  #: how long a closing socket may still flush
POLL_TIMEOUT_MS = 500  #: the longest an actor loop sleeps before it beats and checks its parent
EXIT_OK = 0
EXIT_CRASHED = 70  #: EX_SOFTWARE: an exception escaped the actor's loop
EXIT_CONFIG = 78  #: EX_CONFIG: the actor cannot work with this config; the supervisor halts
#: Test-only fault injection: actor names (comma separated) that exit at once on every start ...
CRASH_AT_START_ENV = "CCSA_TEST_CRASH_ACTORS"
#: ... or that hang (no heartbeat, SIGTERM ignored) right after their first heartbeat.
HANG_ENV = "CCSA_TEST_HANG_ACTORS"

_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1


class ActorRuntime:
    def __init__(self, name: str, config: Config, pipes: Pipes, debug_level: int):
        self.name = name
        self.config = config
        self.pipes = pipes
        self.debug_level = debug_level
        self.log = logging.getLogger(name)
        self.parent_pid = os.getppid()
        self.facts: dict = {}
        self.stop_requested = False
        self.context = zmq.Context(io_threads=1)
        self._sockets: list[zmq.Socket] = []
        self._heartbeats = self.socket(zmq.PUSH, connect=pipes.heartbeats)
        self._heartbeats.setsockopt(zmq.SNDHWM, 10)
        self._encoder = msgspec.json.Encoder()
        self._last_beat_at = 0.0

    def socket(self, kind: int, *, bind: str | None = None, connect: str | None = None) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        if bind:
            sock.bind(bind)
        if connect:
            sock.connect(connect)
        self._sockets.append(sock)
        return sock

    def send(self, sock: zmq.Socket, message) -> bool:
        """Send without blocking; False when the peer's queue is full (the caller retries later)."""
        try:
            sock.send(self._encoder.encode(message), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def receive_all(self, sock: zmq.Socket, decoder: msgspec.json.Decoder) -> list:
        """Every message waiting on `sock`, decoded; a frame that does not decode is logged and dropped."""
        messages = []
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return messages
            message = self._decode(frame, decoder)
            if message is not None:
                messages.append(message)

    def receive_one(self, sock: zmq.Socket, decoder: msgspec.json.Decoder):
        """The next message waiting on `sock`, decoded; None when none waits or it does not decode.
        For big messages: only one of them is in memory at a time."""
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        return self._decode(frame, decoder)

    def _decode(self, frame: bytes, decoder: msgspec.json.Decoder):
        try:
            return decoder.decode(frame)
        except msgspec.DecodeError as e:
            self.log.warning("dropping a frame that does not decode: %s", e)
            return None

    def beat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_beat_at >= HEARTBEAT_INTERVAL_S:
            self._last_beat_at = now
            self.send(self._heartbeats, Heartbeat(actor=self.name, pid=os.getpid(), sent_at=now, facts=self.facts))

    def keep_running(self) -> bool:
        """Call once per loop pass: beats, and says whether to go on."""
        if os.getppid() != self.parent_pid:
            self.log.warning("supervisor is gone; exiting")
            return False
        self.beat()
        return not self.stop_requested

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=LINGER_MS)
        self.context.term()


def run_actor(name: str, module: str, config: Config, pipes: Pipes, debug_level: int) -> int:
    """Body of a freshly forked actor process; returns its exit code (the caller os._exit()s)."""
    _become_child_process(name)
    setup_logging(debug_level, config.secrets())
    log = logging.getLogger(name)
    if name in os.environ.get(CRASH_AT_START_ENV, "").split(","):
        log.error("exiting at start (%s)", CRASH_AT_START_ENV)
        return 1
    runtime = None
    try:
        run: Callable[[ActorRuntime], int] = importlib.import_module(module).run
        runtime = ActorRuntime(name, config, pipes, debug_level)
        _install_signal_handlers(runtime)
        runtime.beat(force=True)
        if name in os.environ.get(HANG_ENV, "").split(","):
            log.error("hanging on purpose (%s)", HANG_ENV)
            while True:
                time.sleep(1)
        return run(runtime)
    except Exception:
        log.critical("crashed: %s", traceback.format_exc().replace("\n", " | "))
        return EXIT_CRASHED
    finally:
        if runtime is not None:
            runtime.close()
        sys.stderr.flush()


def _become_child_process(name: str) -> None:
    # Drop every descriptor inherited from the supervisor (its sockets, its pid-file lock).
    signal.set_wakeup_fd(-1)
    os.closerange(3, _max_fd())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        libc.prctl(_PR_SET_NAME, f"ccsa-{name}"[:15].encode())
    except (OSError, AttributeError):
        pass  # not Linux: the getppid() check in keep_running() still ends us


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def _install_signal_handlers(runtime: ActorRuntime) -> None:
    # SIGINT goes to the whole foreground process group; only the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def on_term(signum, frame):
        if runtime.stop_requested:
            os._exit(EXIT_OK)  # second SIGTERM: now
        runtime.stop_requested = True  # first: finish the current item

    signal.signal(signal.SIGTERM, on_term)
