"""Server pings, pong checks and stale handshakes for every connection, from
one shared one-second timer (no timer per connection).

Connected sessions are spread over ``ping_interval`` buckets; each second one
bucket is pinged and the bucket pinged ``pong_timeout`` seconds earlier is
checked for pongs (only connections whose transport answers pings owe
one). Connections that have not sent ``connect`` within
``stale_after`` seconds are closed with 3502. Every structure here drops a
session as soon as it closes (:meth:`Heartbeat.remove`): nothing keeps a
closed connection alive until its deadline.

**This node's own lateness is not the client's.** A ping is queued at its
tick, but written when the node's write path gets to it, and a pong is read
when the loop gets to it. A node far behind (a broadcast to a million
connections on a crowded box: every worker's flush takes seconds) gave its
clients less than ``pong_timeout`` to answer, and closed a sixth of them for
"no pong" (bench/million.py). So each tick samples how far behind the node
is (``behind``: seconds); a bucket is judged only if the node was never more
than half the pong timeout behind since its pings were queued. Otherwise
its silent sessions are judged at their next ping, a ping interval later
(``deferred`` counts them), as a node does with its peers' silence while it
was paused itself (gateway/cluster/peers.py).
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
                 clock: Callable[[], float] = time.monotonic, behind: Callable[[], float] = lambda: 0.0):
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
        self.behind = behind
        # How far behind the node was at each of the last pong_timeout + 1
        # ticks: those since the bucket being judged was pinged.
        self._lateness = [0.0] * (pong_timeout + 1)
        self.deferred = 0   # silent sessions not judged because this node was late

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
        lateness = self._lateness
        lateness[self._tick % len(lateness)] = self.behind()
        n = self.ping_interval
        silent = [s for s in self._buckets[(self._tick - self.pong_timeout) % n] if s.pong_due]
        if max(lateness) > self.pong_timeout / 2:
            self.deferred += len(silent)   # their pings went out, or their pongs were read, late
        else:
            for session in silent:
                session.close(vocabulary.NO_PONG)

        for session in self._buckets[self._tick % n]:
            session.ping()

    def __len__(self) -> int:
        """Sessions tracked: waiting for connect, or connected."""
        return len(self._handshakes) + sum(len(b) for b in self._buckets)
