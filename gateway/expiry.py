"""Token expiry for every connection and subscription, from one heap checked
by the shared one-second timer (no timer per connection).

An entry is (deadline, sequence, session, channel, expires_at); a refresh
pushes a new entry and the old one is recognised as stale when it comes up,
because the session's current expiry no longer matches it.
"""
from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from gateway import protocol

if TYPE_CHECKING:
    from gateway.session import Session


class Expiry:
    def __init__(self, close_delay: float):
        self.close_delay = close_delay
        self._heap: list[tuple[float, int, Session, str | None, int]] = []
        self._sequence = itertools.count()

    def watch(self, session: Session, expires_at: int, channel: str | None = None) -> None:
        """Close ``session`` (or end its ``channel`` subscription) unless it has
        refreshed by ``expires_at`` plus the close delay."""
        heapq.heappush(self._heap, (expires_at + self.close_delay, next(self._sequence), session, channel,
                                    expires_at))

    def check(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, session, channel, expires_at = heapq.heappop(heap)
            if channel is None:
                if session.expires_at == expires_at:
                    session.close(protocol.DISCONNECT_EXPIRED)
            elif session.sub_expiry and session.sub_expiry.get(channel) == expires_at:
                session.end_subscription(channel, *protocol.UNSUBSCRIBE_EXPIRED)
