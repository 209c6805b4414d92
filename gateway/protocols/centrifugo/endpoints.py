"""Where the Centrifugo client protocol is served: its endpoints, one per
transport and path, each a wire format (codec + framing) and a session.

WebSocket (the door and the connection are gateway/transports/websocket.py):

* ``/connection/websocket``: JSON (text frames) or Protobuf (binary frames),
  chosen at the handshake as Centrifugo does: the ``centrifuge-protobuf``
  subprotocol (what every Protobuf SDK offers), or ``?format=protobuf`` /
  ``?cf_protocol=protobuf`` for tools; anything else is JSON, with
  ``centrifuge-json`` echoed when offered. A client that offers only
  subprotocols pushgate does not speak is still answered with one of them,
  then closed at once with 3506 and a reason that says what this endpoint
  speaks: the SDKs treat 3506 as final and show the reason, where a
  handshake refused outright would make them retry forever.
* ``/connection/uni_websocket``: for clients with no SDK, that only receive
  (centrifugo-protocol.md §9.5). The ConnectRequest (``token``, ``subs``
  with the positions to recover from) comes in ``cf_connect`` or as the
  first text message; pushes go out unwrapped, ``{}`` pings expect no pong.
  JSON only: another subprotocol or Protobuf is closed with 3506 saying so.

HTTP streams (gateway/transports/http.py), centrifuge-js's fallbacks, whose
later commands arrive through ``POST /emulation`` (:mod:`.emulation`):

* ``POST /connection/http_stream``: the body is the connect command (JSON,
  or varint-delimited Protobuf with ``Content-Type:
  application/octet-stream``); the response is one JSON message per line,
  or delimited Protobuf ``Reply`` messages.
* ``GET /connection/sse?cf_connect=<connect command>`` (or ``POST`` with the
  command as the body): ``text/event-stream``, a ``data:`` event per message.

Unidirectional streams: ``GET /connection/uni_sse?cf_connect=<ConnectRequest>``
(or ``POST``; a plain ``EventSource`` is enough) and ``POST
/connection/uni_http_stream`` with the ConnectRequest as the body
(newline-delimited JSON, ``curl -N`` is enough).
"""
from __future__ import annotations

import logging

import ujson

from gateway.core import vocabulary
from gateway.core.host import SessionHost
from gateway.core.session import CONNECTING, Session
from gateway.core.vocabulary import Ending, Reason
from gateway.core.wire import Transport, WireFormat
from gateway.protocols.centrifugo.json_codec import JSON, JSON_UNI
from gateway.protocols.centrifugo.model import Command
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.protocols.centrifugo import proxy
from gateway.transports.endpoint import Choice, Endpoint, HttpRefusal, Kind, Opened, Request
from gateway.transports.http import SSE_PREAMBLE, SSE_TYPE, as_is, line, sse_event
from gateway.transports.wsproto import binary_frame, text_frame

log = logging.getLogger("pushgate.session")

PROTOBUF_TYPE = "application/octet-stream"
NDJSON_TYPE = "application/x-ndjson"

# One wire format per (encoding, framing): the hub builds one frame per
# publication for each, shared by every connection that uses it.
WEBSOCKET_JSON = WireFormat("websocket-json", JSON, text_frame)
WEBSOCKET_PROTOBUF = WireFormat("websocket-protobuf", PROTOBUF, binary_frame)
UNI_WEBSOCKET = WireFormat("uni_websocket-json", JSON_UNI, text_frame)
HTTP_STREAM_JSON = WireFormat("http_stream-json", JSON, line)
HTTP_STREAM_PROTOBUF = WireFormat("http_stream-protobuf", PROTOBUF, as_is)
SSE_JSON = WireFormat("sse-json", JSON, sse_event)
UNI_HTTP_STREAM = WireFormat("uni_http_stream-json", JSON_UNI, line)
UNI_SSE = WireFormat("uni_sse-json", JSON_UNI, sse_event)

UNSUPPORTED = Ending(Reason.INAPPROPRIATE_PROTOCOL, "unsupported subprotocol: use centrifuge-json or centrifuge-protobuf")
JSON_ONLY = Ending(Reason.INAPPROPRIATE_PROTOCOL, "uni_websocket speaks JSON only")


def _asks_protobuf(request: Request) -> bool:
    return "protobuf" in (request.arg("format"), request.arg("cf_protocol"))


def connect_request(raw: str | bytes) -> dict | None:
    """A unidirectional ConnectRequest (a JSON object; empty or ``null``: no
    fields), or None when it is not one."""
    if not raw.strip():
        return {}
    try:
        request = ujson.loads(raw)
    except (ValueError, OverflowError):
        return None
    if request is None:
        return {}
    return request if type(request) is dict else None


def _centrifugo(host: SessionHost, transport: Transport) -> Session:
    return CentrifugoSession(host, transport)


# --- /connection/websocket ------------------------------------------------------------

def choose_websocket(request: Request) -> Choice:
    offered = request.offered
    if "centrifuge-protobuf" in offered:
        return Choice(WEBSOCKET_PROTOBUF, "centrifuge-protobuf")
    if "centrifuge-json" in offered:
        return Choice(WEBSOCKET_JSON, "centrifuge-json")
    if offered:
        return Choice(WEBSOCKET_JSON, offered[0], UNSUPPORTED)  # echoed only to be refused readably
    return Choice(WEBSOCKET_PROTOBUF if _asks_protobuf(request) else WEBSOCKET_JSON)


# --- /connection/uni_websocket ----------------------------------------------------------

def choose_uni_websocket(request: Request) -> Choice:
    if "centrifuge-json" in request.offered:
        return Choice(UNI_WEBSOCKET, "centrifuge-json")
    if request.offered:
        return Choice(UNI_WEBSOCKET, request.offered[0], JSON_ONLY)  # echoed only to be refused readably
    return Choice(UNI_WEBSOCKET, None, JSON_ONLY if _asks_protobuf(request) else None)


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
            self.close(vocabulary.BAD_REQUEST)
            return
        self.run([Command(1, "connect", request)])


def _uni_websocket(host: SessionHost, transport: Transport) -> Session:
    return UniWebSocketSession(host, transport)


def uni_websocket_opened(session: Session, request: Request) -> HttpRefusal | None:
    raw = request.arg("cf_connect")
    if not raw or session.state is not CONNECTING:
        return None  # the connect request comes as the first message
    connect = connect_request(raw)
    if connect is None:
        log.warning("uni_websocket: cf_connect is not a connect request (a JSON object)")
        session.close(vocabulary.BAD_REQUEST)
        return None
    assert isinstance(session, CentrifugoSession)
    session.connect_unidirectional(connect)
    return None


# --- the streams -----------------------------------------------------------------------

def _connect_command(request: Request) -> str | bytes:
    """An emulation stream's connect command: the body, or ``cf_connect`` (SSE)."""
    return request.body if request.method == "POST" else request.arg("cf_connect")


def refuse_connect_command(request: Request) -> str | None:
    if _connect_command(request).strip():
        return None
    return "the body must be the connect command" if request.method == "POST" \
        else "cf_connect: the connect command is missing"


def choose_http_stream(request: Request) -> Choice:
    if request.headers.get("content-type", "").split(";")[0].strip() == PROTOBUF_TYPE:
        return Choice(HTTP_STREAM_PROTOBUF, content_type=PROTOBUF_TYPE)
    return Choice(HTTP_STREAM_JSON, content_type=NDJSON_TYPE)


def choose_sse(request: Request) -> Choice:
    return Choice(SSE_JSON, content_type=SSE_TYPE, preamble=SSE_PREAMBLE)


def connect_opened(session: Session, request: Request) -> HttpRefusal | None:
    session.handle_frame(_connect_command(request))
    return None


def _unidirectional_request(request: Request) -> str | bytes:
    return request.body if request.method == "POST" else request.arg("cf_connect")


def refuse_unidirectional(request: Request) -> str | None:
    if connect_request(_unidirectional_request(request)) is not None:
        return None
    return "the connect request must be a JSON object" if request.method == "GET" \
        else "the body must be a connect request: a JSON object"


def unidirectional_opened(session: Session, request: Request) -> HttpRefusal | None:
    connect = connect_request(_unidirectional_request(request))
    assert isinstance(session, CentrifugoSession) and connect is not None  # checked by refuse_unidirectional
    session.connect_unidirectional(connect)
    return None


def remember_headers(session: Session, request: Request) -> None:
    """The request headers named in --proxy-headers, kept for the proxies
    (none unless named, as in Centrifugo). Nothing is kept without them."""
    settings = session.host.settings
    if settings.proxy_headers and proxy.any_proxy(settings) and isinstance(session, CentrifugoSession):
        names = proxy.proxies_of(session.host).headers
        headers = request.headers
        session.proxied = proxy.ProxyState({proxy.canonical(name): headers[name] for name in names if name in headers})


def _opened(then: Opened | None = None) -> Opened:
    """An endpoint's ``opened``, keeping the headers the proxies pass on first."""
    def opened(session: Session, request: Request) -> HttpRefusal | None:
        remember_headers(session, request)
        return then(session, request) if then is not None else None
    return opened


ENDPOINTS = [
    Endpoint("/connection/websocket", Kind.WEBSOCKET, choose_websocket, _centrifugo, opened=_opened()),
    Endpoint("/connection/uni_websocket", Kind.WEBSOCKET, choose_uni_websocket, _uni_websocket,
             opened=_opened(uni_websocket_opened), pongs=False, unidirectional=True),
    Endpoint("/connection/http_stream", Kind.STREAM, choose_http_stream, _centrifugo, methods=("POST",),
             refuse=refuse_connect_command, opened=_opened(connect_opened), emulation=True),
    Endpoint("/connection/sse", Kind.STREAM, choose_sse, _centrifugo, methods=("GET", "POST"),
             refuse=refuse_connect_command, opened=_opened(connect_opened), emulation=True),
    Endpoint("/connection/uni_sse", Kind.STREAM,
             lambda request: Choice(UNI_SSE, content_type=SSE_TYPE, preamble=SSE_PREAMBLE), _centrifugo,
             methods=("GET", "POST"), refuse=refuse_unidirectional, opened=_opened(unidirectional_opened),
             pongs=False, unidirectional=True),
    Endpoint("/connection/uni_http_stream", Kind.STREAM, lambda request: Choice(UNI_HTTP_STREAM,
                                                                                content_type=NDJSON_TYPE),
             _centrifugo, methods=("POST",), refuse=refuse_unidirectional, opened=_opened(unidirectional_opened),
             pongs=False, unidirectional=True),
]
