"""``/connection/uni_websocket``: a WebSocket for clients with no SDK, that
only receive (centrifugo-protocol.md §9.5).

The ConnectRequest (a JSON object: ``token``, and ``subs`` with the positions
to recover from) comes in the ``cf_connect`` query parameter, or else as the
first text message. Everything is server-side: the personal channel and the
token's ``channels``. The server sends unwrapped pushes, one per text frame:
``{"connect": {...}}`` first, then ``{"channel": ..., "pub": {...}}``, and
``{}`` pings with no pong expected. A disconnect is a
``{"disconnect": {...}}`` push and then the close frame with the same code.
Anything the client sends after its connect is ignored (but counted against
``--client-command-rate``). JSON only.
"""
from __future__ import annotations

import logging

from gateway.centrifugo import model
from gateway.centrifugo.json_codec import JSON_UNI
from gateway.centrifugo.model import Disconnect
from gateway.session import CONNECTING
from gateway.transports.base import WireFormat
from gateway.transports.http import PathOnlyLogs, connect_request, new_session_id
from gateway.transports.websocket import WebSocketTransport, text_frame

log = logging.getLogger("pushgate.websocket")

UNI_WEBSOCKET = WireFormat("uni_websocket-json", JSON_UNI, text_frame)


class UniWebSocketTransport(PathOnlyLogs, WebSocketTransport):
    unidirectional = True
    emulation = False
    pongs = False

    def initialize(self, node) -> None:
        super().initialize(node)
        self.wire = UNI_WEBSOCKET
        self.session_id = new_session_id()
        self._request: dict | None = None

    async def get(self, *args, **kwargs) -> None:
        raw = self.get_query_argument("cf_connect", "", strip=False)
        if raw:
            self._request = connect_request(raw)
            if self._request is None:
                self.set_status(400)
                self.finish({"error": "cf_connect: the connect request must be a JSON object"})
                return
        await super().get(*args, **kwargs)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        if "centrifuge-json" in subprotocols:
            return "centrifuge-json"
        if subprotocols:
            self._unsupported = subprotocols[0]
            return subprotocols[0]  # only to say so in a close frame the client will read
        return None

    def open(self) -> None:
        self.wire = UNI_WEBSOCKET
        unsupported = self._unsupported
        self._unsupported = None
        super().open()
        session = self.session
        if unsupported is not None or "protobuf" in (self.get_query_argument("format", ""),
                                                     self.get_query_argument("cf_protocol", "")):
            log.warning("uni_websocket: %s refused: it speaks JSON only", unsupported or "Protobuf")
            session.close(Disconnect(model.DISCONNECT_INAPPROPRIATE_PROTOCOL.code,
                                     "uni_websocket speaks JSON only"))
            return
        if self._request is not None:
            session.connect_unidirectional(self._request)

    def on_message(self, message: str | bytes) -> None:
        session = self.session
        if session is None:
            return
        if session.state is not CONNECTING or self._request is not None:
            session._spend(1)  # a unidirectional client has nothing to say: only its rate is watched
            return
        request = connect_request(message) if isinstance(message, str) else None
        if request is None:
            log.warning("uni_websocket: the first message is not a connect request (a JSON object)")
            session.close(model.DISCONNECT_BAD_REQUEST)
            return
        self._request = request
        session.connect_unidirectional(request)

    def disconnect(self, disconnect: Disconnect) -> None:
        # The push first, as Centrifugo sends it: a client reading only messages learns why.
        writer = self._writer
        if writer is not None and disconnect.code != model.DISCONNECT_SLOW.code:
            writer.send(self.wire.frame(self.wire.codec.disconnect(disconnect)))
        super().disconnect(disconnect)
