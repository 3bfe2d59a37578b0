"""The real cc-backend v1.5.4 (scripts/cc-backend) as a pytest session service.

    backend = CcBackend()                  # own temp instance dir, commit interval 5 s
    backend.start()                        # or start(nats=NatsServer(...)) for the NATS job API
    backend.start_job({...}).status_code   # 201
    backend.wait_for_jobs(lambda jobs: any(j["jobId"] == 7 for j in jobs), timeout_s=20)
    backend.restart()                      # outage: process down and up, same port, DB kept
    backend.stop()

Observed on this bench (v1.5.4 built from the module, 2 cores, commit-job-worker 5s), checked against
cc-backend-contract.md; everything below CONFIRMS the contract unless marked DIFFERS/ADDS:
* ADDS: v1.5.4 refuses to serve without a metric store: `missing metricstore configuration`, exit 1.
  scripts/cc-backend configures the built-in one (`metric-store` with a local checkpoint dir).
  The missing web frontend bundle does not matter; REST works.
* ADDS: `nodes: "n[1-3]"` is accepted (one-digit ranges have equal width); n1/n3 resolve to
  sub-cluster `main`, `n4` and `n01` get 400 `ARCHIVE/CLUSTERCONFIG > no subcluster found for
  cluster testcluster and host n4`. In the body the `>` is escaped as `\\u003e` (Go's HTML-safe JSON).
* GET /api/jobs/ without token: 401 `{"error":"no user for secured check","status":"Unauthorized"}`.
  ADDS: the auth and 404 envelopes come out with the keys in the order error, status (a map),
  handler errors in the order status, error (a struct). JSON-equal either way.
* start (no tags): 201 `{"msg":"success"}`; the job is NOT in GET /api/jobs/ until the commit worker
  ran (seen absent right after, present ~5 s later with `subCluster: main`, `shared: none`,
  `monitoringStatus: 1`, `id` = job-table id).
* same start again before the commit: 500 `insert into database failed: UNIQUE constraint failed:
  job_cache.job_id, job_cache.cluster, job_cache.start_time`.
* same start again after the commit: 422 `a job with that jobId, cluster and startTime already
  exists: dbid: <id>, jobid: <jobId>`.
* stop: 200 with the full job object (`jobState` as requested, `duration` = stopTime − startTime,
  integer `startTime`); stop again: 422 `jobId <j> (id <id>) on testcluster : job has already been
  stopped (state is: completed)`; stop of an unknown jobId: 404 `finding job failed: sql: no rows in
  result set`.
* start with `exclusive`: 400 `parsing request body failed: json: unknown field "exclusive"`;
  with `shared: "single_user"`: 201.
* unknown path /api/nope/: 404 `{"error":"the requested endpoint does not exist","status":"Resource
  not found"}`; POST /api/jobs/start_job (no slash): 400 `integer expected in path for id:
  strconv.ParseInt: parsing "start_job": invalid syntax`.
* GET /api/clusters/: 200 `{"clusters":[<cluster.json as loaded>]}` with topology and accelerators.
* NATS mode (`start(nats=...)`, user/password and creds file both work): POST /api/jobs/start_job/
  is 404 with the JSON 404 envelope; line-protocol start/stop events on the subject create/stop jobs
  (visible after the commit). ADDS: when the broker is unreachable at cc-backend's start, the server
  still starts and answers REST, but logs `NATS client not available, skipping API subscriptions` and
  never subscribes later — jobs sent over NATS are then silently lost. After a broker restart
  (stop/start on the same port) cc-backend reconnected within ~2 s and resubscribed; an event
  published right after the broker came back, before that reconnect, was lost (at-most-once, §9.1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import requests

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "cc-backend")
CLUSTER = "testcluster"
HOSTS = ("n1", "n2", "n3")
SCRIPT_TIMEOUT_S = 1800.0  #: start may build cc-backend first (minutes on 2 cores)
REQUEST_TIMEOUT_S = 10.0
PAGE_SIZE = 100  #: items-per-page when following pages


class CcBackendError(RuntimeError):
    pass


class CcBackend:
    def __init__(self, directory: str | None = None, commit_interval: str = "5s", env: dict | None = None):
        self.directory = directory or tempfile.mkdtemp(prefix="ccsa-cc-backend-")
        self._own_directory = directory is None
        self.commit_interval = commit_interval
        self._env = dict(os.environ, CC_BACKEND_DIR=self.directory, CC_COMMIT_INTERVAL=commit_interval)
        self._env.update(env or {})
        self.url: str | None = None
        self.jwt: str | None = None
        self.nats = None
        self.session = requests.Session()

    # ------------------------------------------------------------------ lifecycle
    def start(self, nats=None, subject: str = "cc.job.event") -> "CcBackend":
        """A fresh instance. `nats` is a tests.bench.nats.NatsServer (or a ready list of script options);
        with it the REST start/stop routes are off and jobs come over NATS on `subject`."""
        args = []
        if nats is not None:
            args = list(nats) if isinstance(nats, (list, tuple)) else nats.cc_backend_args(subject)
        self.nats = nats
        self._script("start", *args)
        self._read_state()
        return self

    def stop(self) -> None:
        """Stops the server; removes the instance dir when this object made it."""
        if os.path.exists(os.path.join(self.directory, "instance.env")):
            self._script("stop")
        self.session.close()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def stop_process(self) -> None:
        """Stops the server only; instance dir, DB, port and token stay (outage tests)."""
        self._script("stop")

    def start_process(self) -> None:
        """Starts the server again in the kept instance dir; returns once GET /api/jobs/ answers."""
        self._script("resume")
        self._read_state()

    def restart(self) -> None:
        self.stop_process()
        self.start_process()

    def running(self) -> bool:
        return subprocess.run([SCRIPT, "status"], env=self._env, capture_output=True).returncode == 0

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.directory, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ------------------------------------------------------------------ HTTP
    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.jwt}"}

    def request(self, method: str, path: str, auth: bool = True, **kwargs) -> requests.Response:
        headers = dict(self.headers if auth else {}, **kwargs.pop("headers", {}))
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def start_job(self, job: dict) -> requests.Response:
        return self.request("POST", "/api/jobs/start_job/", json=job)

    def stop_job(self, body: dict) -> requests.Response:
        return self.request("POST", "/api/jobs/stop_job/", json=body)

    def get_jobs(self, **params) -> list:
        """All jobs matching the filters, following pages. Keyword names use _ for - (start_time=...);
        a list value repeats the parameter (state=["running", "completed"])."""
        query = {key.replace("_", "-"): value for key, value in params.items()}
        page_size = int(query.pop("items-per-page", PAGE_SIZE))
        jobs, page = [], int(query.pop("page", 1))
        while True:
            r = self.request("GET", "/api/jobs/", params=dict(query, page=page, **{"items-per-page": page_size}))
            if r.status_code != 200:
                raise CcBackendError(f"GET /api/jobs/ → {r.status_code}: {r.text.strip()}")
            batch = r.json().get("jobs") or []
            jobs.extend(batch)
            if len(batch) < page_size:
                return jobs
            page += 1

    def wait_for_jobs(self, predicate, timeout_s: float = 30.0, interval_s: float = 0.2, **params) -> list:
        """Polls get_jobs(**params) until predicate(jobs) is truthy; returns that job list.
        Raises AssertionError at the deadline with the last list seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = self.get_jobs(**params)
            if predicate(jobs):
                return jobs
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for jobs; last seen: {jobs!r}")
            time.sleep(interval_s)

    def find_job(self, job_id: int, start_time: int | None = None, **params) -> dict | None:
        for job in self.get_jobs(**params):
            if job["jobId"] == job_id and (start_time is None or job["startTime"] == start_time):
                return job
        return None

    # ------------------------------------------------------------------ internals
    def _script(self, *args: str) -> str:
        try:
            done = subprocess.run([SCRIPT, *args], env=self._env, capture_output=True, text=True,
                                  timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise CcBackendError(f"scripts/cc-backend {' '.join(args)} timed out") from e
        if done.returncode != 0:
            raise CcBackendError(f"scripts/cc-backend {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stderr[-3000:]}")
        return done.stdout

    def _read_state(self) -> None:
        state = {}
        with open(os.path.join(self.directory, "instance.env")) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                state[key] = value
        self.url = state["CC_BACKEND_URL"]
        self.jwt = state["CC_BACKEND_JWT"]


def job_payload(job_id: int, start_time: int | None = None, host: str = "n1", **overrides) -> dict:
    """A start_job body the real server accepts (one node of testcluster)."""
    job = {
        "jobId": job_id,
        "cluster": CLUSTER,
        "user": "alice",
        "project": "p1",
        "partition": "main",
        "numNodes": 1,
        "numHwthreads": 2,
        "walltime": 3600,
        "startTime": int(time.time()) - 60 if start_time is None else start_time,
        "resources": [{"hostname": host, "hwthreads": [0, 1]}],
    }
    job.update(overrides)
    return job
