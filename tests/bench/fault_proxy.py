"""An HTTP proxy in a thread of the test process, in front of the real cc-backend, that injects faults.

    proxy = FaultProxy(backend.url).start()       # point the adapter at proxy.url
    proxy.fail("/api/jobs/start_job/", 503, times=2)           # next 2 starts: 503 + JSON envelope
    proxy.delay("/api/jobs/stop_job/", 5.0)                    # every stop waits 5 s, then goes through
    proxy.drop_after_forward("/api/jobs/start_job/", times=1)  # server commits, client sees a reset
    proxy.profile = "v1.4"                                     # speak like cc-backend v1.4 (contract §12)
    proxy.clear()                                              # rules off (profile stays)
    proxy.records                                              # every request with what it got back

Paths are matched without the query string; a path ending in "*" matches by prefix. Rules are tried in
the order they were added; the first one that matches and still has uses left applies. A request that
no rule matches is passed through unchanged: same status, reason, headers (minus hop-by-hop ones)
and body bytes as the real server sent.

Profile "v1.4" (contract §12), applied to requests that pass through:
* start_job body with a `shared` key (any case) → 400 `json: unknown field "shared"` (not forwarded);
  `exclusive` (int 0/1/2) → replaced by `shared` (0 multi_user, 1 none, 2 single_user) for the real
  server; a non-integer `exclusive` → 400 like Go's decoder.
* stop_job 404 (not found) → 422 with the same message.
* job objects in GET /api/jobs/, GET /api/jobs/{id} (`Meta`) and the stop_job 200 body carry
  `exclusive` (int) instead of `shared`; the stop response's `startTime` becomes an RFC 3339 string.
* GET /api/jobs/?project=… → 400 `invalid query parameter: project`.
Not emulated: immediate visibility of started jobs (v1.4 had no job cache), the v1.4 job-state enum,
gorilla's plain-text 404.
"""

from __future__ import annotations

import datetime
import gzip
import http
import http.client
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}
UPSTREAM_TIMEOUT_S = 30.0
PROFILES = ("v1.5", "v1.4")
SHARED_OF_EXCLUSIVE = {0: "multi_user", 1: "none", 2: "single_user"}  #: cc-backend's DB migration
EXCLUSIVE_OF_SHARED = {v: k for k, v in SHARED_OF_EXCLUSIVE.items()}
JOB_BY_ID = re.compile(r"^/api/jobs/\d+$")


@dataclass
class Record:
    """One request as the proxy saw it and what it answered (status None = connection dropped)."""
    method: str
    path: str                 #: without the query string
    query: str
    headers: dict
    body: bytes
    status: int | None = None
    response_body: bytes = b""  #: as sent to the client (gzipped when the server gzipped it)
    response_headers: dict = field(default_factory=dict)
    fault: str | None = None  #: "fail", "delay", "drop", "v1.4:<what>" or None (plain pass-through)
    upstream_status: int | None = None  #: what the real server answered, when it was asked
    started: float = field(default_factory=time.monotonic)

    def json(self):
        return json.loads(self.body)

    def response_json(self):
        body = self.response_body
        if any(k.lower() == "content-encoding" and v == "gzip" for k, v in self.response_headers.items()):
            body = gzip.decompress(body)
        return json.loads(body)


@dataclass
class Rule:
    action: str               #: "fail", "delay", "drop"
    path: str
    method: str | None
    times: int | None         #: uses left; None = until cleared
    status: int = 503
    error: str = ""
    delay_s: float = 0.0
    forward: bool = True      #: delay: forward after waiting (True) or give up and close (False)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


def envelope(status: int, error: str) -> bytes:
    """cc-backend's error body: {"status": <reason phrase>, "error": <message>} and a newline."""
    return (json.dumps({"status": http.HTTPStatus(status).phrase, "error": error}) + "\n").encode()


class FaultProxy:
    def __init__(self, upstream_url: str, profile: str = "v1.5", host: str = "127.0.0.1", port: int = 0):
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.profile = profile
        self.records: list[Record] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def profile(self) -> str:
        return self._profile

    @profile.setter
    def profile(self, value: str) -> None:
        if value not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {value!r}")
        self._profile = value

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ rules
    def fail(self, path: str, status: int = 503, error: str = "injected fault", method: str | None = None,
             times: int | None = None) -> Rule:
        """Answer `status` with the JSON envelope, without asking the real server."""
        return self._add(Rule("fail", path, method, times, status=status, error=error))

    def delay(self, path: str, seconds: float, method: str | None = None, times: int | None = None,
              forward: bool = True) -> Rule:
        """Wait `seconds` before forwarding (forward=False: then close without asking the server)."""
        return self._add(Rule("delay", path, method, times, delay_s=seconds, forward=forward))

    def drop_after_forward(self, path: str, method: str | None = None, times: int | None = None) -> Rule:
        """Forward (the server commits), then close the client connection without any answer."""
        return self._add(Rule("drop", path, method, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        """Rules and records off, profile back to v1.5."""
        with self._lock:
            self._rules.clear()
            self.records.clear()
        self.profile = "v1.5"

    def requests_to(self, path: str, method: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.path == path and (method is None or r.method == method)]

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def _record(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    # ------------------------------------------------------------------ v1.4 profile
    def _v14_request(self, method: str, path: str, query: str, body: bytes):
        """Returns (status, error, new_body, note): a status to answer at once, or a body to forward."""
        if path == "/api/jobs/" and method == "GET":
            names = [k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)]
            if "project" in names:
                return 400, "invalid query parameter: project", body, "v1.4:project"
        if path != "/api/jobs/start_job/" or method not in ("POST", "PUT"):
            return None, None, body, None
        try:
            job = json.loads(body)
        except ValueError:
            return None, None, body, None  # the real server words decode errors itself
        if not isinstance(job, dict):
            return None, None, body, None
        keys = {k.lower(): k for k in job}
        if "shared" in keys:
            return 400, f'parsing request body failed: json: unknown field "{keys["shared"]}"', body, "v1.4:shared"
        if "exclusive" in keys:
            value = job.pop(keys["exclusive"])
            if value is None:
                return None, None, json.dumps(job).encode(), "v1.4:exclusive"
            if isinstance(value, bool) or not isinstance(value, int):
                kind = {str: "string", bool: "bool", float: "number", list: "array", dict: "object"}.get(
                    type(value), "number")
                return (400, f"parsing request body failed: json: cannot unmarshal {kind} into Go struct field "
                             f"Job.exclusive of type int32", body, "v1.4:exclusive")
            if value not in SHARED_OF_EXCLUSIVE:
                return (500, "insert into database failed: CHECK constraint failed: exclusive IN (0, 1, 2)",
                        body, "v1.4:exclusive")
            job["shared"] = SHARED_OF_EXCLUSIVE[value]
            return None, None, json.dumps(job).encode(), "v1.4:exclusive"
        return None, None, body, None

    def _v14_response(self, method: str, path: str, status: int, body: bytes):
        """Returns (status, body, note) as v1.4 would have answered."""
        if path == "/api/jobs/stop_job/" and status == 404:
            return 422, body.replace(b'"Not Found"', b'"Unprocessable Entity"'), "v1.4:stop-422"
        if status != 200:
            return status, body, None
        try:
            doc = json.loads(body)
        except ValueError:
            return status, body, None
        if path == "/api/jobs/" and method == "GET" and isinstance(doc, dict):
            for job in doc.get("jobs") or []:
                _shared_to_exclusive(job)
        elif JOB_BY_ID.match(path) and isinstance(doc, dict) and isinstance(doc.get("Meta"), dict):
            _shared_to_exclusive(doc["Meta"])
        elif path == "/api/jobs/stop_job/" and isinstance(doc, dict):
            _shared_to_exclusive(doc)
            if isinstance(doc.get("startTime"), int):
                doc["startTime"] = datetime.datetime.fromtimestamp(
                    doc["startTime"], datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        else:
            return status, body, None
        return status, (json.dumps(doc) + "\n").encode(), "v1.4:response"


def _shared_to_exclusive(job: dict) -> None:
    if "shared" in job:
        job["exclusive"] = EXCLUSIVE_OF_SHARED.get(job.pop("shared"), 1)


def _handler_class(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet; proxy.records is the log
            pass

        def do_GET(self):
            self._handle()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self):
            split = urllib.parse.urlsplit(self.path)
            path, query = split.path, split.query
            body = self._read_body()
            record = Record(self.command, path, query, {k: v for k, v in self.headers.items()}, body)
            proxy._record(record)
            rule = proxy._take_rule(self.command, path)

            if rule is not None and rule.action == "fail":
                record.fault = "fail"
                return self._answer(record, rule.status, None, envelope(rule.status, rule.error),
                                    {"Content-Type": "application/json"})
            if rule is not None and rule.action == "delay":
                record.fault = "delay"
                if proxy._stopping.wait(rule.delay_s) or not rule.forward:
                    return self._drop()

            forward_body, note = body, None
            if proxy.profile == "v1.4":
                status, error, forward_body, note = proxy._v14_request(self.command, path, query, body)
                if status is not None:
                    record.fault = note
                    return self._answer(record, status, None, envelope(status, error),
                                        {"Content-Type": "application/json"})

            try:
                status, reason, headers, response_body = self._forward(forward_body, proxy.profile == "v1.4")
            except OSError as e:
                record.fault = record.fault or "upstream-down"
                return self._answer(record, 502, None, envelope(502, f"fault proxy: upstream: {e}"),
                                    {"Content-Type": "application/json"})
            record.upstream_status = status

            if rule is not None and rule.action == "drop":
                record.fault = "drop"
                record.response_body = response_body
                record.response_headers = dict(headers)
                return self._drop()

            if proxy.profile == "v1.4":
                new_status, response_body, response_note = proxy._v14_response(self.command, path, status,
                                                                               response_body)
                if new_status != status:
                    status, reason = new_status, None
                note = note or response_note
                if note and record.fault is None:
                    record.fault = note
            self._answer(record, status, reason, response_body, headers)

        def _forward(self, body: bytes, plain: bool):
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                if plain:  # the v1.4 rewriting needs readable (not gzipped) bodies
                    headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
                if body or self.command in ("POST", "PUT", "PATCH"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                out = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
                return response.status, response.reason, out, data
            finally:
                conn.close()

        def _answer(self, record: Record, status: int, reason: str | None, body: bytes, headers):
            record.status = status
            record.response_body = body
            items = list(headers.items() if isinstance(headers, dict) else headers)
            record.response_headers = dict(items)
            try:
                self.send_response_only(status, reason)
                for key, value in items:
                    self.send_header(key, value)
                if not any(k.lower() == "date" for k, _ in items):
                    self.send_header("Date", self.date_time_string())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self.wfile.flush()
            except OSError:  # the client gave up (e.g. its timeout during a delay)
                self.close_connection = True

        def _drop(self):
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(2)
            except OSError:
                pass

    return Handler
