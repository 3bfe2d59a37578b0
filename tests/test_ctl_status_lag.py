"""`ccctl status` on sacct lagging behind slurmctld (actors/accounting_lag.py): the count on the slurm
line while the poll window waits, a problem (exit 1) once it waits longer than ACCOUNTING_LAG_PROBLEM_S."""

from actors.ctl_commands import ACCOUNTING_LAG_PROBLEM_S, EXIT_DEGRADED, EXIT_OK, StatusCommand
from tests.test_metrics import STATUS


def status_with_lag(jobs: int, lag_s: float) -> dict:
    healthy_actors = [{**a, "state": "running"} for a in STATUS["actors"]]
    slurm = {**STATUS["slurm"], "accounting_lagging_jobs": jobs, "accounting_lag_s": lag_s}
    delivery = {**STATUS["delivery"], "sinks": {"rest": {**STATUS["delivery"]["sinks"]["rest"], "oldest_pending_age_s": 1}}}
    return {**STATUS, "actors": healthy_actors, "slurm": slurm, "delivery": delivery}


def slurm_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("slurm: "))


def test_without_lag_the_slurm_line_says_nothing_of_it_and_nothing_is_a_problem():
    text, code = StatusCommand.render(status_with_lag(0, 0), as_json=False)
    assert "sacct behind" not in slurm_line(text)
    assert code == EXIT_OK and "PROBLEM" not in text


def test_a_short_lag_shows_its_job_count_on_the_slurm_line_and_is_no_problem():
    text, code = StatusCommand.render(status_with_lag(2, ACCOUNTING_LAG_PROBLEM_S), as_json=False)
    assert slurm_line(text).endswith(", sacct behind slurmctld on 2 ended job(s)")
    assert code == EXIT_OK and "PROBLEM" not in text


def test_a_lag_longer_than_the_threshold_is_a_problem_naming_the_jobs_and_the_age():
    data = status_with_lag(2, ACCOUNTING_LAG_PROBLEM_S + 1)
    assert StatusCommand.problems(data) == [
        f"Slurm: sacct has not shown the end of 2 job(s) slurmctld ended up to {ACCOUNTING_LAG_PROBLEM_S + 1} s ago: "
        "slurmdbd is behind slurmctld"]
    assert StatusCommand.render(data, as_json=False)[1] == EXIT_DEGRADED


def test_a_status_from_a_daemon_without_the_lag_fields_still_renders():
    slurm = {k: v for k, v in STATUS["slurm"].items() if not k.startswith("accounting_")}
    text, _ = StatusCommand.render({**STATUS, "slurm": slurm}, as_json=False)
    assert slurm_line(text).startswith("slurm: release 22.05.8, last poll ")
