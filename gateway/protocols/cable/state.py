"""What the Action Cable sessions of one node share (one per session host).

* **Wire formats per identifier.** The hub renders a publication once per
  codec and frames it once per wire format; Action Cable messages echo the
  subscription's identifier, so each identifier gets its own codec and wire
  format, and every subscription with that identifier holds the same one.
  Identifiers are strings the client chooses, so the registry counts
  references and forgets a wire format with its last subscription: it never
  holds more entries than there are subscriptions.
* **Restorable sessions** (``actioncable-v1-ext-json``): the subscriptions
  of a connection that dropped, kept a while under its session id so the
  client can come back to them on this node, within a memory budget.
* **The ping frame**, the same for every connection of one framing (a
  WebSocket text frame, an SSE event) within a second.

Nothing here knows a transport: each wire format takes its framing from the
connection's own (:attr:`gateway.core.session.Session.wire`).
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Callable, NamedTuple

from gateway.protocols.cable import protocol
from gateway.protocols.cable.protocol import CompositeCodec, IdentifierCodec
from gateway.protocols.cable.streams import CableStreams
from gateway.core.wire import WireFormat

if TYPE_CHECKING:
    from gateway.core.host import SessionHost

RESTORE_BUDGET = 8 << 20   # bytes for every restorable session together
RESTORE_OVERHEAD = 300     # per kept session, beyond its identifiers
IDENTIFIER_OVERHEAD = 80   # per identifier kept, beyond its characters


def _framed(messages: bytes) -> bytes:
    return messages  # a composite codec frames each of its messages itself


class CableWire(WireFormat):
    """A wire format for the subscribers of one identifier (or, for a connection
    that reads one channel under several identifiers, of all of them)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple, codec: IdentifierCodec | CompositeCodec, frame: Callable[[bytes], bytes]):
        super().__init__("cable-ext" if key[0] else "cable", codec, frame)
        self.key = key


class WireRegistry:
    def __init__(self, now_ns: Callable[[], int]):
        self._now_ns = now_ns
        self._wires: dict[tuple, list] = {}   # (ext, identifiers, framing) -> [CableWire, references]

    def acquire(self, ext: bool, identifiers: tuple[str, ...], channel: str,
                frame: Callable[[bytes], bytes]) -> CableWire:
        """The wire format of ``identifiers`` (that name ``channel``) on
        connections with ``frame`` as their framing."""
        key = (ext, identifiers, frame)
        entry = self._wires.get(key)
        if entry is None:
            if len(identifiers) == 1:
                wire = CableWire(key, IdentifierCodec(identifiers[0], channel, ext, self._now_ns), frame)
            else:
                codecs = tuple(self.codec(ext, i, channel) for i in identifiers)
                wire = CableWire(key, CompositeCodec(codecs, frame), _framed)
            entry = self._wires[key] = [wire, 0]
        entry[1] += 1
        return entry[0]

    def release(self, wire: CableWire) -> None:
        entry = self._wires.get(wire.key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._wires[wire.key]

    def codec(self, ext: bool, identifier: str, channel: str) -> IdentifierCodec:
        """The codec of one identifier: shared when a subscription holds it, else
        a new one (for a history answer, or a composite)."""
        entry = self._wires.get((ext, (identifier,)))
        if entry is not None:
            return entry[0].codec
        return IdentifierCodec(identifier, channel, ext, self._now_ns)

    def __len__(self) -> int:
        return len(self._wires)


class Kept(NamedTuple):
    deadline: float
    user: str
    identifiers: tuple[str, ...]
    cost: int


class RestoreStore:
    """Subscriptions of dropped ``actioncable-v1-ext-json`` connections by
    session id, each for ``ttl`` seconds and taken at most once; the oldest go
    first when they would cost more than ``budget`` bytes."""

    def __init__(self, ttl: float, clock: Callable[[], float], budget: int = RESTORE_BUDGET):
        self.ttl = ttl
        self.budget = budget
        self.cost = 0
        self._clock = clock
        self._kept: dict[str, Kept] = {}   # insertion order is deadline order

    def keep(self, sid: str, user: str, identifiers: tuple[str, ...]) -> None:
        cost = RESTORE_OVERHEAD + len(sid) + len(user) + sum(len(i) + IDENTIFIER_OVERHEAD for i in identifiers)
        if cost > self.budget:
            return
        self._expire()
        while self._kept and self.cost + cost > self.budget:
            self._drop(next(iter(self._kept)))
        self._kept[sid] = Kept(self._clock() + self.ttl, user, identifiers, cost)
        self.cost += cost

    def take(self, sid: str) -> Kept | None:
        self._expire()
        kept = self._kept.get(sid)
        if kept is not None:
            self._drop(sid)
        return kept

    def _expire(self) -> None:
        now = self._clock()
        while self._kept:
            sid, kept = next(iter(self._kept.items()))
            if kept.deadline > now:
                break
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        self.cost -= self._kept.pop(sid).cost

    def __len__(self) -> int:
        return len(self._kept)


class CableState:
    """Everything the Action Cable sessions of one host share; built by
    ``host.shared("cable", CableState)``."""

    def __init__(self, host: SessionHost):
        settings = host.settings
        self.streams = CableStreams(settings.turbo_streams_secret, settings.cable_channel_prefix)
        self.wires = WireRegistry(host.now_ns)
        self.restorable = RestoreStore(settings.history_ttl, host.clock)
        self._wall = host.wall
        self.whispers_in_flight = 0   # whispers handed to nsqd and not answered yet (bounded: WHISPERS_IN_FLIGHT)
        self._pings: dict[Callable[[bytes], bytes], tuple[int, bytes]] = {}

    def ping_frame(self, frame: Callable[[bytes], bytes]) -> bytes:
        """``{"type":"ping","message":<unix seconds>}`` with ``frame``, built once a second."""
        second = int(self._wall())
        ping = self._pings.get(frame)
        if ping is None or ping[0] != second:
            ping = self._pings[frame] = (second, frame(protocol.ping(second)))
        return ping[1]

    @staticmethod
    def new_sid() -> str:
        return secrets.token_urlsafe(16)
