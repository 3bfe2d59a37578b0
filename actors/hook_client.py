"""The Slurm PrologSlurmctld/EpilogSlurmctld hook client: tell the daemon a job started or ended.

It never fails a job because of the daemon: daemon down, socket missing, no answer in time ->
the event goes to the spool file (replayed by hook_listener at its start) and we exit 0.

Every Slurm job pays for this program's start-up, so it imports only json and zmq: it reads the
three config keys it needs itself (the daemon validates the whole file) and writes the HookEvent
message (actors/messages.py) as plain JSON; tests check both against their msgspec definitions.
"""

from __future__ import annotations

import os
import socket
import sys
import time

#: The PrEp variables the original forwards to its daemon.
FORWARDED_VARIABLES = (
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_CLUSTER_NAME", "SLURM_JOB_ACCOUNT",
    "SLURM_JOB_COMMENT", "SLURM_JOB_CONSTRAINTS", "SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_DERIVED_EC",
    "SLURM_JOB_END_TIME", "SLURM_JOB_EXIT_CODE", "SLURM_JOB_EXIT_CODE2", "SLURM_JOB_EXTRA",
    "SLURM_JOB_GID", "SLURM_JOB_GROUP", "SLURM_JOB_ID", "SLURM_JOB_LICENSES", "SLURM_JOB_NAME",
    "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES", "SLURM_JOB_OVERSUBSCRIBE", "SLURM_JOB_PARTITION",
    "SLURM_JOB_RESERVATION", "SLURM_JOB_RESTART_COUNT", "SLURM_JOB_START_TIME", "SLURM_JOB_STDERR",
    "SLURM_JOB_STDIN", "SLURM_JOB_STDOUT", "SLURM_JOB_UID", "SLURM_JOB_USER", "SLURM_JOB_WORK_DIR",
    "SLURM_SCRIPT_CONTEXT", "SLURM_WCKEY",
)
HOOK_CONTEXTS = ("prolog_slurmctld", "epilog_slurmctld")
#: The config keys the hook client reads, with the defaults of actors.config.Config.
HOOK_DEFAULTS = {
    "prepSockConnectPath": "/run/cc-slurm-adapter/daemon.sock",
    "stateDir": "/var/lib/cc-slurm-adapter",
    "hookSpoolMaxBytes": 16 * 1024 * 1024,
}
DEFAULT_CONFIG_PATH = "/etc/cc-slurm-adapter/config.json"
SPOOL_FILE = "hook-spool.jsonl"
ACK_TIMEOUT_MS = 1000  #: a daemon that is up answers in about a millisecond
EXIT_OK = 0
EXIT_NOT_IN_SLURM = 1


def run_hook_client(config_path: str | None, debug_level: int) -> int:
    environ = os.environ
    if not environ.get("SLURM_JOB_ID"):
        sys.stderr.write(
            "SLURM_JOB_ID is not set: are we running in a Slurm PrEp context? "
            "Start the daemon with -daemon; slurmctld runs this without it.\n"
        )
        return EXIT_NOT_IN_SLURM
    context = environ.get("SLURM_SCRIPT_CONTEXT", "")
    if context not in HOOK_CONTEXTS:
        sys.stderr.write(f"SLURM_SCRIPT_CONTEXT is {context!r}, expected prolog_slurmctld or epilog_slurmctld\n")
        return EXIT_NOT_IN_SLURM
    import json

    from actors.endpoints import ipc_path, parse_prep_address
    from actors.errors import ConfigError

    try:
        settings = read_hook_settings(config_path)
        endpoint = parse_prep_address(settings["prepSockConnectPath"], key="prepSockConnectPath", listen=False)
    except ConfigError as e:
        sys.stderr.write(f"cc-slurm-adapter hook: {e}\n")
        return EXIT_NOT_IN_SLURM
    event = {  # = actors.messages.HookEvent
        "kind": "hook_event",
        "job_id": environ["SLURM_JOB_ID"],
        "cluster": environ.get("SLURM_CLUSTER_NAME", ""),
        "context": context,
        "sent_at": time.time(),
        "env": {name: environ.get(name, "") for name in FORWARDED_VARIABLES},
    }
    frame = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    path = ipc_path(endpoint)
    if (path is None or _listener_present(path)) and _send(endpoint, frame):
        return EXIT_OK
    _spool(os.path.join(settings["stateDir"], SPOOL_FILE), frame, settings["hookSpoolMaxBytes"])
    return EXIT_OK


def read_hook_settings(config_path: str | None) -> dict:
    """The keys of HOOK_DEFAULTS from the config file; a missing default file means defaults."""
    import json

    from actors.errors import ConfigError

    path = config_path or DEFAULT_CONFIG_PATH
    settings = dict(HOOK_DEFAULTS)
    try:
        with open(path, "rb") as f:
            raw = json.load(f)
    except FileNotFoundError:
        if config_path:
            raise ConfigError(f"config file {path} does not exist: pass an existing file to -config") from None
        return settings
    except (OSError, ValueError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    for key, default in HOOK_DEFAULTS.items():
        value = raw.get(key, default) if isinstance(raw, dict) else default
        if type(value) is not type(default):
            raise ConfigError(f"{path}: key {key}: expected {type(default).__name__}")
        settings[key] = value
    return settings


def _listener_present(path: str) -> bool:
    """A unix socket someone listens on; a stale file or no file means the daemon is down."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _send(endpoint: str, frame: bytes) -> bool:
    import zmq

    context = zmq.Context(io_threads=1)
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"", frame])
        if sock.poll(ACK_TIMEOUT_MS, zmq.POLLIN):
            return bool(sock.recv_multipart())
        return False
    except zmq.ZMQError:
        return False
    finally:
        sock.close(linger=0)
        context.term()


def _spool(path: str, frame: bytes, max_bytes: int) -> None:
    """Append one line in one write: O_APPEND puts each write whole at the end, even with concurrent hooks."""
    line = frame + b"\n"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            if os.fstat(fd).st_size + len(line) > max_bytes:
                sys.stderr.write(f"cc-slurm-adapter hook: spool {path} is full; event dropped, the poll will find the job\n")
                return
            os.write(fd, line)
        finally:
            os.close(fd)
        sys.stderr.write(f"cc-slurm-adapter hook: daemon unreachable; event spooled to {path}\n")
    except OSError as e:
        sys.stderr.write(f"cc-slurm-adapter hook: daemon unreachable and spool {path} not writable ({e.strerror}); the poll will find the job\n")
