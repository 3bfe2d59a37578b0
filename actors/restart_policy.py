"""When to restart a dead actor, when to call it flapping, when to call it hung. Pure functions."""

from __future__ import annotations

FIRST_RESTART_DELAY_S = 0.5  #: the first restart comes within a second
MAX_RESTART_DELAY_S = 30.0  #: backoff cap; a flapping actor keeps being retried at this pace
FLAPPING_EXITS = 5  #: this many exits ...
FLAPPING_WINDOW_S = 60.0  #: ... within this window mark an actor flapping
STABLE_AFTER_S = 30.0  #: an actor that ran this long without dying has its backoff reset
TERM_GRACE_S = 3.0  #: after SIGTERM, how long a hung actor gets before SIGKILL


def restart_delay_s(consecutive_failures: int, flapping: bool) -> float:
    """Exponential backoff from FIRST_RESTART_DELAY_S, capped; flapping actors wait the cap."""
    if flapping:
        return MAX_RESTART_DELAY_S
    if consecutive_failures <= 1:
        return FIRST_RESTART_DELAY_S
    return min(MAX_RESTART_DELAY_S, FIRST_RESTART_DELAY_S * 2 ** (consecutive_failures - 1))


def recent_exits(exit_times: list[float], now: float, window_s: float = FLAPPING_WINDOW_S) -> list[float]:
    """The exits that still count: those inside the window ending now."""
    return [t for t in exit_times if now - t <= window_s]


def is_flapping(exit_times: list[float], now: float) -> bool:
    return len(recent_exits(exit_times, now)) >= FLAPPING_EXITS


def consecutive_failures_after_exit(previous: int, ran_for_s: float) -> int:
    """A crash after a long healthy run starts the backoff over."""
    return 1 if ran_for_s >= STABLE_AFTER_S else previous + 1


def is_hung(last_heartbeat_at: float, now: float, timeout_s: float) -> bool:
    return now - last_heartbeat_at > timeout_s


def should_kill(term_sent_at: float | None, now: float) -> bool:
    """SIGTERM first; SIGKILL once the grace period is over."""
    return term_sent_at is not None and now - term_sent_at >= TERM_GRACE_S
