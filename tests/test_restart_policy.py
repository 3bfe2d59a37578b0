"""Restart policy as pure functions, fed synthetic timelines."""

from actors import restart_policy as p


def test_the_first_restart_comes_within_a_second():
    assert p.restart_delay_s(1, flapping=False) == 0.5


def test_the_delay_doubles_with_each_consecutive_failure_up_to_the_cap():
    assert [p.restart_delay_s(n, flapping=False) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_flapping_actor_is_retried_at_the_maximum_backoff():
    assert p.restart_delay_s(2, flapping=True) == p.MAX_RESTART_DELAY_S


def test_five_exits_within_sixty_seconds_mean_flapping_four_do_not():
    assert p.is_flapping([0, 10, 20, 30, 40], now=50)
    assert not p.is_flapping([0, 10, 20, 30], now=50)


def test_exits_older_than_the_window_no_longer_count():
    assert not p.is_flapping([0, 1, 2, 70, 80], now=100)
    assert p.recent_exits([0, 1, 2, 70, 80], now=100) == [70, 80]


def test_a_crash_after_a_long_healthy_run_resets_the_backoff():
    assert p.consecutive_failures_after_exit(previous=6, ran_for_s=31) == 1
    assert p.consecutive_failures_after_exit(previous=6, ran_for_s=2) == 7


def test_an_actor_is_hung_only_after_the_timeout():
    assert not p.is_hung(last_heartbeat_at=100, now=110, timeout_s=10)
    assert p.is_hung(last_heartbeat_at=100, now=110.1, timeout_s=10)


def test_sigkill_follows_sigterm_after_the_grace_period():
    assert not p.should_kill(None, now=100)
    assert not p.should_kill(term_sent_at=100, now=102)
    assert p.should_kill(term_sent_at=100, now=103)
