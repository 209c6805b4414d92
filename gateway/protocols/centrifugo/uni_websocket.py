"""``/connection/uni_websocket``: a WebSocket for clients with no SDK, that
only receive (centrifugo-protocol.md §9.5).

The same door and the same connection as ``/connection/websocket``
(:mod:`gateway.transports.websocket`). The ConnectRequest (a JSON object:
``token``, and ``subs`` with the positions to recover from) comes in the
``cf_connect`` query parameter, or else as the first text message.
Everything is server-side: the personal channel and the token's
``channels``. The server sends unwrapped pushes, one per text frame:
``{"connect": {...}}`` first, then ``{"channel": ..., "pub": {...}}``, and
``{}`` pings with no pong expected. A disconnect is a
``{"disconnect": {...}}`` push and then the close frame with the same code.
Anything the client sends after its connect is ignored, within
``--client-command-rate``. JSON only: a client that offers another
subprotocol, or asks for Protobuf, is closed with 3506 saying so.
"""
from __future__ import annotations

import logging

from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import JSON_UNI
from gateway.protocols.centrifugo.model import Disconnect
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.core.session import CONNECTING
from gateway.core.wire import WireFormat
from gateway.transports.http import connect_request
from gateway.transports.websocket import Choice, Endpoint
from gateway.protocols.centrifugo.websocket import text_frame

log = logging.getLogger("pushgate.websocket")

UNI_WEBSOCKET = WireFormat("uni_websocket-json", JSON_UNI, text_frame)
JSON_ONLY = Disconnect(model.DISCONNECT_INAPPROPRIATE_PROTOCOL.code, "uni_websocket speaks JSON only")


def choose(offered: list[str], query: dict[str, list[str]]) -> Choice:
    if "centrifuge-json" in offered:
        return Choice(UNI_WEBSOCKET, "centrifuge-json")
    if offered:
        return Choice(UNI_WEBSOCKET, offered[0], JSON_ONLY)  # echoed only to be refused readably
    if "protobuf" in (query.get("format", [""])[0], query.get("cf_protocol", [""])[0]):
        return Choice(UNI_WEBSOCKET, None, JSON_ONLY)
    return Choice(UNI_WEBSOCKET, None)


class UniWebSocketSession(CentrifugoSession):
    """A unidirectional session whose first message may be its ConnectRequest;
    it reads nothing after that."""

    __slots__ = ()

    def count(self, data: str | bytes) -> int:
        return 1

    def queue(self, data: str | bytes, waiting: list) -> bool:
        return True  # behind a held connect: nothing a unidirectional client sends is a command

    def receive(self, data: str | bytes) -> None:
        if self.state is not CONNECTING or self.held is not None:
            return  # a unidirectional client has nothing to say: only its rate is watched
        request = connect_request(data) if isinstance(data, str) else None
        if request is None:
            self.host.metrics.bad_frames.inc()
            log.warning("uni_websocket: the first message is not a connect request (a JSON object)")
            self.close(model.DISCONNECT_BAD_REQUEST)
            return
        self.run([model.Command(1, "connect", request)])


def opened(session: UniWebSocketSession, headers: dict[str, str], query: dict[str, list[str]]) -> None:
    values = query.get("cf_connect")
    if not values or session.state is not CONNECTING:
        return  # the connect request comes as the first message
    request = connect_request(values[-1])
    if request is None:
        log.warning("uni_websocket: cf_connect is not a connect request (a JSON object)")
        session.close(model.DISCONNECT_BAD_REQUEST)
        return
    session.connect_unidirectional(request)


UNI_WEBSOCKET_ENDPOINT = Endpoint("/connection/uni_websocket", choose, UniWebSocketSession, pongs=False,
                                  unidirectional=True, opened=opened)
