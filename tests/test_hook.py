"""The hook client never fails a Slurm job; the hook listener never loses or trusts blindly what it gets."""

import json
import os
import subprocess

import msgspec
import pytest
import zmq

from actors.messages import HookEvent, JobNudge
from tests.support import REPO, adapter_command, python_env, wait_for, write_config

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_CLUSTER_NAME": "testcluster",
             "SLURM_SCRIPT_CONTEXT": "epilog_slurmctld", "SLURM_JOB_USER": "root"}


def run_hook(config_path, env=SLURM_ENV):
    clean = {k: v for k, v in python_env().items() if not k.startswith("SLURM_")}
    return subprocess.run(adapter_command("-config", config_path), capture_output=True, text=True,
                          env={**clean, **env}, cwd=REPO, timeout=30)


def spool_lines(tmp_path):
    path = tmp_path / "state" / "hook-spool.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


def test_outside_slurm_the_hook_client_says_so_and_exits_one(tmp_path):
    result = run_hook(write_config(tmp_path), env={})
    assert result.returncode == 1
    assert "SLURM_JOB_ID is not set" in result.stderr


def test_with_the_daemon_down_the_hook_exits_zero_and_spools_the_event(tmp_path):
    result = run_hook(write_config(tmp_path))
    assert result.returncode == 0
    [line] = spool_lines(tmp_path)
    event = msgspec.json.decode(line, type=HookEvent)
    assert (event.job_id, event.cluster, event.context) == ("4242", "testcluster", "epilog_slurmctld")
    assert event.env["SLURM_JOB_USER"] == "root"


def test_a_stale_socket_file_counts_as_daemon_down(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "run" / "daemon.sock").write_text("")
    assert run_hook(config).returncode == 0
    assert len(spool_lines(tmp_path)) == 1


def test_with_the_daemon_up_the_event_is_acknowledged_and_not_spooled(daemon, tmp_path):
    d = daemon().start()
    d.wait_all_running()
    result = run_hook(d.config_path)
    assert result.returncode == 0, result.stderr
    assert spool_lines(tmp_path) == []
    wait_for(lambda: "job 4242@testcluster: epilog_slurmctld event (hook)" in d.log_text(), 5, message="listener log")


def test_spooled_events_are_replayed_when_the_listener_starts(daemon, tmp_path):
    d = daemon()
    for job in ("11", "12"):
        assert run_hook(d.config_path, {**SLURM_ENV, "SLURM_JOB_ID": job}).returncode == 0
    assert len(spool_lines(tmp_path)) == 2
    d.start()
    wait_for(lambda: "replayed 2 spooled hook events" in d.log_text(), 10, message="replay")
    assert "job 11@testcluster: epilog_slurmctld event (spool)" in d.log_text()
    assert not (tmp_path / "state" / "hook-spool.jsonl").exists()


def test_the_spool_never_grows_beyond_its_limit(tmp_path):
    config = write_config(tmp_path, hookSpoolMaxBytes=3000)
    for _ in range(5):
        assert run_hook(config).returncode == 0
    assert os.path.getsize(tmp_path / "state" / "hook-spool.jsonl") <= 3000


def test_garbage_and_oversized_frames_do_not_stop_the_listener(daemon, tmp_path):
    d = daemon().start()
    before = d.wait_all_running()["hook_listener"]["pid"]
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("ipc://" + str(tmp_path / "run" / "daemon.sock"))
    sock.send_multipart([b"", b"not json at all"])
    assert sock.poll(2000)
    assert json.loads(sock.recv_multipart()[-1]) == {"kind": "hook_ack", "accepted": False}
    sock.send_multipart([b"", json.dumps({"kind": "hook_event", "job_id": "../../etc", "cluster": "c",
                                          "context": "x", "sent_at": 1.0}).encode()])
    assert sock.poll(2000)
    assert json.loads(sock.recv_multipart()[-1])["accepted"] is False
    sock.send_multipart([b"", b"x" * (1024 * 1024)])  # over the frame limit: the peer is dropped
    sock.close(linger=0)
    context.term()
    assert run_hook(d.config_path).returncode == 0
    wait_for(lambda: "job 4242@testcluster: epilog_slurmctld event (hook)" in d.log_text(), 5, message="a good event after garbage")
    assert d.actors()["hook_listener"]["pid"] == before


def test_the_hook_clients_own_config_defaults_are_the_daemons():
    from actors.config import Config
    from actors.hook_client import HOOK_DEFAULTS, SPOOL_FILE

    defaults = Config()
    assert HOOK_DEFAULTS == {"prepSockConnectPath": defaults.prep_sock_connect_path, "stateDir": defaults.state_dir,
                             "hookSpoolMaxBytes": defaults.hook_spool_max_bytes}
    assert defaults.hook_spool_path == f"{defaults.state_dir}/{SPOOL_FILE}"


def test_the_hook_client_imports_neither_msgspec_nor_the_config_module(tmp_path):
    config = write_config(tmp_path)
    probe = ("import sys, runpy; sys.argv=['cc-slurm-adapter','-config',sys.argv[1]]\n"
             "try:\n    runpy.run_module('actors.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m in ('msgspec', 'actors.config', 'requests')))")
    clean = {k: v for k, v in python_env().items() if not k.startswith("SLURM_")}
    result = subprocess.run([__import__("sys").executable, "-c", probe, config], capture_output=True, text=True,
                            env={**clean, **SLURM_ENV}, cwd=REPO, timeout=30)
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- the listener's decisions, without sockets ------------------------------------------------------

class RecordingLog:
    def __init__(self):
        self.lines = []

    def warning(self, message, *args):
        self.lines.append(message % args)

    info = warning


def event_frame(**fields) -> bytes:
    event = {"kind": "hook_event", "job_id": "4242", "cluster": "testcluster", "context": "epilog_slurmctld",
             "sent_at": 1.0, **fields}
    return json.dumps(event).encode()


@pytest.mark.parametrize("job_id", ["0", "-1", "12a", "²", "٣", "4294967296", "99999999999999999999", ""])
def test_the_listener_drops_a_job_id_that_is_not_a_slurm_job_id(job_id):
    from actors.hook_listener import QuietWarnings, handle

    log = RecordingLog()
    assert handle(event_frame(job_id=job_id), msgspec.json.Decoder(HookEvent), QuietWarnings(log), "hook") is None
    assert log.lines == [f"dropping a hook event with job id {job_id!r}: not a Slurm job id"]


@pytest.mark.parametrize("fields", [{"context": "task_prolog"}, {"cluster": "x" * 257}, {"cluster": "a\nb"}])
def test_the_listener_drops_an_event_no_slurm_hook_sends(fields):
    from actors.hook_listener import QuietWarnings, handle

    assert handle(event_frame(**fields), msgspec.json.Decoder(HookEvent), QuietWarnings(RecordingLog()), "hook") is None


def test_the_largest_slurm_job_id_makes_a_nudge():
    from actors.hook_listener import QuietWarnings, handle

    decoder = msgspec.json.Decoder(HookEvent)
    nudge = handle(event_frame(job_id="4294967295"), decoder, QuietWarnings(RecordingLog()), "hook")
    assert (nudge.cluster, nudge.job_id, nudge.context) == ("testcluster", 4294967295, "epilog_slurmctld")


def test_dropped_frames_are_logged_ten_per_minute_then_counted():
    from actors.hook_listener import QuietWarnings, handle

    log = RecordingLog()
    warnings = QuietWarnings(log)
    for _ in range(1000):
        handle(b"garbage", msgspec.json.Decoder(HookEvent), warnings, "hook")
    assert len(log.lines) == 10
    warnings.window_start -= 60
    handle(b"garbage", msgspec.json.Decoder(HookEvent), warnings, "hook")
    assert log.lines[10].startswith("990 more hook frames dropped in the last 60 s")


class FullQueue:
    """A querier pipe that takes `room` messages, then is full."""

    def __init__(self, room):
        self.room, self.sent = room, []

    def send(self, sock, nudge):
        if len(self.sent) >= self.room:
            return False
        self.sent.append(nudge)
        return True


def nudge(job_id, context="prolog_slurmctld"):
    return JobNudge(cluster="c", job_id=job_id, source="hook", at=1.0, context=context)


def test_events_waiting_for_the_querier_merge_per_job_and_an_epilog_wins():
    from actors.hook_listener import Forwarder

    rt = FullQueue(room=0)
    forwarder = Forwarder(rt, None)
    for _ in range(5000):
        forwarder.add(nudge(1))
        forwarder.add(nudge(2))
    forwarder.add(nudge(1, "epilog_slurmctld"))
    forwarder.add(nudge(1))
    forwarder.flush()
    waiting = [(n.job_id, n.context) for n in forwarder.pending.values()]
    assert waiting == [(1, "epilog_slurmctld"), (2, "prolog_slurmctld")]
    rt.room = 10
    forwarder.flush()
    assert [n.job_id for n in rt.sent] == [1, 2] and not forwarder.pending


def test_beyond_max_pending_jobs_new_jobs_are_dropped_and_counted():
    from actors.hook_listener import Forwarder

    forwarder = Forwarder(FullQueue(room=0), None, limit=3)
    assert [forwarder.add(nudge(j)) for j in (1, 2, 3, 4, 5, 1)] == [True, True, True, False, False, True]
    assert (len(forwarder.pending), forwarder.dropped) == (3, 2)


def test_the_replay_reads_lines_a_hook_appends_after_the_rename_and_only_whole_lines(tmp_path):
    from actors.hook_listener import SpoolReplay

    spool = tmp_path / "hook-spool.jsonl"
    spool.write_bytes(b"one\ntwo\n")
    replay = SpoolReplay(str(spool))
    assert replay.begin(now=0.0) and not spool.exists()
    assert replay.read_new() == [b"one", b"two"]
    with open(replay.path, "ab") as late:  # a hook that opened the spool just before the rename
        late.write(b"three\nfou")
    assert replay.read_new() == [b"three"]
    assert replay.read_new() == []
    with open(replay.path, "ab") as late:
        late.write(b"r\n")
    assert replay.read_new() == [b"four"]
    replay.finish()
    assert not os.path.exists(replay.path)
    assert replay.begin(now=1.0) is False, "no spool, nothing to replay"
