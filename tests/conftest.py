"""Fixtures: a daemon per test, and the real services (Slurm, cc-backend, nats-server) once per session.

When CI=true a service that does not start fails the tests that need it; elsewhere they skip.
"""

import os

import pytest

from tests.bench.fault_proxy import FaultProxy
from tests.support import Daemon, free_port_base, write_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_unavailable(what: str, error: Exception):
    message = f"{what} did not start: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def daemon(tmp_path):
    """Makes daemons with a config in tmp_path; each is stopped (its tree killed) after the test."""
    made = []

    def make(env=None, **config_overrides) -> Daemon:
        config_path = write_config(tmp_path, **config_overrides)
        d = Daemon(config_path, tmp_path / f"daemon{len(made)}.log", env=env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture(scope="session")
def slurm():
    """The real single-machine Slurm cluster of scripts/slurm-sandbox (SLURM_RELEASE, default 22.05)."""
    from tests.bench.slurm import SlurmSandbox

    release = os.environ.get("SLURM_RELEASE", "22.05")
    # A sandbox of this test session's own (directory and ports), so that two test runs on one
    # machine never stop each other's cluster.
    sandbox = SlurmSandbox(release, directory=f"/tmp/ccsa-slurm-{release}-t{os.getpid()}",
                           port_base=free_port_base())
    try:
        sandbox.start()
    except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
        sandbox.clean()
        service_unavailable(f"Slurm {sandbox.release} sandbox", e)
    yield sandbox
    sandbox.clean()


def running_cc_backend(commit_interval: str = "5s", what: str = "cc-backend"):
    """Body of a cc-backend fixture (`yield from` it): a fresh real cc-backend, stopped afterwards;
    one that does not start fails in CI and skips elsewhere."""
    from tests.bench.ccbackend import CcBackend

    backend = CcBackend(commit_interval=commit_interval)
    try:
        backend.start()
    except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
        backend.stop()
        service_unavailable(what, e)
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def cc_backend():
    """The real cc-backend v1.5.4 of scripts/cc-backend, REST start/stop on."""
    yield from running_cc_backend()


@pytest.fixture
def proxy(cc_backend):
    """tests/bench/fault_proxy.py in front of the session's cc-backend: faults on demand."""
    p = FaultProxy(cc_backend.url).start()
    yield p
    p.stop()
