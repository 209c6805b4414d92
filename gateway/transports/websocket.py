"""WebSocket transport: ``/connection/websocket``, the Centrifugo protocol in
JSON (text frames) or Protobuf (binary frames).

The encoding is chosen at the handshake, as Centrifugo does: the
``centrifuge-protobuf`` subprotocol (what every Protobuf SDK offers), or
``?format=protobuf`` / ``?cf_protocol=protobuf`` for tools; anything else is
JSON, with ``centrifuge-json`` echoed when offered. A client that offers
only subprotocols pushgate does not speak is still answered with one of
them, then closed at once with 3506 "inappropriate protocol" and a reason
that says what this endpoint speaks: the SDKs treat 3506 as final and show
the reason, where a handshake refused outright would make them retry
forever.
"""
from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

import tornado.websocket
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from gateway.centrifugo import model
from gateway.centrifugo.json_codec import JSON
from gateway.centrifugo.model import Disconnect
from gateway.centrifugo.protobuf_codec import PROTOBUF
from gateway.centrifugo.session import CentrifugoSession
from gateway.transports.base import WireFormat
from gateway.transports.stream import StreamWriter

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.session import Session

log = logging.getLogger("pushgate.websocket")

# Largest client frame accepted (Centrifugo's default); Tornado closes a
# connection that sends more with 1009, which the SDKs treat as terminal.
MAX_CLIENT_FRAME = 65536


def _frame(opcode: int):
    first = 0x80 | opcode

    def frame(payload: bytes) -> bytes:
        """One unmasked, final WebSocket frame (server to client, RFC 6455)."""
        n = len(payload)
        if n < 126:
            header = bytes((first, n))
        elif n < 65536:
            header = struct.pack("!BBH", first, 126, n)
        else:
            header = struct.pack("!BBQ", first, 127, n)
        return header + payload
    return frame


text_frame = _frame(0x1)
binary_frame = _frame(0x2)

WEBSOCKET_JSON = WireFormat("websocket-json", JSON, text_frame)
WEBSOCKET_PROTOBUF = WireFormat("websocket-protobuf", PROTOBUF, binary_frame)
SUBPROTOCOLS = {"centrifuge-json": WEBSOCKET_JSON, "centrifuge-protobuf": WEBSOCKET_PROTOBUF}


class _Protocol13(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, but a text frame that is not UTF-8 is
    answered with close code 1007 (RFC 6455 section 8.1), not a silent abort
    that leaves the client guessing."""

    def _handle_message(self, opcode: int, data: bytes):
        if opcode == 0x1 and not self._frame_compressed and not self.client_terminated:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8 in a text frame")
                return None
            self._message_bytes_in += len(data)
            return self._run_callback(self.handler.on_message, text)
        return super()._handle_message(opcode, data)


class WebSocketTransport(tornado.websocket.WebSocketHandler):
    """Moves bytes between one WebSocket and its session (the Transport
    interface of gateway/transports/base.py).

    Frames are built once per wire format (the hub shares one frame between
    all subscribers) and written through a :class:`StreamWriter`.
    """

    unidirectional = False
    pongs = True

    def initialize(self, node: Node) -> None:
        self.node = node
        self.session: Session | None = None
        self._writer: StreamWriter | None = None
        self.wire = WEBSOCKET_JSON
        self._unsupported: str | None = None  # an offered subprotocol pushgate does not speak

    async def get(self, *args, **kwargs) -> None:
        # Refused before the upgrade: cheaper than a WebSocket that is closed at
        # once, and the SDKs retry a failed handshake with backoff, elsewhere.
        refusal = self.node.admit_handshake()
        if refusal is not None:
            self.set_status(503)
            self.set_header("Retry-After", "1")
            self.finish({"error": refusal})
            return
        if "protobuf" in (self.get_query_argument("format", ""), self.get_query_argument("cf_protocol", "")):
            self.wire = WEBSOCKET_PROTOBUF
        await super().get(*args, **kwargs)

    def get_websocket_protocol(self):
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        params = _WebSocketParams(max_message_size=self.max_message_size,
                                  compression_options=self.get_compression_options())
        return _Protocol13(self, False, params)

    def check_origin(self, origin: str) -> bool:
        return self.node.origin_allowed(origin, self.request.host)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # JSON SDKs offer none; the Protobuf ones offer centrifuge-protobuf.
        for name in ("centrifuge-protobuf", "centrifuge-json"):
            if name in subprotocols:
                self.wire = SUBPROTOCOLS[name]
                return name
        if subprotocols:
            self._unsupported = subprotocols[0]
            return subprotocols[0]  # only to say so in a close frame the client will read
        return None

    def get_compression_options(self) -> None:
        # permessage-deflate costs ~157 KB per connection in Tornado: keep it off.
        return None

    def open(self) -> None:
        self.set_nodelay(True)
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        self.node.pending.discard(stream)  # a session now, counted against --max-connections
        self._writer = StreamWriter(stream, self.node.batcher, self.node.settings.max_queue_bytes,
                                    self._overflow)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        self.session = self.node.host.accept(self.new_session())
        if self._unsupported is not None:
            log.warning("WebSocket subprotocol %r refused: /connection/websocket speaks centrifuge-json "
                        "and centrifuge-protobuf", self._unsupported)
            self.session.close(model.Disconnect(model.DISCONNECT_INAPPROPRIATE_PROTOCOL.code,
                                                "unsupported subprotocol: use centrifuge-json or centrifuge-protobuf"))

    def new_session(self) -> Session:
        """The protocol this endpoint speaks (the Action Cable endpoint subclasses it)."""
        return CentrifugoSession(self.node.host, self)

    def close_frame(self, disconnect: Disconnect) -> tuple[int, str]:
        """The WebSocket close code and reason that end a connection with ``disconnect``."""
        return disconnect.code, disconnect.reason

    def on_message(self, message: str | bytes) -> None:
        session = self.session
        if session is None:
            return
        if isinstance(message, bytes) and not self.wire.codec.binary:
            log.warning("client %s: binary frame on a JSON connection", session.client_id or "-")
            session.close(model.DISCONNECT_INAPPROPRIATE_PROTOCOL)
        else:
            session.handle_frame(message)

    def on_close(self) -> None:
        if self.session is not None:
            self.session.transport_closed()

    # --- the transport interface used by Session and Hub ---------------------

    def send(self, frame: bytes) -> None:
        """Queue framed bytes (replaced by the writer's own ``send`` once open)."""
        self._writer.send(frame)  # type: ignore[union-attr]

    def disconnect(self, disconnect: Disconnect) -> None:
        writer = self._writer
        if writer is not None:
            if disconnect.code == model.DISCONNECT_SLOW.code:
                writer.unbound()
            else:
                writer.flush_pending()
                writer.unbound()
        if self.ws_connection is not None:
            self.close(*self.close_frame(disconnect))

    def _overflow(self, disconnect: Disconnect) -> None:
        log.warning("client %s: send queue over %d bytes, disconnecting as slow",
                    self.session.client_id if self.session else "-", self.node.settings.max_queue_bytes)
        if self.session is not None:
            self.session.close(disconnect)
