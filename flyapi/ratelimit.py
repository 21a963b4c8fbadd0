"""Token buckets per (action, app or Machine id) at Fly's published limits (reference section 11), so a fleet
operation slows down instead of collecting 429s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


# Fly's limits (DOCS machines/api/working-with-machines-api): per action and per Machine or app id, 1 req/s with
# a burst of 3; getting a Machine, 5 req/s with a burst of 10.
DEFAULT_RATE = Rate(per_second=1, burst=3)
FLY_RATES: Mapping[str, Rate] = {"get_machine": Rate(per_second=5, burst=10)}


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """Token buckets per (action, key); `acquire` sleeps until the call may go. Thread-safe: each caller
    reserves its token under the lock (the balance may go negative) and sleeps outside it, so concurrent
    callers queue up in order instead of waking together."""

    _PRUNE_ABOVE = 10_000  # buckets kept before idle (full) ones are forgotten

    def __init__(self, *, rates: Mapping[str, Rate] = FLY_RATES, default: Rate | None = DEFAULT_RATE,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        """`default` None leaves actions without an entry in `rates` unlimited."""
        self._rates = rates
        self._default = default
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def unlimited(cls) -> RateLimiter:
        return cls(rates={}, default=None)

    def acquire(self, action: str, key: str) -> float:
        """Takes a token for (action, key), sleeping first if none is left; returns the seconds slept."""
        rate = self._rates.get(action, self._default)
        if rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault((action, key), _Bucket(rate.burst, now))
            bucket.tokens = min(rate.burst, bucket.tokens + (now - bucket.updated_at) * rate.per_second) - 1
            bucket.updated_at = now
            delay = max(0.0, -bucket.tokens / rate.per_second)
            if len(self._buckets) > self._PRUNE_ABOVE:
                self._forget_full_buckets(now)
        if delay:
            self._sleep(delay)
        return delay

    def _forget_full_buckets(self, now: float) -> None:
        def full(action: str, bucket: _Bucket) -> bool:
            rate = self._rates.get(action, self._default)
            return bucket.tokens + (now - bucket.updated_at) * rate.per_second >= rate.burst

        self._buckets = {key: bucket for key, bucket in self._buckets.items() if not full(key[0], bucket)}
