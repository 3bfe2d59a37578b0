"""cc-backend's REST API, as the adapter uses it (cc-backend-contract.md).

HTTP errors are answers: start_job, stop_job and nodestate return (status, text) whatever the
status. Only transport failures (connection refused, timeout, a connection closed before the
answer) raise actors.errors.BackendUnavailable; its message names the cause's class (ReadTimeout,
ConnectionError, ...) so actors.delivery_policy can tell an ambiguous failure from a refused
connection. Redirects are not followed (a redirected POST would change meaning). One
requests.Session keeps the connection alive between calls. The JWT never appears in an exception
message or a repr.
"""

from __future__ import annotations

import json

import msgspec
import requests

from actors.errors import BackendUnavailable

#: cc-backend v1.4 has `exclusive` (int) where v1.5 has `shared` (contract §12, from its DB migration).
SHARED_TO_EXCLUSIVE = {"none": 1, "multi_user": 0, "single_user": 2}
#: v1.5-only job states and what v1.4 understands instead.
V15_ONLY_STATES = {"node_fail": "failed", "boot_fail": "failed", "deadline": "timeout"}
#: A cluster no site has: the profile probe must fail validation before anything is stored.
PROBE_CLUSTER = "cc-slurm-adapter-probe-no-such-cluster"
DEFAULT_PAGE_SIZE = 1000  #: items-per-page when following the job list
MAX_PAGES = 10_000  #: a server that never returns a short page stops us here


class Profile(msgspec.Struct, frozen=True):
    version: str  #: "v1.5" or "v1.4"
    rest_jobs_enabled: bool  #: False when cc-backend's NATS API replaced REST start/stop
    evidence: str = ""  #: how it was found, for the log


class CcRest:
    def __init__(self, url: str, jwt: str, timeout_s: float):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._jwt = jwt
        self.session = requests.Session()
        self.session.trust_env = False  # a proxy from the environment is not ours to use
        self.session.headers.update({"Authorization": f"Bearer {jwt}", "Content-Type": "application/json",
                                     "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"CcRest({self.url!r})"

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.url + path, timeout=self.timeout_s, allow_redirects=False,
                                        **kwargs)
        except requests.RequestException as e:
            text = f"{method} {path}: {type(e).__name__}: {_short(e)}"
            raise BackendUnavailable(text.replace(self._jwt, "***") if self._jwt else text) from None

    # --- job events: every HTTP answer is returned, never raised --------------------------------

    def start_job(self, body: bytes) -> tuple[int, str]:
        return self.post_job_event("start_job", body)

    def stop_job(self, body: bytes) -> tuple[int, str]:
        return self.post_job_event("stop_job", body)

    def post_job_event(self, event: str, body: bytes) -> tuple[int, str]:
        response = self._request("POST", f"/api/jobs/{event}/", data=body)
        return response.status_code, response.text

    def nodestate(self, body: bytes) -> tuple[int, str]:
        """POST /api/nodestate/ (v1.5): 200 with an empty body, whatever happened to single nodes."""
        response = self._request("POST", "/api/nodestate/", data=body)
        return response.status_code, response.text

    post_nodestate = nodestate

    # --- reads: anything but 200 raises BackendUnavailable --------------------------------------

    def clusters_raw(self) -> bytes:
        """GET /api/clusters/ as received: {"clusters": [<cluster.json>...]}."""
        response = self._request("GET", "/api/clusters/")
        if response.status_code != 200:
            raise BackendUnavailable(f"GET /api/clusters/ answered {response.status_code}: {response.text[:200]}")
        return response.content

    def clusters(self) -> list[dict]:
        return json.loads(self.clusters_raw()).get("clusters") or []

    def list_jobs(self, *, state: str | list[str] | None = None, cluster: str | None = None,
                  start_time: tuple[int, int] | None = None, page: int = 1,
                  items_per_page: int = DEFAULT_PAGE_SIZE, max_pages: int = MAX_PAGES) -> list[dict]:
        """Every job matching, from `page` on (cc-backend has no total count: a short page ends it).

        `state` may repeat (a list is an OR); `start_time` is an inclusive (from, to) in unix s.
        Only committed jobs are listed (contract §5.5)."""
        params: dict = {"items-per-page": items_per_page}
        if state:
            params["state"] = state
        if cluster:
            params["cluster"] = cluster
        if start_time:
            params["start-time"] = f"{start_time[0]}-{start_time[1]}"
        jobs: list[dict] = []
        for number in range(page, page + max_pages):
            response = self._request("GET", "/api/jobs/", params={**params, "page": number})
            if response.status_code != 200:
                raise BackendUnavailable(f"GET /api/jobs/ answered {response.status_code}: {response.text[:200]}")
            batch = _jobs_of(response)
            if batch is None:
                raise BackendUnavailable(f"GET /api/jobs/ answered 200 without a job list: {response.text[:200]}")
            jobs.extend(batch)
            if len(batch) < items_per_page:
                break
        return jobs

    # --- which cc-backend is this? --------------------------------------------------------------

    def detect_profile(self) -> Profile:
        """v1.5 or v1.4, and whether REST start/stop exist, without a version endpoint (contract §12).

        A job in the list tells the version (`shared` on v1.5, `exclusive` on v1.4). The start route
        is then probed with a body that cannot create anything (an unknown cluster): a 404 means the
        route is not mounted (cc-backend's NATS API is on); without a job to look at, v1.4 answers
        `unknown field "shared"`, v1.5 `no such cluster`. A refused token or a server that does not
        answer properly raises BackendUnavailable.
        """
        listed = self._version_from_job_list()
        probe = {"jobId": 0, "cluster": PROBE_CLUSTER, "user": "probe", "project": "probe", "shared": "none",
                 "numNodes": 1, "startTime": 1, "resources": [{"hostname": "probe"}]}
        status, text = self.start_job(json.dumps(probe).encode())
        if status in (401, 403):
            raise BackendUnavailable(f"cc-backend refuses our token ({status}): check ccRestJwt")
        if status == 404:  # only v1.5 has the NATS API
            return Profile(listed or "v1.5", False, "POST /api/jobs/start_job/ is 404: REST start/stop are off")
        if status != 400:
            raise BackendUnavailable(f"cannot tell cc-backend's version: the probe start answered {status}: "
                                     f"{text[:200]}")
        if listed:
            return Profile(listed, True, "a job in GET /api/jobs/")
        if 'unknown field "shared"' in text:
            return Profile("v1.4", True, 'the probe start got: unknown field "shared"')
        return Profile("v1.5", True, f"the probe start got: {text.strip()[:120]}")

    def _version_from_job_list(self) -> str | None:
        response = self._request("GET", "/api/jobs/", params={"items-per-page": 1, "page": 1})
        if response.status_code in (401, 403):
            raise BackendUnavailable(f"cc-backend refuses our token ({response.status_code}): check ccRestJwt")
        jobs = (_jobs_of(response) or []) if response.status_code == 200 else []
        if jobs and "exclusive" in jobs[0]:
            return "v1.4"
        if jobs and "shared" in jobs[0]:
            return "v1.5"
        return None

    @staticmethod
    def to_v14_body(body: bytes) -> bytes:
        """A v1.5 start or stop body for a v1.4 server: `shared` becomes `exclusive`, v1.5-only job
        states become their nearest v1.4 state."""
        job = json.loads(body)
        if "shared" in job:
            job["exclusive"] = SHARED_TO_EXCLUSIVE.get(job.pop("shared"), 1)
        if job.get("jobState") in V15_ONLY_STATES:
            job["jobState"] = V15_ONLY_STATES[job["jobState"]]
        return json.dumps(job, ensure_ascii=False, separators=(",", ":")).encode()


def _jobs_of(response: requests.Response) -> list[dict] | None:
    """The `jobs` of a job list answer ([] for null), None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("jobs") or [], list):
        return None
    return body.get("jobs") or []


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."
