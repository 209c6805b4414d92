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


class KeyedBuckets:
    """A :class:`TokenBucket` per key (``rate`` a second, ``burst`` at once),
    for at most ``size`` keys: when more come, the one used least recently is
    forgotten (as if its bucket were full again). Memory is bounded by
    ``size`` whatever the keys."""

    __slots__ = ("rate", "burst", "size", "_buckets", "_clock")

    def __init__(self, rate: float, burst: int, size: int = 16384, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.size = size
        self._buckets: dict[str, tuple[float, float]] = {}   # key -> (tokens, when), least recent first
        self._clock = clock

    def take(self, key: str, count: float = 1) -> bool:
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        tokens = float(self.burst) if bucket is None else min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        allowed = tokens >= count
        if allowed:
            tokens -= count
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.size:
            del self._buckets[next(iter(self._buckets))]
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


def connection_capacity(configured: int, pending: int = 0) -> int:
    """The configured cap, or what the open-file limit allows: less room for
    the ``pending`` connections that are not sessions yet, and for NSQ, logs
    and the listening socket."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - 256 - pending) if soft != resource.RLIM_INFINITY else 1_000_000
