"""The WebSocket transport's Centrifugo endpoint: ``/connection/websocket``,
the Centrifugo protocol in JSON (text frames) or Protobuf (binary frames).

The encoding is chosen at the handshake, as Centrifugo does: the
``centrifuge-protobuf`` subprotocol (what every Protobuf SDK offers), or
``?format=protobuf`` / ``?cf_protocol=protobuf`` for tools; anything else is
JSON, with ``centrifuge-json`` echoed when offered. A client that offers
only subprotocols pushgate does not speak is still answered with one of
them, then closed at once with 3506 "inappropriate protocol" and a reason
that says what this endpoint speaks: the SDKs treat 3506 as final and show
the reason, where a handshake refused outright would make them retry
forever.

The upgrade and the frames are :mod:`gateway.transports.websocket`'s.
"""
from __future__ import annotations

from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import JSON
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.transports import wsproto
from gateway.core.wire import WireFormat
from gateway.transports.websocket import Choice, Endpoint


def text_frame(payload: bytes) -> bytes:
    return wsproto.frame(wsproto.TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    return wsproto.frame(wsproto.BINARY, payload)


WEBSOCKET_JSON = WireFormat("websocket-json", JSON, text_frame)
WEBSOCKET_PROTOBUF = WireFormat("websocket-protobuf", PROTOBUF, binary_frame)
UNSUPPORTED = model.Disconnect(model.DISCONNECT_INAPPROPRIATE_PROTOCOL.code,
                               "unsupported subprotocol: use centrifuge-json or centrifuge-protobuf")


def choose(offered: list[str], query: dict[str, list[str]]) -> Choice:
    if "centrifuge-protobuf" in offered:
        return Choice(WEBSOCKET_PROTOBUF, "centrifuge-protobuf")
    if "centrifuge-json" in offered:
        return Choice(WEBSOCKET_JSON, "centrifuge-json")
    if offered:
        return Choice(WEBSOCKET_JSON, offered[0], UNSUPPORTED)  # echoed only to be refused readably
    if "protobuf" in (query.get("format", [""])[0], query.get("cf_protocol", [""])[0]):
        return Choice(WEBSOCKET_PROTOBUF, None)
    return Choice(WEBSOCKET_JSON, None)


CENTRIFUGO = Endpoint("/connection/websocket", choose, CentrifugoSession)
