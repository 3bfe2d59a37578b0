"""etc/cc-slurm-adapter.service is a unit systemd accepts, with the life-cycle settings we rely on."""

import subprocess

from tests.support import REPO

UNIT = f"{REPO}/etc/cc-slurm-adapter.service"


def unit_settings() -> dict:
    settings = {}
    for line in open(UNIT):
        if "=" in line and not line.startswith("#"):
            key, _, value = line.strip().partition("=")
            settings.setdefault(key, value)
    return settings


def test_the_unit_is_type_notify_with_a_watchdog_and_runs_the_daemon():
    s = unit_settings()
    assert s["Type"] == "notify"
    assert s["WatchdogSec"] == "60s"
    assert s["ExecStart"].endswith("cc-slurm-adapter -daemon -config /etc/cc-slurm-adapter/config.json")
    assert (s["RuntimeDirectory"], s["StateDirectory"], s["Group"]) == ("cc-slurm-adapter", "cc-slurm-adapter", "slurm")
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["PrivateTmp"] == "yes"


def test_systemd_analyze_verify_finds_nothing_but_the_missing_binary():
    result = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and "is not executable" not in line and "No such file" not in line]
    assert complaints == []
