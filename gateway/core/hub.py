"""The hub: which sessions listen on which channel, and fan-out.

A publication is encoded once per encoding (codec) and framed once per wire
format; every subscriber with that wire format then gets the same bytes.
That is what makes fan-out cheap: per subscriber the hub does one
comparison (subscribers of one channel nearly always share a wire format)
and one queue append.

Each subscription records the wire format its frames use: usually the
session's own, but a protocol may render one channel differently per
subscription (Action Cable echoes the client's identifier in every message).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.core.session import Session
    from gateway.core.wire import MessageCodec, WireFormat


_NONE = object()


class Hub:
    __slots__ = ("_channels", "last_publication")

    def __init__(self) -> None:
        self._channels: dict[str, dict[Session, WireFormat]] = {}
        # When the last fan-out finished (perf_counter); the write batcher waits
        # for a quiet moment after it before writing.
        self.last_publication = 0.0

    def subscribe(self, channel: str, session: Session, wire: WireFormat) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is None:
            self._channels[channel] = {session: wire}
        else:
            subscribers[session] = wire

    def unsubscribe(self, channel: str, session: Session) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.pop(session, None)
            if not subscribers:
                del self._channels[channel]

    def wire_of(self, channel: str, session: Session) -> WireFormat | None:
        """The wire format ``session``'s subscription to ``channel`` renders with."""
        subscribers = self._channels.get(channel)
        return subscribers.get(session) if subscribers is not None else None

    def subscribers(self, channel: str) -> list[Session]:
        """A copy: callers may unsubscribe while they go through it."""
        return list(self._channels.get(channel, ()))

    def count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def channels(self) -> int:
        return len(self._channels)

    def subscriptions(self) -> int:
        """Subscriptions in all, every channel's subscribers together."""
        return sum(map(len, self._channels.values()))

    def counts(self) -> dict[str, int]:
        """Subscribers per channel (for the server API's ``channels``)."""
        return {channel: len(subscribers) for channel, subscribers in self._channels.items()}

    def push(self, channel: str, kind: str, body: dict) -> int:
        """An event push other than a publication (``join``, ``leave``) to every
        subscriber of ``channel``: built once per codec, framed once per wire
        format. Subscribers whose protocol has no such message are skipped. Returns how many got it."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        frames: dict = {}
        encoded: dict = {}
        count = 0
        for session, wire in list(subscribers.items()):
            frame = frames.get(wire, _NONE)
            if frame is _NONE:
                codec = wire.codec
                message = encoded.get(codec, _NONE)
                if message is _NONE:
                    message = encoded[codec] = codec.event_push(channel, kind, body)
                frame = frames[wire] = wire.frame(message) if message is not None else None
            if frame is not None:
                session.push(frame)
                count += 1
        return count

    def publish(self, channel: str, data: bytes, offset: int | None, info: dict | None = None,
                exclude: Session | None = None) -> int:
        """Deliver a publication (JSON ``data``, its ``offset`` or None, and its
        publisher's ``info`` when a client published it) to every subscriber of
        ``channel`` but ``exclude``; returns how many got it."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        if exclude is not None and exclude in subscribers:
            subscribers = {s: w for s, w in subscribers.items() if s is not exclude}   # rare: a copy is fine
        encoded: dict[MessageCodec, bytes] = {}
        frames: dict[WireFormat, bytes] = {}
        wire: WireFormat | None = None
        frame = b""
        for session, sub_wire in subscribers.items():
            if sub_wire is not wire:
                wire = sub_wire
                cached = frames.get(wire)
                if cached is None:
                    codec = wire.codec
                    message = encoded.get(codec)
                    if message is None:
                        message = encoded[codec] = codec.pub_push(channel, data, offset) if info is None \
                            else codec.pub_push_info(channel, data, offset, info)
                    cached = frames[wire] = wire.frame(message)
                frame = cached
            session.push(frame)
        self.last_publication = time.perf_counter()
        return len(subscribers)
