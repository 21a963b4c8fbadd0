"""Fly's documented Machines API rate limits (reference section 11), enforced with 429s.

Written as GCRA (a theoretical arrival time per key), which admits exactly what a token bucket of the same rate
and burst admits. It is deliberately not the client's token bucket code: a shared bug would pass both sides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    per_second: float
    burst: int


# Per action and per Machine or app: 1 req/s with a burst of 3; getting a Machine: 5 req/s with a burst of 10.
DEFAULT_LIMIT = Limit(per_second=1, burst=3)
LIMITS = {"get_machine": Limit(per_second=5, burst=10)}


# Epoch timestamps near 1.8e9 carry about 2e-7 s of float error: a client that sleeps exactly until its
# token is due must not be refused for that.
_SLACK_SECONDS = 1e-6


class Throttle:
    """Not thread-safe: the fake calls it under its own lock."""

    def __init__(self) -> None:
        self._arrivals: dict[tuple[str, str], float] = {}

    def admit(self, action: str, key: str, now: float) -> bool:
        limit = LIMITS.get(action, DEFAULT_LIMIT)
        interval = 1 / limit.per_second
        arrival = max(self._arrivals.get((action, key), now), now)
        if arrival - now > (limit.burst - 1) * interval + _SLACK_SECONDS:
            return False
        self._arrivals[(action, key)] = arrival + interval
        return True
