"""Admission limits shared by all connections of a node (pure)."""
from __future__ import annotations

import resource
import time
from typing import Callable


class TokenBucket:
    """``rate`` events a second on average, ``burst`` at once."""

    __slots__ = ("rate", "burst", "_tokens", "_at", "_clock")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def connection_capacity(configured: int, pending: int = 0) -> int:
    """The configured cap, or what the open-file limit allows: less room for
    the ``pending`` connections that are not sessions yet, and for NSQ, logs
    and the listening socket."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - 256 - pending) if soft != resource.RLIM_INFINITY else 1_000_000
