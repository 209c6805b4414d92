"""An in-process session host for fast tests of the session core: real
sessions, Hub, History, Heartbeat and Expiry, a fake clock, and a transport
that records what it is given instead of a socket. Nothing is started: no
NSQ, no timers, no port."""
from __future__ import annotations

import json
import time

from auth.tokens import TokenVerifier
from gateway.protocols.centrifugo.json_codec import JSON
from gateway.protocols.centrifugo.model import Disconnect
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.cluster.peers import incarnation_id
from gateway.cluster.presence import Presence
from gateway.config import Settings
from gateway.core.expiry import Expiry
from gateway.core.heartbeat import Heartbeat
from gateway.core.history import History, Retention
from gateway.core.host import SessionHost
from gateway.core.hub import Hub
from gateway.core.metrics import Metrics
from gateway.core.wire import WireFormat
from tests.stack import SECRET

WIRE_JSON = WireFormat("test-json", JSON, lambda message: message)
WIRE_PROTOBUF = WireFormat("test-protobuf", PROTOBUF, lambda message: message)


class FakeClock:
    """Monotonic, wall and nanosecond time that moves only when told."""

    def __init__(self, wall: float = 1_763_700_000.0):
        self.wall_time = wall
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall_time += seconds
        self.mono += seconds

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_time

    def ns(self) -> int:
        return int(self.wall_time * 1e9)


class FakeTransport:
    """Records every frame and the disconnect; frames are the message as is."""

    unidirectional = False
    emulation = False
    pongs = True
    session_id = ""

    def __init__(self, wire: WireFormat = WIRE_JSON) -> None:
        self.wire = wire
        self.sent: list[bytes] = []
        self.closed: Disconnect | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def disconnect(self, code: int, reason: str, flush: bool) -> None:
        self.closed = Disconnect(code, reason)

    def messages(self) -> list[dict]:
        """Everything sent so far, decoded, and forgotten."""
        out = [json.loads(line) for frame in self.sent for line in frame.split(b"\n") if line]
        self.sent.clear()
        return out


def make_host(clock: FakeClock | None = None, *, uid: str | None = None, **overrides) -> SessionHost:
    """A session host as a node builds it, with ``clock`` (a FakeClock) if
    given; ``uid``: its incarnation's (a new one's if not)."""
    options = dict(jwt_secret=SECRET, lookupd_http_address=["http://127.0.0.1:1"], node_name="unit",
                   public_channels="news,chat:*")
    options.update(overrides)
    settings = Settings(**options)
    timing = {} if clock is None else {"clock": clock.monotonic, "wall": clock.wall, "now_ns": clock.ns}
    heartbeat = Heartbeat(settings.ping_interval, settings.pong_timeout, settings.connect_timeout,
                          **({} if clock is None else {"clock": clock.monotonic}))
    verifier = TokenVerifier(secret=SECRET, **({} if clock is None else {"clock": clock.wall}))
    hub, metrics = Hub(), Metrics()
    # The cluster's presence table, as a node builds it (gateway/node.py).
    presence = Presence(uid=uid or incarnation_id(), name="unit", presence=settings.presence,
                        join_leave=settings.join_leave, max_clients=settings.presence_max_clients,
                        ttl=settings.presence_ttl, hub=hub, metrics=metrics,
                        clock=clock.monotonic if clock is not None else time.monotonic,
                        explicit=bool(settings.cable_rpc_url))
    return SessionHost(settings, metrics, hub=hub, history=History(Retention(settings.history_size, 300),
                                                                   margin_ns=10**9),
                       expiry=Expiry(settings.expired_close_delay), heartbeat=heartbeat, verifier=verifier,
                       name="unit", presence=presence, **timing)


# The old name, for tests written against a whole node.
make_node = make_host


def open_session(host: SessionHost, wire: WireFormat = WIRE_JSON):
    transport = FakeTransport(wire)
    return host.accept(CentrifugoSession(host, transport)), transport


def frame(*commands: dict) -> str:
    return "\n".join(json.dumps(c) for c in commands)


# --- the Action Cable protocol ---------------------------------------------------------

def unframe(data: bytes) -> list[bytes]:
    """The payloads of unmasked server WebSocket frames, in order."""
    out, pos = [], 0
    while pos < len(data):
        n = data[pos + 1] & 0x7F
        start = pos + 2
        if n == 126:
            n, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
        elif n == 127:
            n, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
        out.append(data[start:start + n])
        pos = start + n
    return out


class FakeCableTransport(FakeTransport):
    """A /cable connection: real WebSocket text frames, no pongs."""

    pongs = False

    def __init__(self) -> None:
        from gateway.protocols.cable.endpoints import CABLE_V1
        super().__init__(CABLE_V1)

    def raw(self) -> list[bytes]:
        """Every message sent so far, as bytes, and forgotten."""
        out = [m for frame in self.sent for m in unframe(frame)]
        self.sent.clear()
        return out

    def messages(self) -> list[dict]:
        return [json.loads(m) for m in self.raw()]


def open_cable(host: SessionHost, token: str | None = "", subprotocol: str = "actioncable-v1-json",
               sid: str = ""):
    """A /cable session that opened with ``token`` (and ``sid`` to restore)."""
    from gateway.protocols.cable.session import CableSession
    transport = FakeCableTransport()
    session = host.accept(CableSession(host, transport, subprotocol))
    session.start(token or "", sid)
    return session, transport
