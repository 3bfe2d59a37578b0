"""A flood of 10 000 hook events in a few seconds, with bad and oversized frames among them: the
listener stays up with bounded memory, the querier asks Slurm in batches instead of once per event,
and the real jobs whose events came among the flood reach the real cc-backend."""

import json
import re
import time

import psutil
import pytest
import zmq

from actors.hook_client import FORWARDED_VARIABLES
from tests.support import wait_for
from tests.test_hook_e2e import came_through_the_hook, listed_once

pytestmark = [pytest.mark.slurm, pytest.mark.ccbackend, pytest.mark.slow]

EVENTS = 10_000  #: valid hook events, the real jobs' among them
REAL_JOBS = 3
FAKE_JOBS = 1000  #: job ids Slurm never assigns (above its MaxJobId), about 10 events each
FAKE_JOB_BASE = 90_000_000
SENDERS = 20  #: sockets standing in for slurmctld's hook client processes (500 events each, under ZeroMQ's HWM of 1000)
BAD_FRAMES = [b"not json", b"{}", b'{"kind": "hook_event"}', b"\xff\xfe" * 100]
BAD_JOB_IDS = ["../../etc/passwd", "-1", "0", "4294967296", "\u00b2", "12 13"]
OVERSIZED_FRAME = b"x" * (1024 * 1024)  #: over the listener's 64 KiB frame limit: the sender is dropped
RSS_GROWTH_LIMIT = 64 * 1024 * 1024  #: generous: the flood itself is ~20 MB of frames, none of it kept
MIN_EVENTS_PER_SACCT = 100  #: the querier merges events per job and asks for many jobs per call


def hook_frame(job_id, context: str = "epilog_slurmctld") -> bytes:
    """What actors/hook_client.py sends: a HookEvent as plain JSON, with the forwarded environment."""
    env = {name: "" for name in FORWARDED_VARIABLES}
    env.update(SLURM_JOB_ID=str(job_id), SLURM_CLUSTER_NAME="testcluster", SLURM_SCRIPT_CONTEXT=context,
               SLURM_JOB_USER="root", SLURM_JOB_WORK_DIR="/tmp/" + "w" * 200)
    return json.dumps({"kind": "hook_event", "job_id": str(job_id), "cluster": "testcluster", "context": context,
                       "sent_at": time.time(), "env": env}, separators=(",", ":")).encode()


def flood_frames(real_job_ids: list[int]) -> tuple[list[bytes], int]:
    """EVENTS valid events (fake jobs' prologs and epilogs, the real jobs' epilogs spread among them)
    and the bad frames; returns the frames and how many are bad."""
    frames = [hook_frame(FAKE_JOB_BASE + i % FAKE_JOBS, ("prolog_slurmctld", "epilog_slurmctld")[i // FAKE_JOBS % 2])
              for i in range(EVENTS - REAL_JOBS)]
    for n, job_id in enumerate(real_job_ids):
        frames.insert((n + 1) * len(frames) // (REAL_JOBS + 1), hook_frame(job_id))
    bad = BAD_FRAMES + [hook_frame(job_id) for job_id in BAD_JOB_IDS] + [hook_frame(1, "task_prolog")]
    for n, frame in enumerate(bad * 10):
        frames.insert(n * len(frames) // (len(bad) * 10), frame)
    return frames, len(bad) * 10


def send_flood(endpoint: str, frames: list[bytes]) -> tuple[int, int]:
    """Send every frame over SENDERS sockets as the hook client does; returns (accepted, refused) acks."""
    context = zmq.Context()
    sockets = []
    for _ in range(SENDERS):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sockets.append(sock)
    try:
        for n, frame in enumerate(frames):
            sockets[n % SENDERS].send_multipart([b"", frame])
        for _ in range(3):  # and senders the listener drops for their oversized frames
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sock.send_multipart([b"", OVERSIZED_FRAME])
            sockets.append(sock)
        acks = {True: 0, False: 0}
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + 120
        while sum(acks.values()) < len(frames) and time.monotonic() < deadline:
            for sock, _ in poller.poll(1000):
                acks[json.loads(sock.recv_multipart()[-1])["accepted"]] += 1
        return acks[True], acks[False]
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def test_a_flood_of_hook_events_costs_bounded_memory_batched_slurm_calls_and_no_real_job(
        daemon, slurm, cc_backend, tmp_path):
    # Given a running daemon whose only poll is behind it (the next in an hour), and real jobs that
    # ran with the hook off: only their events in the flood can bring them
    d = daemon(env=slurm.env(), ccRestUrl=cc_backend.url, ccRestJwt=cc_backend.jwt, slurmPollInterval=3600,
               slurmQueryDelay=1, slurmMaxRetries=3)
    d.start()
    listener_pid = d.wait_all_running()["hook_listener"]["pid"]
    wait_for(lambda: "batches to the translator" in d.log_text(), 30, message="the daemon's first poll")
    rss_before = psutil.Process(listener_pid).memory_info().rss
    slurm.set_hook_target(None)
    real_job_ids = [slurm.sbatch("--wrap", "true") for _ in range(REAL_JOBS)]
    for job_id in real_job_ids:
        assert slurm.wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120) == "COMPLETED"
        # slurmdbd may hold a finished job as a nameless "allocation" for seconds; the querier would
        # rightly wait for the full record, which is not what this test is about
        wait_for(lambda: accounting_record(slurm, job_id) == "wrap|debug", 60, 0.5, f"job {job_id}'s full record")
    frames, bad = flood_frames(real_job_ids)

    # When the flood arrives
    started = time.monotonic()
    accepted, refused = send_flood("ipc://" + str(tmp_path / "run" / "daemon.sock"), frames)
    print(f"\n{len(frames)} frames acknowledged in {time.monotonic() - started:.1f} s")

    # Then every valid event was taken and every bad one refused, by the same listener process
    assert (accepted, refused) == (EVENTS, bad)
    rss_after = psutil.Process(listener_pid).memory_info().rss
    print(f"listener RSS {rss_before / 2**20:.1f} MB before, {rss_after / 2**20:.1f} MB after")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT
    # and the real jobs reached cc-backend, start and stop, once each
    wait_for(lambda: came_through_the_hook(tmp_path / "state", real_job_ids), 90, 0.5, "the real jobs delivered")
    listed_once(cc_backend, real_job_ids)
    # and the querier, once it had every nudge and gave up on the fake jobs, had asked Slurm in batches
    actors = wait_for(lambda: all_nudges_settled(d.actors()), 60, 0.5, "the querier to settle every nudge")
    listener, querier = actors["hook_listener"], actors["slurm_querier"]["facts"]
    print(f"{listener['facts']['forwarded']} nudges from {EVENTS} events; sacct -j calls: "
          f"{querier['nudge_sacct_calls']} for {querier['nudge_jobs_asked']} job lookups")
    assert querier["nudge_sacct_calls"] <= EVENTS // MIN_EVENTS_PER_SACCT
    assert (listener["pid"], listener["state"]) == (listener_pid, "running")
    assert (listener["facts"]["events"], listener["facts"]["rejected"]) == (EVENTS, bad)
    given_up = re.findall(r"sacct has no final record of (\d+) nudged job\(s\) after 3 tries", d.log_text())
    assert sum(map(int, given_up)) >= FAKE_JOBS, "every fake job was given up (some twice: events came on)"
    assert not [x for x in cc_backend.get_jobs() if x["jobId"] >= FAKE_JOB_BASE]


def accounting_record(slurm, job_id: int) -> str:
    return slurm.run("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobName,Partition").stdout.strip()


def all_nudges_settled(actors: dict) -> dict | None:
    """The actors once the querier has every nudge the listener forwarded and none is pending."""
    listener, querier = actors["hook_listener"]["facts"], actors["slurm_querier"]["facts"]
    settled = (listener["pending_nudges"] == 0 and querier.get("nudges_received") == listener["forwarded"]
               and querier["pending_nudges"] == 0)
    return actors if settled else None
