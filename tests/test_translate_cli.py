"""`ccctl translate`: one JSON event per line; exit 0 clean, 1 something quarantined, 2 bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors import translate_cli
from tests.golden import SANDBOX_CLUSTERS, fixture_path


def run(capsysbinary, *argv) -> tuple[int, list[dict], str]:
    code = translate_cli.main(list(argv))
    captured = capsysbinary.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return code, lines, captured.err.decode()


def test_a_clean_document_prints_a_start_and_a_stop_per_finished_job_and_exits_0(capsysbinary):
    code, lines, err = run(capsysbinary, "--sacct", fixture_path("22.05", "sacct-json-all-since-start.json"))

    assert code == translate_cli.EXIT_OK
    assert [line["event"] for line in lines] == ["start_job", "stop_job"] * 15
    assert lines[0]["body"]["jobId"] == 1 and lines[1]["body"] == {
        "jobId": 1, "cluster": "testcluster", "startTime": 1795374143, "jobState": "timeout", "stopTime": 1795374227}
    assert err == ""


def test_live_records_and_the_cluster_topology_add_threads_and_gpus(capsysbinary, tmp_path):
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps(SANDBOX_CLUSTERS))

    code, lines, _ = run(capsysbinary, "--sacct", fixture_path("26.05", "sacct-json-gpu-running.json"),
                         "--squeue", fixture_path("26.05", "squeue-json-gpu-running.json"), "--clusters", str(clusters))

    assert code == 0
    (start,) = lines
    assert start["body"]["resources"] == [{"hostname": "n1", "hwthreads": [0], "accelerators": ["00000000:01:00.0"]}]


def test_the_word_translate_in_front_is_tolerated(capsysbinary):
    code, lines, _ = run(capsysbinary, "translate", "--sacct", fixture_path("24.11", "sacct-json-completed.json"))

    assert code == 0 and len(lines) == 2


def test_a_quarantined_job_prints_its_id_path_and_error_and_exits_1(capsysbinary, tmp_path):
    document = json.loads(open(fixture_path("24.11", "sacct-json-array.json"), "rb").read())
    document["jobs"][1]["time"] = "yesterday"
    damaged = tmp_path / "sacct.json"
    damaged.write_text(json.dumps(document))

    code, lines, _ = run(capsysbinary, "--sacct", str(damaged))

    assert code == translate_cli.EXIT_QUARANTINED
    assert [line["event"] for line in lines] == ["start_job", "stop_job", "quarantine", "start_job", "stop_job"]
    assert lines[2] == {"event": "quarantine", "jobId": 43, "path": "$.jobs[1].time",
                        "error": "Expected `object | null`, got `str`"}


@pytest.mark.parametrize("argv,message", [
    (["--sacct", "/nonexistent/sacct.json"], "--sacct file /nonexistent/sacct.json cannot be read"),
    ([], "--sacct FILE is required"),
    (["--sacct"], "--sacct needs a FILE"),
    (["--what", "x"], "unknown argument '--what'"),
])
def test_unusable_arguments_exit_2_with_one_clear_line(capsysbinary, argv, message):
    code, lines, err = run(capsysbinary, *argv)

    assert code == translate_cli.EXIT_BAD_INPUT
    assert lines == []
    assert err.splitlines()[0] == f"ccctl translate: {message}" + (": No such file or directory" if "read" in message else "")


@pytest.mark.parametrize("name,message", [
    ("README.md", "ccctl translate: not a sacct --json document: JSON is malformed: invalid character (byte 0)"),
    ("sinfo-json.json", "ccctl translate: not a sacct --json document: Object missing required field `jobs`"),
])
def test_a_file_that_is_not_sacct_json_exits_2(capsysbinary, name, message):
    code, lines, err = run(capsysbinary, "--sacct", fixture_path("22.05", name))

    assert (code, lines) == (translate_cli.EXIT_BAD_INPUT, [])
    assert err.splitlines() == [message]


def test_a_bad_config_file_exits_2_naming_the_key(capsysbinary, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"ignoreHosts": "n[1-"}')
    config.chmod(0o600)

    code, _, err = run(capsysbinary, "-config", str(config), "--sacct", fixture_path("24.11", "sacct-json-completed.json"))

    assert code == 2
    assert "key ignoreHosts" in err


def test_the_config_ignore_hosts_and_gpu_pci_addrs_apply(capsysbinary, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ignoreHosts": "^n2$", "gpuPciAddrs": {"^n1$": ["0000:3B:00.0"]}}))
    config.chmod(0o600)

    code, lines, _ = run(capsysbinary, "-config", str(config),
                         "--sacct", fixture_path("24.11", "sacct-json-multinode.json"),
                         "--scontrol", fixture_path("24.11", "scontrol-json-multinode-finished.json"))

    assert code == 0
    assert [r["hostname"] for r in lines[0]["body"]["resources"]] == ["n1", "n3"]


def test_as_a_module_it_runs_without_the_daemons_imports():
    script = ("import sys; from actors.translate_cli import main; rc = main(sys.argv[1:]); "
              "assert 'zmq' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", script, "--sacct", fixture_path("22.05", "sacct-json-failed.json")],
                          capture_output=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["start_job", "stop_job"]
