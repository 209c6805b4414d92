"""The hub: which sessions listen on which channel, and fan-out.

A publication is encoded once per channel and framed once per transport kind;
every subscriber then gets the same bytes. That is what makes fan-out cheap:
per subscriber the hub does one dict lookup and one queue append.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway import protocol

if TYPE_CHECKING:
    from gateway.session import Session


class Hub:
    __slots__ = ("_channels", "last_publication")

    def __init__(self) -> None:
        self._channels: dict[str, set[Session]] = {}
        # When the last fan-out finished (perf_counter); the write batcher waits
        # for a quiet moment after it before writing.
        self.last_publication = 0.0

    def subscribe(self, channel: str, session: Session) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is None:
            self._channels[channel] = {session}
        else:
            subscribers.add(session)

    def unsubscribe(self, channel: str, session: Session) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._channels[channel]

    def subscribers(self, channel: str) -> list[Session]:
        """A copy: callers may unsubscribe while they go through it."""
        return list(self._channels.get(channel, ()))

    def publish(self, channel: str, publication: bytes) -> int:
        """Deliver an encoded Publication to every subscriber of ``channel``;
        returns how many got it."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        payload = protocol.pub_push(channel, publication)
        kind = frame = None
        frames: dict[type, bytes] = {}
        for session in subscribers:
            if session.kind is not kind:  # usually one kind for all: one frame
                kind = session.kind
                frame = frames.get(kind)
                if frame is None:
                    frame = frames[kind] = kind.frame(payload)
            session.push(frame)
        self.last_publication = time.perf_counter()
        return len(subscribers)
