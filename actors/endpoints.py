"""Every socket address of the daemon: the hook socket from the config, the internal ipc:// pipes."""

from __future__ import annotations

import os
import re

from actors.errors import ConfigError

#: Linux limit of a unix socket path (sun_path minus the terminating NUL).
MAX_UNIX_PATH_BYTES = 107


def parse_prep_address(text: str, *, key: str, listen: bool) -> str:
    """The original's socket syntax, as a ZeroMQ endpoint.

    `/path` and `unix:/path` are unix sockets (ipc://); `tcp:HOST:PORT`, `tcp:[::1]:PORT` and
    `tcp::PORT` (all interfaces when listening, this host when connecting) are TCP.
    """
    network, sep, rest = text.partition(":")
    if not sep:
        return _ipc(text, key, listen)
    network = network.lower()
    if network == "unix":
        return _ipc(rest, key, listen)
    if network not in ("tcp", "tcp4", "tcp6"):
        raise ConfigError(f"key {key}: {text!r} is neither a path, unix:/path nor tcp:HOST:PORT")
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(\d{1,5})", rest)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"key {key}: {text!r} is not tcp:HOST:PORT (e.g. tcp:127.0.0.1:12345, tcp:[::1]:12345)")
    host, port = match.groups()
    if not host:
        host = "*" if listen else "127.0.0.1"
    elif listen and host in ("0.0.0.0", "[::]"):
        host = "*"
    return f"tcp://{host}:{port}"


def _ipc(path: str, key: str, listen: bool) -> str:
    if not path.startswith("/"):
        raise ConfigError(f"key {key}: socket path {path!r} must be absolute")
    if len(path.encode()) > MAX_UNIX_PATH_BYTES:
        raise ConfigError(f"key {key}: socket path {path!r} is longer than {MAX_UNIX_PATH_BYTES} bytes: use a shorter one")
    if listen:
        ensure_writable_dir(os.path.dirname(path), key)
    return "ipc://" + path


def ensure_writable_dir(path: str, key: str) -> None:
    """Create the directory a config key points into, or say which key and why not."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"key {key}: directory {path} cannot be created ({e.strerror}): fix the path") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"key {key}: directory {path} is not writable for this user: fix its owner or mode")


def ipc_path(endpoint: str) -> str | None:
    """The file behind an ipc:// endpoint, None for tcp://."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


class Pipes:
    """The internal ipc:// pipes, all in the runtime directory next to the control socket."""

    def __init__(self, runtime_dir: str, ctl_sock_path: str):
        self.runtime_dir = runtime_dir
        self.control = "ipc://" + ctl_sock_path  #: ccctl -> supervisor (ROUTER, mode 0600)
        self.heartbeats = self._pipe("heartbeat")  #: every actor -> supervisor (PULL)
        self.querier = self._pipe("querier")  #: hook_listener, translator -> slurm_querier (PULL)
        self.translator = self._pipe("translator")  #: slurm_querier -> translator (PULL)
        self.outbox_news = self._pipe("outbox")  #: translator -> sinks (PUB/SUB wake-ups)

    def _pipe(self, name: str) -> str:
        return f"ipc://{os.path.join(self.runtime_dir, f'ccsa-{name}.ipc')}"

    def files(self) -> list[str]:
        return [ipc_path(e) for e in (self.control, self.heartbeats, self.querier, self.translator, self.outbox_news)]
