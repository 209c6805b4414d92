"""The hub: which sessions listen on which channel, and fan-out.

A publication is encoded once per encoding (codec) and framed once per wire
format; every subscriber with that wire format then gets the same bytes.
That is what makes fan-out cheap: per subscriber the hub does one
comparison (subscribers of one channel nearly always share a wire format)
and one queue append.

Each subscription records the wire format its frames use: usually the
session's own, but a protocol may render one channel differently per
subscription (Action Cable echoes the client's identifier in every message).

A subscription may carry a tags filter (:mod:`gateway.core.tags`): it is
kept apart, per channel, so a channel without filtered subscribers is
delivered exactly as before; only a channel with some checks each filtered
subscriber against the publication's tags (the frames are still built once).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.core import vocabulary
from gateway.core.history import Published

if TYPE_CHECKING:
    from gateway.core.session import Session
    from gateway.core.tags import Predicate
    from gateway.core.wire import MessageCodec, WireFormat


_NONE = object()


class Hub:
    __slots__ = ("_channels", "_filters", "last_publication")

    def __init__(self) -> None:
        self._channels: dict[str, dict[Session, WireFormat]] = {}
        # channel -> {session: its tags filter}, only for filtered subscriptions.
        self._filters: dict[str, dict[Session, Predicate]] = {}
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
        if self._filters:
            self.set_filter(channel, session, None)

    def set_filter(self, channel: str, session: Session, predicate: Predicate | None) -> None:
        """``session``'s subscription to ``channel`` gets only publications whose
        tags ``predicate`` accepts (None: every publication)."""
        filters = self._filters.get(channel)
        if predicate is not None:
            if filters is None:
                filters = self._filters[channel] = {}
            filters[session] = predicate
        elif filters is not None:
            filters.pop(session, None)
            if not filters:
                del self._filters[channel]

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

    def publish(self, channel: str, data: bytes, offset: int | None, exclude: Session | None = None) -> int:
        """Deliver a publication (JSON ``data``, or :class:`Published` data with
        extras) with its ``offset`` or None to every subscriber of ``channel``
        but ``exclude`` whose filter takes it; returns how many got it."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        if exclude is not None and exclude in subscribers:
            subscribers = {s: w for s, w in subscribers.items() if s is not exclude}   # rare: a copy is fine
        if type(data) is not bytes or (self._filters and channel in self._filters):
            return self._publish_full(channel, subscribers, data, offset)
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
                        message = encoded[codec] = codec.pub_push(channel, data, offset)
                    cached = frames[wire] = wire.frame(message)
                frame = cached
            session.push(frame)
        self.last_publication = time.perf_counter()
        return len(subscribers)

    def _publish_full(self, channel: str, subscribers: dict[Session, WireFormat], data: bytes,
                      offset: int | None) -> int:
        """:meth:`publish` with extras or filters: each filtered subscriber's
        filter is asked; a codec that cannot carry the publication (a JSON
        client and bytes that are not JSON) closes its subscribers, as
        Centrifugo closes them, with "inappropriate protocol"."""
        full: Published | None = data if type(data) is Published else None
        tags = (full.tags or {}) if full is not None else {}
        filters = self._filters.get(channel)
        encoded: dict[MessageCodec, bytes | None] = {}
        frames: dict[WireFormat, bytes | None] = {}
        unfit: list[Session] = []
        count = 0
        wire: WireFormat | None = None
        frame: bytes | None = None
        for session, sub_wire in subscribers.items():
            if filters is not None:
                accepts = filters.get(session)
                if accepts is not None and not accepts(tags):
                    continue
            if sub_wire is not wire:
                wire = sub_wire
                if wire in frames:
                    frame = frames[wire]
                else:
                    codec = wire.codec
                    if codec in encoded:
                        message = encoded[codec]
                    else:
                        message = encoded[codec] = codec.pub_push_full(channel, full, offset) \
                            if full is not None else codec.pub_push(channel, data, offset)
                    frame = frames[wire] = wire.frame(message) if message is not None else None
            if frame is None:
                unfit.append(session)
                continue
            session.push(frame)
            count += 1
        for session in unfit:
            session.close(vocabulary.INAPPROPRIATE_PROTOCOL)
        self.last_publication = time.perf_counter()
        return count
