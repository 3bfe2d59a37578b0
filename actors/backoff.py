"""Backoff delays: exponential, capped, with jitter. Pure functions."""

from __future__ import annotations

import random
from typing import Callable

MAX_EXPONENT = 62  #: beyond this base * 2**n only overflows; the cap applies long before


def compute_backoff(attempts: int, *, base_s: float, cap_s: float, jitter: float = 0.25,
                    rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `attempts` failed tries (1 = the first failure).

    The ceiling is base_s * 2**(attempts-1), capped at cap_s (attempts <= 1 give base_s). `jitter`
    is the fraction of it that is random: the delay lies in [ceiling * (1 - jitter), ceiling],
    drawn with `rand()` in [0, 1). jitter=1 is "full jitter" (0 .. ceiling), 0 is no jitter, the
    default 0.25 spreads retries of many rows without ever waiting less than 3/4 of the ceiling.
    Inject `rand` for deterministic results.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be a fraction in [0, 1], got {jitter}")
    exponent = min(max(0, attempts - 1), MAX_EXPONENT)
    ceiling = min(cap_s, base_s * 2.0 ** exponent)
    return ceiling * (1.0 - jitter * rand())
