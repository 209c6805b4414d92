"""What a transport is to the session, the hub and the heartbeat.

A transport moves bytes between one client and its session, and declares
what it is through this interface (Tornado's ``_WebSocketDelegate`` and
centrifuge's ``transport.go`` are the models):

* its :class:`WireFormat`: the encoding (a codec) and the framing of its
  messages: a WebSocket text or binary frame, a line of an HTTP stream, an
  SSE event;
* whether it is **unidirectional** (the client sends nothing after connect:
  its connect is a bare ConnectRequest, answered with a ``connect`` push);
* whether it **emulates** a bidirectional connection (HTTP streaming, SSE:
  the client's later commands arrive apart from the stream, through
  ``/emulation``, addressed by ``session_id`` and the node's name);
* its ``session_id``: the id of the session in the connect result, on
  emulation and unidirectional transports ("" on the others);
* whether the client **answers pings** (the heartbeat expects pongs only
  then);
* ``send(frame)``: queue framed bytes; never closes synchronously;
* ``disconnect(code, reason, flush)``: end the connection: a close frame
  with ``code`` and ``reason`` where the transport has close frames, or on a
  stream, what is queued (the session's disconnect message last) and then
  the end of the stream; with ``flush`` False (a slow client), without what
  is still queued. The code and words are the protocol's (the session maps
  the core's reason to them); encoding a disconnect message is the session's
  work, never the transport's.

Connections that share a :class:`WireFormat` get the very same bytes for a
publication: the hub encodes it once per codec and frames it once per wire
format.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from gateway.core.history import Published


class MessageCodec(Protocol):
    """What the hub asks of every protocol's codec: a publication rendered as
    a message, once per codec; a presence event (``join``, ``leave``) likewise,
    or None for a protocol that has no such message; and the server's ping,
    b"" for a protocol whose pings are not one fixed message."""

    binary: bool     # messages travel in binary frames (WebSocket)
    ping: bytes

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes: ...

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        """:meth:`pub_push` of a publication with extras (its publisher's
        ClientInfo, tags, binary data: see :class:`Published`); a protocol
        renders what it has a place for, and None when it cannot carry the
        data at all (the hub then closes such subscribers)."""
        ...

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None: ...


class WireFormat:
    """How one kind of connection's messages look on the wire: a codec (what
    the messages are) and a framing (how one message is wrapped for its
    transport: a WebSocket frame, an SSE event, a line)."""

    __slots__ = ("name", "codec", "frame", "ping_frame")

    def __init__(self, name: str, codec: MessageCodec, frame: Callable[[bytes], bytes]):
        self.name = name
        self.codec = codec
        self.frame = frame      # wraps one message for the wire
        self.ping_frame = frame(codec.ping) if codec.ping else b""

    def __repr__(self) -> str:
        return f"<WireFormat {self.name}>"


class Transport(Protocol):
    wire: WireFormat
    unidirectional: bool
    emulation: bool
    pongs: bool
    session_id: str

    def send(self, frame: bytes) -> None: ...

    def disconnect(self, code: int, reason: str, flush: bool) -> None: ...


def new_session_id() -> str:
    """The ``session`` of a unidirectional connect result (it only names the
    connection). An emulated stream's comes from :class:`SessionIds`."""
    return secrets.token_urlsafe(18)


class SessionIds:
    """The session ids of one node's emulated streams, which another node can
    check before it forwards a command to them: 16 random bytes (unguessable:
    whoever holds the id can send commands as that connection) and a tag, an
    HMAC of them under the node's own key, in base64url (32 characters).

    The key is random, made when the node starts, and known to the nodes of
    its cluster only (they ask for it over the control topic); a client
    cannot make an id that checks out. An id checks out for as long as the
    node that issued it runs: the session itself may have ended since.
    """

    RANDOM = 16
    TAG = 8

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)

    def new(self) -> str:
        raw = secrets.token_bytes(self.RANDOM)
        return base64.urlsafe_b64encode(raw + _tag(self.key, raw)).decode()

    def issued(self, session_id: str) -> bool:
        """Whether this node issued ``session_id``."""
        return issued_under(self.key, session_id)


def issued_under(key: bytes, session_id: str) -> bool:
    """Whether ``session_id`` was issued by the node whose key is ``key``."""
    size = SessionIds.RANDOM + SessionIds.TAG
    if len(session_id) != 4 * size // 3:
        return False
    try:
        raw = base64.urlsafe_b64decode(session_id)
    except (ValueError, binascii.Error):
        return False
    return len(raw) == size and hmac.compare_digest(_tag(key, raw[:SessionIds.RANDOM]), raw[SessionIds.RANDOM:])


def _tag(key: bytes, raw: bytes) -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()[:SessionIds.TAG]
