"""Life under systemd: READY=1 once every actor reported in, watchdog pings, STOPPING=1; SIGHUP reloads
a valid config and refuses a broken one while the daemon keeps running."""

import json
import signal
import socket

from tests.support import wait_for


def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def received(sock, messages):
    try:
        messages.append(sock.recv(4096).decode())
    except socket.timeout:
        pass
    return messages


def test_ready_watchdog_and_stopping_reach_systemd(daemon, tmp_path):
    sock, path = notify_socket(tmp_path)
    d = daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}).start()
    messages = []
    wait_for(lambda: any(m.startswith("READY=1") for m in received(sock, messages)), 20, 0, "READY=1")
    wait_for(lambda: any(m.startswith("WATCHDOG=1") for m in received(sock, messages)), 5, 0, "WATCHDOG=1")
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=5/5 actors running" in ready
    d.process.send_signal(signal.SIGTERM)
    wait_for(lambda: any(m.startswith("STOPPING=1") for m in received(sock, messages)), 5, 0, "STOPPING=1")
    assert d.process.wait(5) == 0


def test_sighup_with_a_broken_config_keeps_the_old_one_and_the_daemon(daemon, tmp_path):
    d = daemon().start()
    before = {n: a["pid"] for n, a in d.wait_all_running().items()}
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "slurmPolInterval": 5}))
    d.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: new configuration refused, keeping the old one" in d.log_text(), 5, 0.1, "refusal")
    assert "unknown key slurmPolInterval" in d.log_text()
    (tmp_path / "config.json").write_text(json.dumps(config))  # so that ccctl can read it again
    assert {n: a["pid"] for n, a in d.all_running().items()} == before


def test_sighup_with_a_valid_config_restarts_the_actors_with_it(daemon, tmp_path):
    d = daemon().start()
    before = {n: a["pid"] for n, a in d.wait_all_running().items()}
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "slurmPollInterval": 1800}))
    d.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: configuration reloaded; restarting actors" in d.log_text(), 5, 0.1, "reload")
    after = wait_for(lambda: (a := d.all_running()) and all(a[n]["pid"] != before[n] for n in before) and a,
                     15, 0.1, "every actor restarted")
    assert set(after) == set(before)
