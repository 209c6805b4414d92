"""Server pings, pong checks and stale handshakes for every connection, from
one shared one-second timer (no timer per connection).

Connected sessions are spread over ``ping_interval`` buckets; each second one
bucket is pinged and the bucket pinged ``pong_timeout`` seconds earlier is
checked for pongs (only connections whose transport answers pings owe
one). Connections that have not sent ``connect`` within
``stale_after`` seconds are closed with 3502. Every structure here drops a
session as soon as it closes (:meth:`Heartbeat.remove`): nothing keeps a
closed connection alive until its deadline.
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Callable

from gateway.core import vocabulary

if TYPE_CHECKING:
    from gateway.core.session import Session


class Heartbeat:
    def __init__(self, ping_interval: int, pong_timeout: int, stale_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < pong_timeout < ping_interval:
            raise ValueError("pong_timeout must be between 0 and ping_interval")
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.stale_after = stale_after
        self._clock = clock
        self._buckets: list[set[Session]] = [set() for _ in range(ping_interval)]
        # Sessions waiting for their connect, in arrival order and so in deadline
        # order (one timeout for all): a dict is a FIFO with O(1) removal.
        self._handshakes: dict[Session, float] = {}
        self._tick = 0

    def expect_connect(self, session: Session) -> None:
        self._handshakes[session] = self._clock() + self.stale_after

    def add(self, session: Session) -> None:
        """``session`` has connected: ping it from now on."""
        self._handshakes.pop(session, None)
        session.slot = random.randrange(self.ping_interval)
        self._buckets[session.slot].add(session)

    def remove(self, session: Session) -> None:
        self._handshakes.pop(session, None)
        if session.slot >= 0:
            self._buckets[session.slot].discard(session)
            session.slot = -1

    def tick(self) -> None:
        """Run once a second."""
        now = self._clock()
        handshakes = self._handshakes
        stale = []
        for session, deadline in handshakes.items():
            if deadline > now:
                break
            stale.append(session)
        for session in stale:
            handshakes.pop(session, None)
            session.close(vocabulary.STALE)

        self._tick += 1
        n = self.ping_interval
        silent = [s for s in self._buckets[(self._tick - self.pong_timeout) % n] if s.pong_due]
        for session in silent:
            session.close(vocabulary.NO_PONG)

        for session in self._buckets[self._tick % n]:
            session.ping()

    def __len__(self) -> int:
        """Sessions tracked: waiting for connect, or connected."""
        return len(self._handshakes) + sum(len(b) for b in self._buckets)
