"""Asking the running supervisor one control question (Lazy Pirate style: one try, a timeout, LINGER 0)."""

from __future__ import annotations

import os

import msgspec
import zmq

from actors.messages import CtlReply, CtlRequest


def request_daemon(ctl_sock_path: str, command: str, timeout_s: float) -> CtlReply | None:
    """The supervisor's reply, or None when nobody answers on the control socket within timeout_s."""
    if not os.path.exists(ctl_sock_path):
        return None
    context = zmq.Context(io_threads=1)
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect("ipc://" + ctl_sock_path)
        sock.send(msgspec.json.encode(CtlRequest(command=command)))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return msgspec.json.decode(sock.recv(), type=CtlReply)
    except (zmq.ZMQError, msgspec.DecodeError):
        return None
    finally:
        sock.close(linger=0)
        context.term()
