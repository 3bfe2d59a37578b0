"""cc-slurm-adapter's command line: the original's flags, and bad input stopped before anything starts."""

import os
import subprocess

import pytest

from actors.cli import UsageError, parse_flags
from tests.support import REPO, adapter_command, python_env, write_config


def run_adapter(*args, env=None):
    return subprocess.run(adapter_command(*args), capture_output=True, text=True, env=python_env(env), cwd=REPO, timeout=30)


def test_single_and_double_dash_flags_both_work():
    assert parse_flags(["-daemon", "--config", "/c.json", "-debug=4"]) == {
        "daemon": True, "help": False, "config": "/c.json", "debug": 4}


def test_an_unknown_flag_is_a_usage_error():
    with pytest.raises(UsageError, match="flag provided but not defined: -deamon"):
        parse_flags(["-deamon"])


def test_help_exits_zero_even_when_the_config_is_broken(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = run_adapter("-help", "-config", str(broken))
    assert result.returncode == 0
    assert "-daemon" in result.stdout and "-debug int" in result.stdout


def test_an_unknown_flag_exits_two_with_usage():
    result = run_adapter("-bogus")
    assert result.returncode == 2
    assert "flag provided but not defined: -bogus" in result.stderr


BAD_CONFIGS = [
    ({"slurmPolInterval": 5}, "unknown key slurmPolInterval: did you mean slurmPollInterval?"),
    ({"slurmPollInterval": "soon"}, "key slurmPollInterval: expected `int`, got `str`"),
    ({"gpuPciAddrs": {"n[0-9": ["0000:3b:00.0"]}}, "key gpuPciAddrs: regex 'n[0-9' does not compile"),
    ({"ignoreHosts": "n(1"}, "key ignoreHosts: regex 'n(1' does not compile"),
    ({"slurmQueryDelay": -2}, "key slurmQueryDelay is negative"),
    ({"ccRestJwt": ""}, "key ccRestJwt is empty"),
    ({"prepSockListenPath": "relative.sock"}, "key prepSockListenPath: socket path 'relative.sock' must be absolute"),
    ({"prepSockListenPath": "tcp:localhost"}, "key prepSockListenPath: 'tcp:localhost' is not tcp:HOST:PORT"),
]


@pytest.mark.parametrize("overrides, expected", BAD_CONFIGS, ids=[e for _, e in BAD_CONFIGS])
def test_a_bad_config_gives_one_line_naming_the_key_and_starts_nothing(tmp_path, overrides, expected):
    config = write_config(tmp_path, **overrides)
    result = run_adapter("-daemon", "-config", config)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("FATAL supervisor[")
    assert expected in lines[0]
    assert os.listdir(tmp_path / "run") == []


def test_invalid_json_in_the_config_gives_its_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"slurmPollInterval": 5,\n "ccRestUrl": }')
    result = run_adapter("-daemon", "-config", str(path))
    assert result.returncode == 1
    assert "invalid JSON at line 2 column 15" in result.stderr


def test_a_named_config_file_that_does_not_exist_is_refused(tmp_path):
    result = run_adapter("-daemon", "-config", str(tmp_path / "none.json"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_secrets_never_appear_in_a_config_error(tmp_path):
    config = write_config(tmp_path, ccRestJwt="TOPSECRET-JWT", natsPassword="TOPSECRET-NATS", slurmPolInterval=1)
    result = run_adapter("-daemon", "-config", config)
    assert result.returncode == 1
    assert "TOPSECRET" not in result.stderr + result.stdout
