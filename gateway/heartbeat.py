"""Server pings, pong checks and stale handshakes for every connection, from
one shared one-second timer (no timer per connection).

Connected sessions are spread over ``ping_interval`` buckets; each second one
bucket is pinged and the bucket pinged ``pong_timeout`` seconds earlier is
checked for pongs. Connections that have not sent ``connect`` within
``stale_after`` seconds are closed with 3502.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

from gateway import protocol
from gateway.session import CONNECTING

if TYPE_CHECKING:
    from gateway.session import Session


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
        self._handshakes: deque[tuple[float, Session]] = deque()
        self._tick = 0

    def expect_connect(self, session: Session) -> None:
        self._handshakes.append((self._clock() + self.stale_after, session))

    def add(self, session: Session) -> None:
        session.slot = random.randrange(self.ping_interval)
        self._buckets[session.slot].add(session)

    def remove(self, session: Session) -> None:
        if session.slot >= 0:
            self._buckets[session.slot].discard(session)
            session.slot = -1

    def tick(self) -> None:
        """Run once a second."""
        now = self._clock()
        handshakes = self._handshakes
        while handshakes and handshakes[0][0] <= now:
            session = handshakes.popleft()[1]
            if session.state is CONNECTING:
                session.close(protocol.DISCONNECT_STALE)

        self._tick += 1
        n = self.ping_interval
        silent = [s for s in self._buckets[(self._tick - self.pong_timeout) % n] if s.pong_due]
        for session in silent:
            session.close(protocol.DISCONNECT_NO_PONG)

        frames: dict[type, bytes] = {}
        for session in self._buckets[self._tick % n]:
            kind = session.kind
            frame = frames.get(kind)
            if frame is None:
                frame = frames[kind] = kind.frame(protocol.PING)
            session.ping(frame)
