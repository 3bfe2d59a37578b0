"""The config file: the original's keys and defaults, and one clear line for every mistake."""

import json
import os

import pytest

from actors.config import Config, ConfigError, check_daemon_config, load_config, parse_config


def parse(obj, warnings=None):
    sink = warnings if warnings is not None else []
    return parse_config(json.dumps(obj), source="cfg.json", warn=sink.append)


def test_an_empty_object_gives_the_original_defaults():
    config = parse({})
    assert config.pid_file_path == "/run/cc-slurm-adapter/daemon.pid"
    assert config.prep_sock_listen_path == "/run/cc-slurm-adapter/daemon.sock"
    assert config.prep_sock_connect_path == "/run/cc-slurm-adapter/daemon.sock"
    assert config.last_run_path == "/var/lib/cc-slurm-adapter/lastrun"
    assert (config.slurm_poll_interval, config.slurm_query_delay) == (60, 1)
    assert (config.slurm_query_max_span, config.slurm_max_retries) == (604800, 10)
    assert (config.cc_rest_submit_jobs, config.cc_poll_interval) == (True, 21600)
    assert (config.gpu_pci_addrs, config.ignore_hosts) == ({}, "")
    assert (config.nats_server, config.nats_port, config.nats_subject) == ("", 4222, "jobs")
    assert config.state_dir == "/var/lib/cc-slurm-adapter"
    assert config.ctl_sock_path == "/run/cc-slurm-adapter/ctl.sock"


def test_every_key_of_the_original_is_read_by_its_camel_case_name():
    config = parse({"natsNKeySeedFile": "/s", "gpuPciAddrs": {"^n1$": ["0000:3b:00.0"]}, "ccRestSubmitJobs": False})
    assert config.nats_n_key_seed_file == "/s"
    assert config.gpu_pci_addrs == {"^n1$": ["0000:3b:00.0"]}
    assert config.cc_rest_submit_jobs is False


def test_an_unknown_key_is_named_with_the_closest_known_key():
    with pytest.raises(ConfigError) as e:
        parse({"slurmPolInterval": 5})
    assert str(e.value) == "cfg.json: unknown key slurmPolInterval: did you mean slurmPollInterval?"


def test_a_key_far_from_every_known_key_points_to_the_example_config():
    with pytest.raises(ConfigError, match="unknown key zzz: see etc/config.example.json"):
        parse({"zzz": 1})


def test_a_wrong_type_names_the_key_and_both_types():
    with pytest.raises(ConfigError) as e:
        parse({"slurmPollInterval": "soon"})
    assert str(e.value) == "cfg.json: key slurmPollInterval: expected `int`, got `str`"


def test_a_regex_that_does_not_compile_names_the_key_and_the_pattern():
    with pytest.raises(ConfigError, match=r"key gpuPciAddrs: regex 'n\[0-9' does not compile"):
        parse({"gpuPciAddrs": {"n[0-9": ["0000:3b:00.0"]}})
    with pytest.raises(ConfigError, match=r"key ignoreHosts: regex '\(a' does not compile"):
        parse({"ignoreHosts": "(a"})


def test_a_negative_interval_is_refused():
    with pytest.raises(ConfigError, match="key slurmQueryMaxSpan is negative"):
        parse({"slurmQueryMaxSpan": -1})


def test_invalid_json_gives_line_and_column():
    with pytest.raises(ConfigError) as e:
        parse_config('{"slurmPollInterval": 5,\n "ccRestUrl": }', source="cfg.json")
    assert str(e.value).startswith("cfg.json: invalid JSON at line 2 column 15")


def test_intervals_below_one_second_are_raised_to_one_with_a_warning():
    warnings = []
    config = parse({"slurmPollInterval": 0, "slurmQueryDelay": 0}, warnings)
    assert (config.slurm_poll_interval, config.slurm_query_delay) == (1, 1)
    assert warnings == ["cfg.json: key slurmPollInterval is below 1 s; using 1 s",
                        "cfg.json: key slurmQueryDelay is below 1 s; using 1 s"]


def test_the_readmes_slurmQueryMaxRetries_is_taken_as_slurmMaxRetries_with_a_warning():
    warnings = []
    assert parse({"slurmQueryMaxRetries": 5}, warnings).slurm_max_retries == 5
    assert warnings == ["cfg.json: key slurmQueryMaxRetries is the README's name for slurmMaxRetries; using it as slurmMaxRetries"]


def test_the_removed_ipcSockPath_is_refused_with_its_replacement():
    with pytest.raises(ConfigError, match="ipcSockPath was removed: use prepSockListenPath and prepSockConnectPath"):
        parse({"ipcSockPath": "/x"})


def test_a_missing_default_file_means_defaults_but_a_missing_named_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("actors.config.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.json"))
    assert load_config(None) == Config()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "named.json"))


def test_a_config_readable_by_everybody_gets_a_warning_naming_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    warnings = []
    load_config(str(path), warn=warnings.append)
    assert warnings == [f"config file {path} is readable by every user and may hold secrets: chmod 640 {path}"]


def daemon_config(tmp_path, **overrides):
    base = {"ccRestUrl": "http://cc.example", "ccRestJwt": "jwt", "stateDir": str(tmp_path / "state"),
            "pidFilePath": str(tmp_path / "run/d.pid"), "ctlSockPath": str(tmp_path / "run/ctl.sock"),
            "prepSockListenPath": str(tmp_path / "run/d.sock"), "lastRunPath": str(tmp_path / "state/lastrun")}
    base.update(overrides)
    return parse(base)


def test_the_daemon_needs_a_jwt(tmp_path):
    with pytest.raises(ConfigError, match="key ccRestJwt is empty"):
        check_daemon_config(daemon_config(tmp_path, ccRestJwt=""))


def test_the_daemon_needs_a_url(tmp_path):
    with pytest.raises(ConfigError, match="key ccRestUrl is empty"):
        check_daemon_config(daemon_config(tmp_path, ccRestUrl=""))


def test_the_daemon_needs_rest_or_nats(tmp_path):
    with pytest.raises(ConfigError, match="enable at least one way"):
        check_daemon_config(daemon_config(tmp_path, ccRestSubmitJobs=False))


def test_an_unreachable_socket_directory_is_refused_by_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="key prepSockListenPath: directory .* cannot be created"):
        check_daemon_config(daemon_config(tmp_path, prepSockListenPath=str(blocker / "sub/d.sock")))


def test_a_good_daemon_config_creates_its_directories(tmp_path):
    check_daemon_config(daemon_config(tmp_path))
    assert (tmp_path / "state").is_dir() and (tmp_path / "run").is_dir()
