"""Token expiry for every connection and subscription, from one heap checked
by the shared one-second timer (no timer per connection).

An entry is a list ``[deadline, sequence, session, channel]``; the session
keeps its own entries (one for the connection token, one per subscription
token) and cancels them when it refreshes or closes. Cancelling clears the
entry's session, so the heap never keeps a closed connection alive, and the
heap is rebuilt without cancelled entries once they outnumber the live
ones: its size stays proportional to the open connections, however many
come and go with long-lived tokens.
"""
from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.core.session import Session

Entry = list  # [deadline: float, sequence: int, session: Session | None, channel: str | None]
COMPACT_SLACK = 1024


class Expiry:
    def __init__(self, close_delay: float):
        self.close_delay = close_delay
        self._heap: list[Entry] = []
        self._sequence = itertools.count()
        self._cancelled = 0

    def watch(self, session: Session, expires_at: float, channel: str | None = None,
              delay: float | None = None) -> Entry:
        """Tell ``session`` its connection (or its ``channel`` subscription) has
        expired (:meth:`Session.expire`) at ``expires_at`` plus ``delay`` (the
        close delay unless given), unless the returned entry is cancelled first."""
        deadline = expires_at + (self.close_delay if delay is None else delay)
        entry: Entry = [deadline, next(self._sequence), session, channel]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: Entry | None) -> None:
        if entry is None or entry[2] is None:
            return
        entry[2] = None
        self._cancelled += 1
        if self._cancelled > len(self._heap) // 2 + COMPACT_SLACK:
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def check(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            session: Any = entry[2]
            if session is None:
                self._cancelled -= 1
                continue
            entry[2] = None
            session.expire(entry[3])

    def __len__(self) -> int:
        """Live entries."""
        return len(self._heap) - self._cancelled
