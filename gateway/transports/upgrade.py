"""WebSocket endpoints on a lean upgrade path.

Tornado parses the HTTP request head; for a WebSocket endpoint the request
goes no further into Tornado. :class:`Upgrades` sits in front of the
Tornado application as the server's connection delegate: when the head is a
WebSocket upgrade for one of its endpoints it checks it, answers ``101``
itself, takes the stream (``HTTPConnection.detach()``, Tornado's hook for
exactly this) and hands it to a :class:`WebSocketConnection`; every other
request goes to the application as before. This skips Tornado's
RequestHandler and WebSocketHandler machinery (routing, handler set-up, a
coroutine per frame), which was most of a connect's cost
(docs/benchmarks.md).

:class:`WebSocketConnection` is the Transport (gateway/transports/base.py):
frames are parsed by :mod:`gateway.transports.wsproto`, written by the
shared write path (:class:`~gateway.transports.stream.StreamWriter`), and a
connection that closes waits for the client's close frame only until the
node's one-second timer says it has waited long enough (no timer per
connection).
"""
from __future__ import annotations

import logging
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Callable, NamedTuple

from tornado.httputil import (HTTPConnection, HTTPHeaders, HTTPMessageDelegate, HTTPServerConnectionDelegate,
                              RequestStartLine, ResponseStartLine)
from tornado.iostream import IOStream, StreamClosedError
from tornado.log import access_log

from gateway.centrifugo import model
from gateway.centrifugo.model import Disconnect
from gateway.server import client_address
from gateway.transports import wsproto
from gateway.transports.base import WireFormat
from gateway.transports.stream import StreamWriter

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.session import Session

log = logging.getLogger("pushgate.websocket")

# Largest client message accepted (Centrifugo's default); past it, close 1009.
MAX_CLIENT_FRAME = 65536
CLOSE_WAIT = 5.0  # seconds a closing connection waits for the client's close frame
ALLOWABLE_ORIGIN = re.compile(r"^https?://[^/\s]+$")


class Choice(NamedTuple):
    """What an endpoint makes of a client's offer: the wire format, the
    subprotocol to echo (or None), and a refusal to send as the first close
    (an offered subprotocol it does not speak), or None."""

    wire: WireFormat
    subprotocol: str | None
    refusal: Disconnect | None = None


class Endpoint:
    """A WebSocket endpoint: its path, how a connection there chooses its wire
    format from the offered subprotocols and the query, and its session.

    Optionally, ``unacceptable(offered)`` gives the reason to refuse an offer
    with HTTP 400 before the upgrade (when accepting it could only end in a
    handshake the client fails itself), and ``opened(session, headers, query)``
    hands the session what it needs of the request once the connection is
    open (a protocol that authenticates with it, as Action Cable does)."""

    def __init__(self, path: str, choose: Callable[[list[str], dict[str, list[str]]], Choice],
                 session: Callable[..., Session], *, pongs: bool = True, unidirectional: bool = False,
                 unacceptable: Callable[[list[str]], str | None] | None = None,
                 opened: Callable[[Session, HTTPHeaders, dict[str, list[str]]], None] | None = None):
        self.path = path
        self.choose = choose
        self.session = session
        self.pongs = pongs
        self.unidirectional = unidirectional
        self.unacceptable = unacceptable
        self.opened = opened


class Upgrades(HTTPServerConnectionDelegate):
    """The server's connection delegate: WebSocket endpoints here, the rest to
    the Tornado ``application``."""

    def __init__(self, node: Node, application: HTTPServerConnectionDelegate, endpoints: list[Endpoint]):
        self.node = node
        self.application = application
        self.endpoints = {e.path: e for e in endpoints}
        self.closing: dict[WebSocketConnection, float] = {}  # connections waiting for a close frame

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> HTTPMessageDelegate:
        return _Request(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)

    def sweep(self, now: float) -> None:
        """Close connections whose client never answered our close frame (run
        from the node's one-second timer)."""
        late = [c for c, deadline in self.closing.items() if deadline <= now]
        for connection in late:
            self.closing.pop(connection, None)
            connection.stream.close()


class _Request(HTTPMessageDelegate):
    __slots__ = ("upgrades", "server_conn", "conn", "delegate")

    def __init__(self, upgrades: Upgrades, server_conn: object, conn: HTTPConnection):
        self.upgrades = upgrades
        self.server_conn = server_conn
        self.conn = conn
        self.delegate: HTTPMessageDelegate | None = None

    def headers_received(self, start_line, headers: HTTPHeaders):
        path, _, query = start_line.path.partition("?")
        endpoint = self.upgrades.endpoints.get(path)
        if endpoint is not None:
            _Handshake(self.upgrades, endpoint, self.conn, start_line, headers, query).run()
            return None
        self.delegate = self.upgrades.application.start_request(self.server_conn, self.conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes):
        return self.delegate.data_received(chunk) if self.delegate is not None else None

    def finish(self) -> None:
        if self.delegate is not None:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()


class _Handshake:
    """RFC 6455 §4.2, the server's part, with pushgate's door in front of it."""

    def __init__(self, upgrades: Upgrades, endpoint: Endpoint, conn: HTTPConnection, start_line: RequestStartLine,
                 headers: HTTPHeaders, query: str):
        self.upgrades = upgrades
        self.node = upgrades.node
        self.endpoint = endpoint
        self.conn = conn
        self.start_line = start_line
        self.headers = headers
        self.query = query
        self.started = time.monotonic()
        context = getattr(conn, "context", None)
        self.peer = client_address(getattr(context, "remote_ip", "") or "", headers, self.node.trusted_networks)

    def run(self) -> None:
        headers = self.headers
        if self.start_line.method != "GET":
            return self.refuse(405, "a WebSocket endpoint: GET with Upgrade: websocket", logging.WARNING,
                               {"Allow": "GET"})
        if headers.get("Upgrade", "").lower() != "websocket" or \
                "upgrade" not in headers.get("Connection", "").lower():
            return self.refuse(400, 'Can "Upgrade" only to "WebSocket"', logging.WARNING)
        if headers.get("Sec-WebSocket-Version") != "13":
            return self.refuse(426, "WebSocket version 13 only", logging.WARNING, {"Sec-WebSocket-Version": "13"})
        key = headers.get("Sec-WebSocket-Key", "")
        if not wsproto.valid_key(key):
            return self.refuse(400, "missing or invalid Sec-WebSocket-Key", logging.WARNING)
        origin = headers.get("Origin", "")
        host = headers.get("Host", "")
        if not self.node.origin_allowed(origin, host):
            # Say what would allow it: the first thing a Vite-on-5173 user hits.
            log.warning("refused a browser connection from origin %r (the gateway's host is %r): to allow it, "
                        "add it to --allowed-origins (PUSHGATE_ALLOWED_ORIGINS), e.g. --allowed-origins=%s",
                        origin[:200], host[:200],
                        origin if ALLOWABLE_ORIGIN.match(origin) else "https://app.example.com")
            return self.refuse(403, "origin not allowed", logging.WARNING)
        offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if self.endpoint.unacceptable is not None:
            reason = self.endpoint.unacceptable(offered)
            if reason is not None:
                return self.refuse(400, reason, logging.WARNING)
        # Refused before the upgrade: cheaper than a WebSocket closed at once,
        # and the SDKs retry a failed handshake with backoff.
        refusal = self.node.admit_handshake()
        if refusal is not None:
            return self.refuse(503, refusal, logging.WARNING, {"Retry-After": "1"})
        query = urllib.parse.parse_qs(self.query) if self.query else {}
        choice = self.endpoint.choose(offered, query)
        response = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                    b"Sec-WebSocket-Accept: " + wsproto.accept_key(key).encode()]
        if choice.subprotocol:
            response.append(b"Sec-WebSocket-Protocol: " + choice.subprotocol.encode())
        stream = self.conn.detach()
        stream.set_nodelay(True)
        stream.write(b"\r\n".join(response) + b"\r\n\r\n")
        self.log(101, logging.DEBUG)
        WebSocketConnection(self.upgrades, self.endpoint, stream, choice, headers, query)

    def refuse(self, status: int, reason: str, level: int, extra: dict | None = None) -> None:
        body = ('{"error": "%s"}' % reason.replace('"', "'")).encode()
        headers = HTTPHeaders({"Content-Type": "application/json", "Content-Length": str(len(body))})
        for name, value in (extra or {}).items():
            headers[name] = value
        self.conn.write_headers(ResponseStartLine("HTTP/1.1", status, _REASONS.get(status, "Error")), headers, body)
        self.conn.finish()
        self.log(status, level)

    def log(self, status: int, level: int) -> None:
        # The access log's line, with the path only: tokens travel in query strings.
        if access_log.isEnabledFor(level):
            access_log.log(level, "%d %s %s (%s) %.2fms", status, self.start_line.method, self.endpoint.path,
                           self.peer, 1000.0 * (time.monotonic() - self.started))


_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 426: "Upgrade Required",
            503: "Service Unavailable"}


class WebSocketConnection:
    """One WebSocket: the Transport its session sees."""

    __slots__ = ("upgrades", "stream", "wire", "pongs", "unidirectional", "session", "send", "_writer",
                 "_parser", "_closing", "__weakref__")

    def __init__(self, upgrades: Upgrades, endpoint: Endpoint, stream: IOStream, choice: Choice,
                 headers: HTTPHeaders | None = None, query: dict[str, list[str]] | None = None):
        node = upgrades.node
        self.upgrades = upgrades
        self.stream = stream
        self.wire = choice.wire
        self.pongs = endpoint.pongs
        self.unidirectional = endpoint.unidirectional
        self._writer = StreamWriter(stream, node.batcher, node.settings.max_queue_bytes, self._overflow)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        self._parser = wsproto.FrameParser(MAX_CLIENT_FRAME)
        self._closing = False
        node.pending.discard(stream)  # a session now, counted against --max-connections
        stream.set_close_callback(self._stream_closed)
        self.session = node.host.accept(endpoint.session(node.host, self))
        if choice.refusal is not None:
            self.session.close(choice.refusal)
        elif endpoint.opened is not None:
            endpoint.opened(self.session, headers or HTTPHeaders(), query or {})
        self._read()

    # --- the Transport interface ------------------------------------------------------

    def disconnect(self, disconnect: Disconnect) -> None:
        """Send the close frame (after what is queued, unless the client is the
        slow one) and wait a moment for the client's."""
        if self._closing:
            return
        writer = self._writer
        if disconnect.code != model.DISCONNECT_SLOW.code:
            writer.flush_pending()
        writer.unbound()
        self._closing = True
        self._write(wsproto.close_frame(disconnect.code, disconnect.reason))
        self.upgrades.closing[self] = time.monotonic() + CLOSE_WAIT

    # --- reading --------------------------------------------------------------------

    def _read(self) -> None:
        try:
            future = self.stream.read_bytes(65536, partial=True)
        except StreamClosedError:
            return
        future.add_done_callback(self._received)

    def _received(self, future) -> None:
        try:
            data = future.result()
        except StreamClosedError:
            return  # _stream_closed tells the session
        for event in self._parser.feed(data):
            kind = type(event)
            if kind is wsproto.Message:
                self._message(event.data)
            elif kind is wsproto.Ping:
                if not self._closing:
                    self._write(wsproto.frame(wsproto.PONG, event.payload))
            elif kind is wsproto.Close:
                self._client_closed(event)
                return
            elif kind is wsproto.Violation:
                self._violation(event)
                return
        if not self.stream.closed():
            self._read()

    def _message(self, data: str | bytes) -> None:
        session = self.session
        if self._closing:
            return
        if type(data) is bytes and not self.wire.codec.binary:
            log.warning("client %s: binary frame on a JSON connection", session.client_id or "-")
            session.close(model.DISCONNECT_INAPPROPRIATE_PROTOCOL)
            return
        session.handle_frame(data)

    def _client_closed(self, event: wsproto.Close) -> None:
        # The close handshake: answer with the same code (RFC 6455 §5.5.1) if we
        # have not closed first, then end the TCP connection.
        if not self._closing:
            self._closing = True
            self._writer.unbound()
            code = event.code if event.code != wsproto.NO_STATUS else 1000
            self._write(wsproto.close_frame(code))
        self.upgrades.closing.pop(self, None)
        self.session.transport_closed()
        self._close_after_write()

    def _violation(self, event: wsproto.Violation) -> None:
        log.warning("client %s: %s, closing with %d", self.session.client_id or "-", event.reason, event.code)
        self.session.transport_closed()
        if not self._closing:
            self._closing = True
            self._writer.unbound()
            self._write(wsproto.close_frame(event.code, event.reason))
        self.upgrades.closing.pop(self, None)
        self._close_after_write()

    # --- writing and closing ----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except StreamClosedError:
            pass

    def _close_after_write(self) -> None:
        stream = self.stream
        if stream.closed():
            return
        if stream.writing():
            try:
                stream.write(b"").add_done_callback(lambda _: stream.close())
            except StreamClosedError:
                pass
        else:
            stream.close()

    def _stream_closed(self) -> None:
        self.upgrades.closing.pop(self, None)
        self.session.transport_closed()

    def _overflow(self, disconnect: Disconnect) -> None:
        log.warning("client %s: send queue over %d bytes, disconnecting as slow", self.session.client_id or "-",
                    self.upgrades.node.settings.max_queue_bytes)
        self.session.close(disconnect)
