"""Time for the fake: wall time for the HTTP server, virtual time for fast deterministic in-process tests.

Both give epoch seconds (lease `expires_at` and `created_at` are wall-clock values on Fly). `block` is how a
request waits for something else to happen (a `wait` call): on wall time it waits on the condition, which
releases the fake's lock; on virtual time it moves time forward instead, as nothing else runs meanwhile.
"""

from __future__ import annotations

import threading
import time

# 2026-01-01T00:00:00Z: virtual timestamps look real and are the same on every run.
VIRTUAL_EPOCH = 1_767_225_600.0


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def block(self, condition: threading.Condition, seconds: float) -> None:
        condition.wait(max(seconds, 0.0))


class VirtualClock:
    """Moves only when someone sleeps. Give the same instance to the client (`clock=clock.now,
    sleep=clock.sleep`) so backoff, rate limiting and the fake's latencies all share one timeline."""

    def __init__(self, start: float = VIRTUAL_EPOCH):
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)

    def block(self, condition: threading.Condition, seconds: float) -> None:
        self.sleep(seconds)
