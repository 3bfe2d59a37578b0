"""Debian's nats-server as a real broker for tests: free loopback port, generated config, one auth mode.

    broker = NatsServer(auth="userpass")      # or "nkey", "creds", "none"; jetstream=True by default
    broker.start()
    await nats.connect(broker.url, **broker.connect_options())
    scripts/cc-backend start *broker.cc_backend_args(subject="cc.job.event")
    broker.stop(); ...; broker.start()        # an outage: same port, same credentials, same store dir
    broker.close()                            # stop and remove the temp dir

Auth modes:
* "none": no authentication.
* "userpass": one user with a random password (`user`, `password`).
* "nkey": one nkey user (`nkey_seed`, written to `nkey_seed_file`); needs the `nkeys` package.
* "creds": decentralized auth (operator → account → user JWTs signed with nkeys, memory resolver);
  `creds_file` holds the user JWT and seed in the usual .creds layout. cc-backend takes it through
  `--nats-creds`; nats-py through `user_credentials`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

NATS_SERVER = os.environ.get("NATS_SERVER", "/usr/sbin/nats-server")
START_TIMEOUT_S = 10.0  #: until the broker greets with INFO on its port
STOP_TIMEOUT_S = 10.0  #: TERM → KILL grace period
AUTH_MODES = ("none", "userpass", "nkey", "creds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, auth: str = "userpass", jetstream: bool = True, directory: str | None = None,
                 binary: str = NATS_SERVER):
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        self.auth = auth
        self.jetstream = jetstream
        self.binary = binary
        self.directory = directory or tempfile.mkdtemp(prefix="ccsa-nats-")
        self._own_directory = directory is None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.user: str | None = None
        self.password: str | None = None
        self.nkey_seed: str | None = None
        self.nkey_seed_file: str | None = None
        self.creds_file: str | None = None
        self._auth_config = ""
        self._make_credentials()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("NatsServer not started yet")
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "nats-server.conf")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "nats-server.log")

    def start(self) -> "NatsServer":
        """Starts the broker (again, on the same port when it ran before) and waits for its INFO line."""
        if self.running():
            return self
        if self.port is None:
            self.port = free_port()
        self._write_config()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([self.binary, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}: {self._log_tail()}")
            if self._greets():
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not answer on {self.url} in {START_TIMEOUT_S} s: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """TERM, wait, KILL. Port, credentials and the JetStream store stay for a later start()."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ client side
    def connect_options(self) -> dict:
        """Keyword arguments for nats-py's `nats.connect(self.url, **options)`."""
        if self.auth == "userpass":
            return {"user": self.user, "password": self.password}
        if self.auth == "nkey":
            return {"nkeys_seed": self.nkey_seed_file}
        if self.auth == "creds":
            return {"user_credentials": self.creds_file}
        return {}

    def cc_backend_args(self, subject: str = "cc.job.event") -> list[str]:
        """Options for `scripts/cc-backend start` (cc-backend knows user/password and creds files only)."""
        args = ["--nats", self.url, "--nats-subject", subject]
        if self.auth == "userpass":
            args += ["--nats-user", self.user, "--nats-password", self.password]
        elif self.auth == "creds":
            args += ["--nats-creds", self.creds_file]
        elif self.auth == "nkey":
            raise ValueError("cc-backend cannot log in with a bare nkey; use auth='userpass' or 'creds'")
        return args

    # ------------------------------------------------------------------ internals
    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                return s.recv(5) == b"INFO "
        except OSError:
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _write_config(self) -> None:
        parts = [f"listen: 127.0.0.1:{self.port}", f'server_name: "ccsa-test-{self.port}"']
        if self.jetstream:
            store = os.path.join(self.directory, "jetstream")
            parts.append(f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 256MB }}')
        parts.append(self._auth_config)
        with open(self.config_path, "w") as f:
            f.write("\n".join(p for p in parts if p) + "\n")

    def _make_credentials(self) -> None:
        if self.auth == "userpass":
            self.user = "ccsa"
            self.password = secrets.token_hex(12)
            self._auth_config = (f'authorization {{ users: [ {{ user: "{self.user}", '
                                 f'password: "{self.password}" }} ] }}')
        elif self.auth == "nkey":
            user = _new_keypair("user")
            self.nkey_seed = user.seed.decode()
            self.nkey_seed_file = self._write_secret("user.nk", self.nkey_seed + "\n")
            self._auth_config = f'authorization {{ users: [ {{ nkey: "{user.public_key.decode()}" }} ] }}'
        elif self.auth == "creds":
            self._make_decentralized()

    def _make_decentralized(self) -> None:
        operator, account, system, user = (_new_keypair(k) for k in ("operator", "account", "account", "user"))
        op_pub, acc_pub, sys_pub = (k.public_key.decode() for k in (operator, account, system))
        unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                     "conn": -1, "leaf": -1}
        if self.jetstream:
            unlimited.update({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
        operator_jwt = _nats_jwt(operator, op_pub, "ccsa-operator",
                                 {"type": "operator", "version": 2, "system_account": sys_pub})
        account_jwt = _nats_jwt(operator, acc_pub, "ccsa",
                                {"type": "account", "version": 2, "limits": unlimited})
        system_jwt = _nats_jwt(operator, sys_pub, "SYS",
                               {"type": "account", "version": 2,
                                "limits": {k: v for k, v in unlimited.items()
                                           if k not in ("mem_storage", "disk_storage", "streams", "consumer")}})
        user_jwt = _nats_jwt(account, user.public_key.decode(), "ccsa",
                             {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
                              "payload": -1})
        self.nkey_seed = user.seed.decode()
        operator_file = self._write_secret("operator.jwt", operator_jwt + "\n")
        self.creds_file = self._write_secret("user.creds", _creds_text(user_jwt, self.nkey_seed))
        self._auth_config = "\n".join([
            f'operator: "{operator_file}"',
            f'system_account: "{sys_pub}"',
            "resolver: MEMORY",
            f'resolver_preload: {{ {acc_pub}: "{account_jwt}", {sys_pub}: "{system_jwt}" }}',
        ])

    def _write_secret(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path


# ---------------------------------------------------------------------- nkeys / NATS JWT helpers
def _new_keypair(kind: str):
    import nkeys  # test dependency (setup.cfg [test]); imported here so "none"/"userpass" work without it

    prefix = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "account": nkeys.PREFIX_BYTE_ACCOUNT,
              "user": nkeys.PREFIX_BYTE_USER}[kind]
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nats_jwt(issuer, subject: str, name: str, nats_claims: dict) -> str:
    """A NATS v2 JWT: header alg ed25519-nkey, jti = base32 SHA-256 of the claims, signed by `issuer`."""
    claims = {"iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name, "sub": subject,
              "nats": nats_claims}
    digest = hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims = {"jti": base64.b32encode(digest).decode().rstrip("="), **claims}
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64url(signature)}"


def _creds_text(user_jwt: str, seed: str) -> str:
    return ("-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{seed}\n"
            "------END USER NKEY SEED------\n")
