"""hook_listener: receives the hook client's events and nudges slurm_querier to look at that job now.

Binds prepSockListenPath (unix socket: owner and slurm group may write, others not; or tcp, where
the primary and the backup slurmctld may both send), replays the hook spool written while the
daemon was down, validates every frame. A flood costs bounded memory: ZeroMQ holds at most
RECEIVE_HWM frames per sender, and the nudges the querier has not taken yet wait here merged by
job (one per job, however many events it had) up to MAX_PENDING_NUDGES jobs.
"""

from __future__ import annotations

import grp
import logging
import os
import time

import msgspec
import zmq

from actors.endpoints import ipc_path, parse_prep_address
from actors.logs import job_tag
from actors.messages import HookAck, HookInbox, JobNudge
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime

MAX_FRAME_BYTES = 64 * 1024  #: a hook event is about 2 KiB; larger frames disconnect the sender
RECEIVE_HWM = 100  #: frames queued per sender (a hook client sends one); beyond, the sender waits
FRAMES_PER_PASS = 1000  #: then forward and heartbeat before reading on
MAX_PENDING_NUDGES = 100_000  #: jobs waiting for the querier; beyond, events are dropped (the poll finds them)
FLUSH_WAIT_MS = 50  #: while nudges wait for the querier, look again this often
SPOOL_CHECK_S = 10.0  #: how often to look for events spooled by hooks we did not answer in time
REPLAY_CHUNK_BYTES = 1024 * 1024  #: spool bytes read at once
MAX_JOB_ID = 2**32 - 1  #: Slurm job ids are uint32
MAX_CLUSTER_CHARS = 256
HOOK_CONTEXTS = ("prolog_slurmctld", "epilog_slurmctld")
EPILOG = "epilog_slurmctld"
WARNINGS_PER_WINDOW = 10  #: dropped-frame warnings logged per window; the rest are counted
WARNING_WINDOW_S = 60.0
SOCKET_MODE = 0o660
SLURM_GROUP = "slurm"

log = logging.getLogger("hook_listener")


class QuietWarnings:
    """Logs the first WARNINGS_PER_WINDOW warnings of each window, then one line with how many it held back."""

    def __init__(self, log):
        self.log = log
        self.window_start = 0.0
        self.logged = 0
        self.held_back = 0

    def warning(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.window_start >= WARNING_WINDOW_S:
            if self.held_back:
                self.log.warning("%d more hook frames dropped in the last %.0f s (not logged one by one)",
                                 self.held_back, now - self.window_start)
            self.window_start, self.logged, self.held_back = now, 0, 0
        if self.logged < WARNINGS_PER_WINDOW:
            self.logged += 1
            self.log.warning(message, *args)
        else:
            self.held_back += 1


class Forwarder:
    """Nudges on their way to the querier, one per job: an event for a job already waiting merges into it."""

    def __init__(self, rt: ActorRuntime, querier: zmq.Socket, limit: int = MAX_PENDING_NUDGES):
        self.rt = rt
        self.querier = querier
        self.limit = limit
        self.pending: dict[tuple[str, int], JobNudge] = {}
        self.dropped = 0  #: events dropped because `limit` jobs were waiting already
        self.forwarded = 0  #: nudges handed to the querier

    def add(self, nudge: JobNudge) -> bool:
        key = (nudge.cluster, nudge.job_id)
        waiting = self.pending.get(key)
        if waiting is not None:
            if nudge.context == EPILOG and waiting.context != EPILOG:  # the end says more than the start
                self.pending[key] = msgspec.structs.replace(waiting, context=EPILOG)
            return True
        if len(self.pending) >= self.limit:
            self.dropped += 1
            return False
        self.pending[key] = nudge
        return True

    def flush(self) -> None:
        """Send what the querier's queue takes now; the rest waits for the next pass."""
        while self.pending:
            key, nudge = next(iter(self.pending.items()))
            if not self.rt.send(self.querier, nudge):
                return
            del self.pending[key]
            self.forwarded += 1


def run(rt: ActorRuntime) -> int:
    endpoint = parse_prep_address(rt.config.prep_sock_listen_path, key="prepSockListenPath", listen=True)
    listener = rt.socket(zmq.ROUTER)
    listener.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    listener.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
    if endpoint.startswith("tcp://"):
        listener.setsockopt(zmq.IPV6, 1)
    _bind_private(listener, endpoint)
    querier = rt.socket(zmq.PUSH, connect=rt.pipes.querier)
    decoder = msgspec.json.Decoder(HookInbox)
    acks = {accepted: msgspec.json.encode(HookAck(accepted=accepted)) for accepted in (True, False)}
    warnings = QuietWarnings(rt.log)
    forwarder = Forwarder(rt, querier)
    rt.facts = {"listening": rt.config.prep_sock_listen_path, "events": 0, "rejected": 0, "dropped": 0,
                "forwarded": 0, "pending_nudges": 0, "spool_replayed": 0}
    spool = SpoolReplay(rt.config.hook_spool_path)
    poller = zmq.Poller()
    poller.register(listener, zmq.POLLIN)
    while rt.keep_running():
        forwarder.flush()
        if spool.active or (time.time() - spool.checked_at >= SPOOL_CHECK_S and spool.begin(time.time())):
            replay(rt, spool, forwarder, decoder, warnings)
            forwarder.flush()
        rt.facts["pending_nudges"], rt.facts["forwarded"] = len(forwarder.pending), forwarder.forwarded
        if forwarder.dropped != rt.facts["dropped"]:
            warnings.warning("%d jobs are waiting for slurm_querier already: %d hook events dropped so far "
                             "(the next poll finds those jobs)", len(forwarder.pending), forwarder.dropped)
            rt.facts["dropped"] = forwarder.dropped
        poller.register(querier, zmq.POLLOUT if forwarder.pending else 0)
        if poller.poll(FLUSH_WAIT_MS if forwarder.pending or spool.active else POLL_TIMEOUT_MS):
            receive(rt, listener, forwarder, decoder, warnings, acks)
    return 0


def receive(rt: ActorRuntime, listener: zmq.Socket, forwarder: Forwarder, decoder: msgspec.json.Decoder,
            warnings: QuietWarnings, acks: dict[bool, bytes]) -> None:
    """Answer and take up to FRAMES_PER_PASS waiting frames."""
    for _ in range(FRAMES_PER_PASS):
        try:
            route, *frames = listener.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        nudge = handle(frames[-1] if frames else b"", decoder, warnings, source="hook")
        listener.send_multipart([route, b"", acks[nudge is not None]])
        if nudge is None:
            rt.facts["rejected"] += 1
        else:
            rt.facts["events"] += 1
            forwarder.add(nudge)


def handle(frame: bytes, decoder: msgspec.json.Decoder, warnings: QuietWarnings, source: str) -> JobNudge | None:
    """A valid hook event becomes a nudge; anything else is logged and dropped."""
    try:
        event = decoder.decode(frame)
    except msgspec.DecodeError as e:
        warnings.warning("dropping a hook frame that does not decode (%d bytes): %s", len(frame), e)
        return None
    job_id = event.job_id
    if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 10 and 0 < int(job_id) <= MAX_JOB_ID):
        warnings.warning("dropping a hook event with job id %r: not a Slurm job id", job_id[:32])
        return None
    if (event.context not in HOOK_CONTEXTS or len(event.cluster) > MAX_CLUSTER_CHARS
            or not event.cluster.isprintable()):
        warnings.warning("dropping a hook event of job %s with context %r, cluster %r: not from a Slurm hook",
                         job_id, event.context[:32], event.cluster[:32])
        return None
    log.info("%s: %s event (%s)", job_tag(event.cluster, job_id), event.context, source)
    return JobNudge(cluster=event.cluster, job_id=int(job_id), source=source, at=event.sent_at, context=event.context)


class SpoolReplay:
    """The spool the hook client wrote while the daemon did not answer: renamed away from the hook
    clients, read, and deleted only once all its events are with the querier (a crash before that
    replays them again: a nudge twice is harmless). Looked for at start and every SPOOL_CHECK_S."""

    def __init__(self, spool_path: str):
        self.spool_path = spool_path
        self.path = spool_path + ".replaying"
        self.offset = 0  #: bytes of self.path read so far
        self.count = 0  #: events of this file handed on
        self.active = False
        self.checked_at = 0.0

    def begin(self, now: float) -> bool:
        """True when there is something to replay (a file left by a crash first, then a new spool)."""
        self.checked_at = now
        try:
            if not os.path.exists(self.path):
                if not os.path.exists(self.spool_path):
                    return False
                os.rename(self.spool_path, self.path)  # new hook events go to a fresh spool file from now on
        except OSError as e:
            log.warning("cannot replay the hook spool %s: %s", self.spool_path, e.strerror)
            return False
        self.active, self.offset, self.count = True, 0, 0
        return True

    def read_new(self) -> list[bytes]:
        """The next whole lines (a hook that opened the spool just before the rename still writes its
        line into this file, so this reads on until nothing new comes)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(REPLAY_CHUNK_BYTES)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) == REPLAY_CHUNK_BYTES:
            end = len(data)  # longer than any event: dropped as one bad line
        self.offset += end
        return data[:end].splitlines()

    def finish(self) -> None:
        os.unlink(self.path)
        self.active = False
        log.info("replayed %d spooled hook events", self.count)


def replay(rt: ActorRuntime, spool: SpoolReplay, forwarder: Forwarder, decoder: msgspec.json.Decoder,
           warnings: QuietWarnings) -> None:
    """One step of the replay: queue the spool's next lines, or delete it once all went to the querier."""
    if forwarder.pending:
        return
    lines = spool.read_new()
    if not lines:
        spool.finish()
        return
    for line in lines:
        nudge = handle(line.strip(), decoder, warnings, source="spool")
        if nudge is not None and forwarder.add(nudge):
            spool.count += 1
            rt.facts["spool_replayed"] += 1


def _bind_private(sock: zmq.Socket, endpoint: str) -> None:
    path = ipc_path(endpoint)
    if path is None:
        sock.bind(endpoint)
        return
    old_umask = os.umask(0o117)
    try:
        sock.bind(endpoint)
    finally:
        os.umask(old_umask)
    try:
        os.chown(path, -1, grp.getgrnam(SLURM_GROUP).gr_gid)
    except (KeyError, PermissionError):
        pass  # no slurm group here, or not allowed: owner-only access still works
    os.chmod(path, SOCKET_MODE)
