"""The supervisor with real processes: restarts, flapping, hangs, orphans, shutdown, a second start."""

import os
import signal
import subprocess

import pytest

from tests.support import ACTOR_NAMES, REPO, adapter_command, ccctl_command, pid_alive, python_env, wait_for


@pytest.mark.parametrize("name", sorted(ACTOR_NAMES))
def test_an_actor_killed_with_sigkill_gets_a_new_pid_within_two_seconds(daemon, name):
    d = daemon().start()
    old_pid = d.wait_all_running()[name]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    actors = wait_for(lambda: (a := d.all_running()) and a[name]["pid"] != old_pid and a, 2.0, 0.05,
                      f"{name} running again under a new pid")
    assert pid_alive(actors[name]["pid"])
    assert actors[name]["restarts"] == 1
    assert d.status()[0] == 0


def test_an_actor_that_exits_at_once_on_every_start_is_flapping_while_the_others_run(daemon):
    d = daemon(env={"CCSA_TEST_CRASH_ACTORS": "nats_publisher"}).start()
    actors = wait_for(lambda: (a := d.actors()) and a["nats_publisher"]["state"] == "flapping" and a, 15.0, 0.2,
                      "nats_publisher flapping")
    assert {n: a["state"] for n, a in actors.items() if n != "nats_publisher"} == {
        n: "running" for n in ACTOR_NAMES - {"nats_publisher"}}
    assert actors["nats_publisher"]["restarts"] >= 4
    assert d.status()[0] == 1  # degraded


def test_a_hung_actor_is_terminated_then_killed_and_restarted(daemon):
    d = daemon(env={"CCSA_TEST_HANG_ACTORS": "translator"}, heartbeatTimeout=2).start()
    first = wait_for(lambda: (a := d.actors()) and a.get("translator", {}).get("pid"), 10, 0.1, "translator pid")
    wait_for(lambda: (a := d.actors()) and a["translator"]["pid"] not in (None, first), 15, 0.1,
             "a new translator after the hang")
    log = d.log_text()
    assert f"translator (pid {first}) sent no heartbeat for 2 s; terminating it" in log
    assert f"translator (pid {first}) ignored SIGTERM; killing it" in log
    assert not pid_alive(first)


def test_no_actor_outlives_a_sigkill_of_the_supervisor_by_five_seconds(daemon):
    d = daemon().start()
    pids = [a["pid"] for a in d.wait_all_running().values()]
    os.kill(d.process.pid, signal.SIGKILL)
    d.process.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5.0, 0.1, "every actor gone")


def test_sigterm_stops_everything_with_exit_zero_and_removes_pid_file_and_sockets(daemon, tmp_path):
    d = daemon().start()
    pids = [a["pid"] for a in d.wait_all_running().values()]
    d.process.send_signal(signal.SIGTERM)
    assert d.process.wait(5) == 0
    assert not any(pid_alive(p) for p in pids)
    assert sorted(os.listdir(tmp_path / "run")) == []


def test_a_second_daemon_with_the_same_pid_file_refuses_and_the_first_keeps_working(daemon, tmp_path):
    d = daemon().start()
    before = d.wait_all_running()
    second = subprocess.run(adapter_command("-daemon", "-config", d.config_path), capture_output=True, text=True,
                            env=python_env(), cwd=REPO, timeout=20)
    assert second.returncode == 1
    assert f"a daemon with PID {d.process.pid} already runs with pid file" in second.stderr
    after = d.all_running()
    assert after is not None and {n: a["pid"] for n, a in after.items()} == {n: a["pid"] for n, a in before.items()}
    assert os.path.exists(tmp_path / "run" / "daemon.sock")


def test_a_stale_pid_file_from_a_dead_daemon_does_not_block_a_new_start(daemon, tmp_path):
    d = daemon()
    (tmp_path / "run" / "daemon.pid").write_text("999999")
    d.start()
    d.wait_all_running()
    assert (tmp_path / "run" / "daemon.pid").read_text() == str(d.process.pid)


def test_ccctl_status_says_which_socket_it_tried_when_the_daemon_is_down(daemon):
    d = daemon()
    result = subprocess.run(ccctl_command("-config", d.config_path, "status"), capture_output=True, text=True,
                            env=python_env(), cwd=REPO)
    assert result.returncode == 3
    assert "ctl.sock" in result.stderr and "not running" in result.stderr


def test_control_and_hook_sockets_are_not_open_to_other_users(daemon, tmp_path):
    d = daemon().start()
    d.wait_all_running()
    assert oct(os.stat(tmp_path / "run" / "ctl.sock").st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "run" / "daemon.sock").st_mode & 0o777) == "0o660"
