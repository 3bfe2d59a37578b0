"""How far a poll moves the watermark when slurmdbd lags behind slurmctld (actors/accounting_lag.py),
on documents of real Slurm 22.05 and 24.11: slurmctld's record of a job that ran and ended holds the
watermark at its end until sacct shows that end."""

from pathlib import Path

from actors.accounting_lag import HOLD_MAX_S, AccountingLag
from actors.slurm_records import split_jobs
from tests.golden import FIXTURES

FIXTURES = Path(FIXTURES)
PLACEHOLDER_2205 = Path(__file__).parent / "golden" / "placeholder-22.05"


def keys(path: Path) -> list:
    return [key for key, _ in split_jobs(path.read_bytes(), path.name)]


def live_24_11() -> list:
    """slurmctld's records of every 24.11 case, each read after the job ended."""
    return [key for path in sorted((FIXTURES / "slurm-24.11").glob("scontrol-json-*-finished.json")) for key in keys(path)]


def having_seen(path: Path, but: int | None = None) -> AccountingLag:
    """An AccountingLag that saw every sacct record of `path` but job `but`'s."""
    lag = AccountingLag()
    for key in keys(path):
        if key.job_id != but:
            lag.saw(key)
    return lag


WINDOW_24_11 = FIXTURES / "slurm-24.11" / "sacct-json-all-since-start.json"


def end_of(job_id: int, live: list) -> int:
    return next(key.ended_in_slurmctld_at for key in live if key.job_id == job_id)


def test_nothing_is_held_when_sacct_shows_every_job_that_ran_ended():
    live = live_24_11()
    lag = having_seen(WINDOW_24_11)
    assert lag.hold_at(live, now=max(end_of(k.job_id, live) for k in live) + 10) is None
    assert lag.lagging == []


def test_jobs_that_never_ran_hold_nothing_though_sacct_windows_do_not_list_them():
    live = live_24_11()
    # 40: cancelled while pending (--begin=now+1h), 52: cancelled with its dependency never satisfied
    never_ran = {key.job_id: key.ended_in_slurmctld_at for key in live if key.job_id in (40, 52)}
    assert never_ran == {40: 0, 52: 0}
    window = {key.job_id for key in keys(WINDOW_24_11)}
    assert not window & set(never_ran)


def test_a_job_sacct_still_shows_running_holds_the_watermark_at_its_end():
    live = live_24_11()
    lag = having_seen(WINDOW_24_11, but=37)
    for key in keys(FIXTURES / "slurm-24.11" / "sacct-json-completed-running.json"):
        assert key.job_id == 37 and not key.time.end
        lag.saw(key)
    end = end_of(37, live)
    assert lag.hold_at(live, now=end + 120) == end
    assert lag.lagging == [37]


def test_with_accounting_empty_the_earliest_end_of_a_job_that_ran_holds_it():
    live = live_24_11()
    lag = AccountingLag()
    ran = {key.job_id: key.ended_in_slurmctld_at for key in live if key.ended_in_slurmctld_at}
    now = max(ran.values()) + 60
    assert lag.hold_at(live, now) == min(ran.values())
    assert sorted(lag.lagging) == sorted(ran) and 40 not in lag.lagging and 52 not in lag.lagging


def test_22_05_squeue_records_hold_at_the_first_job_sacct_has_not_shown():
    live = keys(PLACEHOLDER_2205 / "squeue-json-live.json")  # jobs 15-51, all COMPLETED
    lag = having_seen(PLACEHOLDER_2205 / "sacct-json-full.json")  # jobs 38-51
    now = end_of(51, live) + 30
    assert lag.hold_at(live, now) == end_of(15, live)
    assert lag.lagging == list(range(15, 38))


def test_a_job_sacct_has_not_shown_ended_for_hold_max_s_no_longer_holds_and_is_named_once():
    live = live_24_11()
    lag = having_seen(WINDOW_24_11, but=37)
    end = end_of(37, live)
    found_at = end + 3600  # an outage of an hour: its jobs ended long ago, they hold all the same
    assert lag.hold_at(live, found_at) == end
    assert lag.hold_at(live, found_at + HOLD_MAX_S) == end
    assert lag.hold_at(live, found_at + HOLD_MAX_S + 1) is None
    assert lag.newly_given_up == [37]
    assert lag.hold_at(live, found_at + HOLD_MAX_S + 2) is None
    assert lag.newly_given_up == []


def test_jobs_slurmctld_no_longer_holds_are_forgotten():
    live = live_24_11()
    lag = having_seen(WINDOW_24_11)
    assert 37 in lag.ended_seen
    assert lag.hold_at([key for key in live if key.job_id != 37], now=end_of(37, live)) is None
    assert 37 not in lag.ended_seen


def test_after_a_restart_the_jobs_slurmctld_ended_before_the_window_are_to_be_confirmed_not_held():
    live = live_24_11()
    ran = {key.job_id: key.ended_in_slurmctld_at for key in live if key.ended_in_slurmctld_at}
    fresh = AccountingLag()
    assert sorted(fresh.unconfirmed(live, before=max(ran.values()) + 1)) == sorted(ran)
    assert sorted(fresh.unconfirmed(live, before=end_of(37, live))) == sorted(j for j, e in ran.items() if e < end_of(37, live))
    confirmed = having_seen(WINDOW_24_11)
    assert confirmed.unconfirmed(live, before=max(ran.values()) + 1) == []
