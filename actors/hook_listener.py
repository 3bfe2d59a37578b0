"""hook_listener: receives the hook client's events and nudges slurm_querier to look at that job now.

Binds prepSockListenPath (unix socket: owner and slurm group may write, others not; or tcp),
replays the hook spool written while the daemon was down, validates every frame.
"""

from __future__ import annotations

import grp
import os
import time

import msgspec
import zmq

from actors.endpoints import ipc_path, parse_prep_address
from actors.logs import job_tag
from actors.messages import HookAck, HookEvent, HookInbox, JobNudge
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime

MAX_FRAME_BYTES = 64 * 1024  #: a hook event is about 2 KiB; larger frames disconnect the sender
SOCKET_MODE = 0o660
SLURM_GROUP = "slurm"


def run(rt: ActorRuntime) -> int:
    endpoint = parse_prep_address(rt.config.prep_sock_listen_path, key="prepSockListenPath", listen=True)
    listener = rt.socket(zmq.ROUTER)
    listener.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    if endpoint.startswith("tcp://"):
        listener.setsockopt(zmq.IPV6, 1)
    _bind_private(listener, endpoint)
    querier = rt.socket(zmq.PUSH, connect=rt.pipes.querier)
    decoder = msgspec.json.Decoder(HookInbox)
    encoder = msgspec.json.Encoder()
    rt.facts = {"listening": rt.config.prep_sock_listen_path, "events": 0, "spool_replayed": 0}
    rt.facts["spool_replayed"] = replay_spool(rt, querier, decoder)
    poller = zmq.Poller()
    poller.register(listener, zmq.POLLIN)
    while rt.keep_running():
        if not poller.poll(POLL_TIMEOUT_MS):
            continue
        while True:
            try:
                route, *frames = listener.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            nudge = handle(frames[-1] if frames else b"", decoder, rt, source="hook")
            listener.send_multipart([route, b"", encoder.encode(HookAck(accepted=nudge is not None))])
            if nudge is not None:
                rt.send(querier, nudge)
                rt.facts["events"] += 1
    return 0


def handle(frame: bytes, decoder: msgspec.json.Decoder, rt: ActorRuntime, source: str) -> JobNudge | None:
    """A valid hook event becomes a nudge; anything else is logged and dropped."""
    try:
        event = decoder.decode(frame)
    except msgspec.DecodeError as e:
        rt.log.warning("dropping a hook frame that does not decode (%d bytes): %s", len(frame), e)
        return None
    if not event.job_id.isdigit() or int(event.job_id) <= 0:
        rt.log.warning("dropping a hook event with job id %r: not a positive integer", event.job_id[:32])
        return None
    rt.log.info("%s: %s event (%s)", job_tag(event.cluster, event.job_id), event.context, source)
    return JobNudge(cluster=event.cluster, job_id=int(event.job_id), source=source, at=event.sent_at,
                    context=event.context)


def replay_spool(rt: ActorRuntime, querier: zmq.Socket, decoder: msgspec.json.Decoder) -> int:
    """Forward the events the hook client spooled while we were down; returns how many."""
    spool = rt.config.hook_spool_path
    replaying = spool + ".replaying"
    if os.path.exists(spool) and not os.path.exists(replaying):
        os.rename(spool, replaying)  # new hook events go to a fresh spool file from now on
    if not os.path.exists(replaying):
        return 0
    count = 0
    with open(replaying, "rb") as f:
        for line in f:
            nudge = handle(line.strip(), decoder, rt, source="spool")
            if nudge is not None:
                while not rt.send(querier, nudge):
                    time.sleep(0.01)
                count += 1
    os.unlink(replaying)
    rt.log.info("replayed %d spooled hook events", count)
    return count


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
