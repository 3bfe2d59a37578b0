"""config.json: the original adapter's keys and defaults, plus ours, validated before anything starts.

Every problem becomes one ConfigError line that names the key and says how to fix it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat

import msgspec

from actors.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/cc-slurm-adapter/config.json"

#: Keys the original adapter's README uses under another name: old name -> real name.
KEY_ALIASES = {"slurmQueryMaxRetries": "slurmMaxRetries"}
#: Keys the original removed; using them is an error with a hint.
REMOVED_KEYS = {"ipcSockPath": "use prepSockListenPath and prepSockConnectPath instead"}
#: Intervals the original raises to 1 s with a warning when lower.
MIN_ONE_SECOND_KEYS = ("slurmPollInterval", "slurmQueryDelay")
#: Values that must never reach a log line, a status answer or an error message.
SECRET_KEYS = ("ccRestJwt", "natsPassword")


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    # --- the original adapter's keys, same names and defaults ---
    pid_file_path: str = "/run/cc-slurm-adapter/daemon.pid"
    prep_sock_listen_path: str = "/run/cc-slurm-adapter/daemon.sock"
    prep_sock_connect_path: str = "/run/cc-slurm-adapter/daemon.sock"
    last_run_path: str = "/var/lib/cc-slurm-adapter/lastrun"
    slurm_poll_interval: int = 60  #: s
    slurm_query_delay: int = 1  #: s
    slurm_query_max_span: int = 604800  #: s
    slurm_max_retries: int = 10
    cc_rest_url: str = ""
    cc_rest_jwt: str = ""
    cc_rest_submit_jobs: bool = True
    cc_poll_interval: int = 21600  #: s
    gpu_pci_addrs: dict[str, list[str]] = {}
    ignore_hosts: str = ""
    nats_server: str = ""
    nats_port: int = 4222
    nats_subject: str = "jobs"
    nats_user: str = ""
    nats_password: str = ""
    nats_creds_file: str = ""
    nats_n_key_seed_file: str = ""
    # --- ours ---
    state_dir: str = "/var/lib/cc-slurm-adapter"
    ctl_sock_path: str = "/run/cc-slurm-adapter/ctl.sock"
    slurm_command_timeout: int = 300  #: s, one Slurm command at most
    slurm_query_chunk: int = 21600  #: s, the widest sacct window read at once
    cc_rest_timeout: int = 30  #: s, one HTTP request at most
    heartbeat_timeout: int = 120  #: s without a heartbeat before an actor counts as hung
    delivered_retention: int = 604800  #: s a delivered outbox row is kept
    hook_spool_max_bytes: int = 16 * 1024 * 1024
    metrics_listen: str = ""  #: "host:port" for the OpenMetrics endpoint; empty = off
    #: s, cc-backend's cron.commit-job-worker (its default "2m"): a REST stop waits until its start is
    #: this old, so it meets a committed job (docs/engineering-notes.md: the v1.5 stop/commit race)
    cc_commit_interval: int = 120

    @property
    def outbox_path(self) -> str:
        return os.path.join(self.state_dir, "outbox.sqlite3")

    @property
    def hook_spool_path(self) -> str:
        return os.path.join(self.state_dir, "hook-spool.jsonl")

    @property
    def runtime_dir(self) -> str:
        """Where the actors' ipc:// pipes live: next to the control socket."""
        return os.path.dirname(os.path.abspath(self.ctl_sock_path))

    def secrets(self) -> list[str]:
        return [s for s in (self.cc_rest_jwt, self.nats_password) if s]


KNOWN_KEYS = tuple(Config.__struct_encode_fields__)
_DEFAULTS = Config()
NON_NEGATIVE_KEYS = tuple(
    key for key, attr in zip(KNOWN_KEYS, Config.__struct_fields__)
    if type(getattr(_DEFAULTS, attr)) is int
)


def load_config(path: str | None, *, warn=print) -> Config:
    """Read and check the config file; `path` None means the default path, which may be missing."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"config file {path} does not exist: pass an existing file to -config")
        return Config()
    try:
        with open(path, "rb") as f:
            text = f.read()
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}): fix its permissions") from None
    if mode & stat.S_IROTH:
        warn(f"config file {path} is readable by every user and may hold secrets: chmod 640 {path}")
    return parse_config(text, source=path, warn=warn)


def parse_config(text: bytes | str, *, source: str = "config", warn=print) -> Config:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object {{...}}")
    for old, new in KEY_ALIASES.items():
        if old in raw:
            warn(f"{source}: key {old} is the README's name for {new}; using it as {new}")
            raw.setdefault(new, raw.pop(old))
    for key in raw:
        if key in REMOVED_KEYS:
            raise ConfigError(f"{source}: key {key} was removed: {REMOVED_KEYS[key]}")
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see etc/config.example.json for the known keys"
            raise ConfigError(f"{source}: unknown key {key}: {hint}")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_describe_validation_error(e)}") from None
    return _check_values(config, raw, source, warn)


def _describe_validation_error(error: msgspec.ValidationError) -> str:
    message = str(error)
    match = re.match(r"(.*) - at `\$\.(\w+)(.*)`", message)
    if not match:
        return message
    what, key, rest = match.groups()
    return f"key {key}{rest}: {what[0].lower()}{what[1:]}"


def _check_values(config: Config, raw: dict, source: str, warn) -> Config:
    for key in NON_NEGATIVE_KEYS:
        if getattr(config, _attr(key)) < 0:
            raise ConfigError(f"{source}: key {key} is negative ({raw.get(key)}): use a value >= 0")
    changes = {}
    for key in MIN_ONE_SECOND_KEYS:
        if getattr(config, _attr(key)) < 1:
            warn(f"{source}: key {key} is below 1 s; using 1 s")
            changes[_attr(key)] = 1
    if not 0 < config.nats_port < 65536:
        raise ConfigError(f"{source}: key natsPort is {config.nats_port}: use a TCP port between 1 and 65535")
    for pattern in config.gpu_pci_addrs:
        _compile(pattern, "gpuPciAddrs", source)
    if config.ignore_hosts:
        _compile(config.ignore_hosts, "ignoreHosts", source)
    if config.metrics_listen:
        parse_metrics_listen(config.metrics_listen, source)
    if config.cc_rest_url.endswith("/"):
        warn(f"{source}: key ccRestUrl ends with '/'; removing it")
        changes["cc_rest_url"] = config.cc_rest_url.rstrip("/")
    if changes:
        config = msgspec.structs.replace(config, **changes)
    return config


def _compile(pattern: str, key: str, source: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{source}: key {key}: regex {pattern!r} does not compile ({e}): fix the pattern") from None


def parse_metrics_listen(text: str, source: str = "config") -> tuple[str, int]:
    """metricsListen "HOST:PORT" or "[IPv6]:PORT" as (host, port) for the metrics_exporter."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text)
    port = int(match.group(2) or match.group(4)) if match else 0
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: key metricsListen is {text!r}: use HOST:PORT (e.g. 127.0.0.1:9105 or "
                          f"[::1]:9105), or \"\" to turn the metrics endpoint off")
    return match.group(1) or match.group(3), port


def probe_metrics_listen(config: Config) -> None:
    """At daemon start: can the metrics endpoint listen there? Say so now rather than in a restart loop."""
    import socket

    if not config.metrics_listen:
        return
    host, port = parse_metrics_listen(config.metrics_listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server will
            probe.bind(address)
    except OSError as e:
        raise ConfigError(f"key metricsListen: cannot listen on {config.metrics_listen} "
                          f"({e.strerror or e}): use a free port and an address of this host") from None


def _attr(key: str) -> str:
    return Config.__struct_fields__[KNOWN_KEYS.index(key)]


def check_daemon_config(config: Config) -> None:
    """What the daemon needs beyond a well-formed file: say it now, before anything forks."""
    from actors.endpoints import ensure_writable_dir, parse_prep_address

    if not config.cc_rest_submit_jobs and not config.nats_server:
        raise ConfigError("ccRestSubmitJobs is false and natsServer is empty: enable at least one way to submit jobs")
    if not config.cc_rest_url:
        raise ConfigError("key ccRestUrl is empty: set it to cc-backend's URL, e.g. https://cc.example.org")
    if not re.match(r"https?://[^/]+", config.cc_rest_url):
        raise ConfigError(f"key ccRestUrl {config.cc_rest_url!r} is not an http(s) URL: use e.g. https://cc.example.org")
    if not config.cc_rest_jwt:
        raise ConfigError("key ccRestJwt is empty: set it to a JWT of a cc-backend user with the api role")
    for key, path in (("natsCredsFile", config.nats_creds_file), ("natsNKeySeedFile", config.nats_n_key_seed_file)):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"key {key}: file {path} cannot be read: fix the path or its permissions")
    parse_prep_address(config.prep_sock_listen_path, key="prepSockListenPath", listen=True)
    ensure_writable_dir(os.path.dirname(os.path.abspath(config.ctl_sock_path)), "ctlSockPath")
    ensure_writable_dir(os.path.dirname(os.path.abspath(config.pid_file_path)), "pidFilePath")
    ensure_writable_dir(os.path.dirname(os.path.abspath(config.last_run_path)), "lastRunPath")
    ensure_writable_dir(config.state_dir, "stateDir")

