"""compute_backoff: exponential from base, capped, jitter as a fraction; exact numbers with an injected rand."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.backoff import compute_backoff


def no_jitter(attempts, base_s=1.0, cap_s=300.0):
    return compute_backoff(attempts, base_s=base_s, cap_s=cap_s, jitter=0.0)


def test_the_delay_doubles_from_the_base_with_each_failed_attempt():
    assert [no_jitter(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def test_zero_and_negative_attempts_wait_the_base():
    assert (no_jitter(0), no_jitter(-3)) == (1.0, 1.0)


def test_the_delay_stops_growing_at_the_cap():
    assert [no_jitter(n) for n in (9, 10, 11, 1000)] == [256.0, 300.0, 300.0, 300.0]


def test_a_huge_attempt_count_does_not_overflow():
    assert no_jitter(10**9, cap_s=5.0) == 5.0


def test_partial_jitter_takes_away_up_to_its_fraction():
    # Given a 16 s ceiling (attempt 5) and 25 % jitter
    low = compute_backoff(5, base_s=1.0, cap_s=300.0, jitter=0.25, rand=lambda: 0.999999)
    mid = compute_backoff(5, base_s=1.0, cap_s=300.0, jitter=0.25, rand=lambda: 0.5)
    high = compute_backoff(5, base_s=1.0, cap_s=300.0, jitter=0.25, rand=lambda: 0.0)

    assert mid == 14.0
    assert high == 16.0
    assert 12.0 < low < 12.0001


def test_full_jitter_spreads_over_the_whole_ceiling():
    delays = [compute_backoff(3, base_s=2.0, cap_s=60.0, jitter=1.0, rand=lambda r=r: r) for r in (0.0, 0.25, 0.75)]

    assert delays == [8.0, 6.0, 2.0]


def test_jitter_applies_to_the_capped_value():
    assert compute_backoff(20, base_s=1.0, cap_s=300.0, jitter=0.5, rand=lambda: 0.5) == 225.0


def test_a_jitter_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        compute_backoff(1, base_s=1.0, cap_s=2.0, jitter=1.5)


@given(attempts=st.integers(min_value=-5, max_value=10**6), r=st.floats(min_value=0.0, max_value=0.9999999),
       jitter=st.floats(min_value=0.0, max_value=1.0))
def test_every_delay_lies_between_the_jittered_floor_and_the_cap(attempts, r, jitter):
    delay = compute_backoff(attempts, base_s=0.5, cap_s=120.0, jitter=jitter, rand=lambda: r)

    assert 0.0 <= delay <= 120.0
    assert delay >= min(120.0, 0.5 * 2.0 ** min(max(0, attempts - 1), 62)) * (1 - jitter) - 1e-9
