"""The WebSocket transport, on a lean path.

The door (:mod:`gateway.transports.door`) reads each request head from the
socket; a head whose path is one of the WebSocket endpoints comes here
(:meth:`WebSocketDoor.upgrade`). It is checked (RFC 6455 §4.2, the origin,
the node's admission), answered ``101``, and the socket becomes a
:class:`WebSocketConnection`: its frames parsed by
:mod:`gateway.transports.wsproto`, its writes by
:class:`~gateway.transports.stream.SocketWriter`, both straight on the
socket, with the endpoint's session behind it. The connection knows the
session only as its core (:class:`gateway.core.session.Session`): which
protocol it speaks is the endpoint's business.

Tornado's WebSocket machinery (a connection object, a request context,
header parsing with regular expressions, a handler, a coroutine and futures
per frame) was most of what a connect cost; this path does the same work
with a few objects and plain byte operations (docs/benchmarks.md has the
figures).

No timer per connection: a closing WebSocket whose client never answers our
close frame is found by the node's one-second timer
(:class:`~gateway.transports.stream.Closing`).
"""
from __future__ import annotations

import logging
import re
import socket as _socket
import time
import urllib.parse
from typing import TYPE_CHECKING

from tornado.log import access_log

from gateway.core import vocabulary
from gateway.core.wire import new_session_id
from gateway.transports import wsproto
from gateway.transports.door import Head, RequestHead
from gateway.transports.endpoint import Choice, Endpoint, Kind, Request
from gateway.transports.stream import SocketWriter

if TYPE_CHECKING:
    from gateway.core.session import Session
    from gateway.core.wire import WireFormat
    from gateway.transports.host import TransportHost

log = logging.getLogger("pushgate.websocket")

# Largest client message accepted (Centrifugo's default); past it, close 1009.
MAX_CLIENT_FRAME = 65536
# Frames are parsed this many at a time, so a connection closed part-way
# through a chunk (its command rate exceeded) is not parsed to the end of it.
FEED_BATCH = 64
# Frames a client may still send after our close frame, before its own close.
# Past it we stop reading, so a flood is not parsed while the close handshake
# waits (TCP's flow control holds the sender back), and end our side of the
# TCP connection once the close frame is out: the client reads the close
# frame and the end, and is done. The socket is closed when CLOSE_WAIT ends.
# (Closing it at once, with unread bytes, would send a reset that can destroy
# the close frame, and its code, before the client reads it.)
CLOSING_FRAMES = 64
# Bytes read and dropped after a protocol violation while the client takes in
# our close frame and ends the connection. Closing at once with the rest of
# its message unread would send a reset, which can destroy the close frame,
# and its code (1009, 1002, ...), before the client reads it; past this the
# socket is not read again (TCP holds the sender back) until CLOSE_WAIT ends.
LINGER_BYTES = 262144
ALLOWABLE_ORIGIN = re.compile(r"^https?://[^/\s]+$")


class WebSocketDoor:
    """The WebSocket endpoints of a node, by path: what the door hands a
    request head to."""

    def __init__(self, host: TransportHost, endpoints: list[Endpoint]):
        self.host = host
        self.endpoints = {e.path: e for e in endpoints if e.kind is Kind.WEBSOCKET}

    def upgrade(self, head: Head, request: RequestHead, rest: bytes) -> bool:
        """Take the connection when ``request`` is for a WebSocket endpoint."""
        endpoint = self.endpoints.get(request.path)
        if endpoint is None:
            return False
        _Handshake(self.host, head, endpoint, request, rest).run()
        return True


class _Handshake:
    """RFC 6455 §4.2, the server's part, with pushgate's door in front of it."""

    def __init__(self, host: TransportHost, head: Head, endpoint: Endpoint, request: RequestHead, rest: bytes):
        self.head = head
        self.host = host
        self.endpoint = endpoint
        self.request = request
        self.rest = rest   # bytes after the head: the client's first frames, if it did not wait

    def run(self) -> None:
        request, headers = self.request, self.request.headers
        if request.method != "GET":
            return self.refuse(405, "a WebSocket endpoint: GET with Upgrade: websocket", {"Allow": "GET"})
        if headers.get("upgrade", "").lower() != "websocket" or \
                "upgrade" not in headers.get("connection", "").lower():
            return self.refuse(400, 'Can "Upgrade" only to "WebSocket"')
        if headers.get("sec-websocket-version") != "13":
            return self.refuse(426, "WebSocket version 13 only", {"Sec-WebSocket-Version": "13"})
        key = headers.get("sec-websocket-key", "")
        if not wsproto.valid_key(key):
            return self.refuse(400, "missing or invalid Sec-WebSocket-Key")
        origin = headers.get("origin", "")
        host = headers.get("host", "")
        if not self.host.origin_allowed(origin, host):
            # Say what would allow it: the first thing a Vite-on-5173 user hits.
            log.warning("refused a browser connection from origin %r (the gateway's host is %r): to allow it, "
                        "add it to --allowed-origins (PUSHGATE_ALLOWED_ORIGINS), e.g. --allowed-origins=%s",
                        origin[:200], host[:200],
                        origin if ALLOWABLE_ORIGIN.match(origin) else "https://app.example.com")
            return self.refuse(403, "origin not allowed")
        offered = tuple(p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip())
        query = urllib.parse.parse_qs(request.query) if request.query else {}
        peer = self.host.client_address(self.head.address[0] if self.head.address else "",
                                        headers.get("x-forwarded-for", ""), headers.get("x-real-ip", ""))
        target = f"{request.path}?{request.query}" if request.query else request.path
        client_request = Request(request.method, request.path, headers, query, b"", offered, target, peer)
        if self.endpoint.refuse is not None:
            reason = self.endpoint.refuse(client_request)
            if reason is not None:
                return self.refuse(400, reason)
        # Refused before the upgrade: cheaper than a WebSocket closed at once,
        # and the SDKs retry a failed handshake with backoff.
        refusal = self.host.admit_handshake()
        if refusal is not None:
            return self.refuse(503, refusal, {"Retry-After": "1"}, detail=self.host.explain_refusal(refusal))
        if self.endpoint.busy is not None:
            busy = self.endpoint.busy(self.host.session_host, client_request)
            if busy is not None:
                return self.refuse(503, busy, {"Retry-After": "1"})
        choice = self.endpoint.choose(client_request)
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + wsproto.accept_key(key).encode() + b"\r\n")
        if choice.subprotocol:
            response += b"Sec-WebSocket-Protocol: " + choice.subprotocol.encode() + b"\r\n"
        self.log(101, logging.DEBUG)
        WebSocketConnection(self.host, self.endpoint, self.head.sock, choice, response + b"\r\n", self.rest,
                            client_request)

    def refuse(self, status: int, reason: str, extra: dict | None = None, detail: str = "") -> None:
        self.log(status, logging.WARNING, detail)
        self.head.answer(status, reason, extra)

    def log(self, status: int, level: int, detail: str = "") -> None:
        # The access log's line, with the path only: tokens travel in query strings.
        if access_log.isEnabledFor(level):
            headers = self.request.headers
            peer = self.host.client_address(self.head.address[0] if self.head.address else "",
                                            headers.get("x-forwarded-for", ""), headers.get("x-real-ip", ""))
            access_log.log(level, "%d %s %s (%s) %.2fms%s", status, self.request.method, self.request.path, peer,
                           1000.0 * (time.monotonic() - self.head.started), f": {detail}" if detail else "")


class WebSocketConnection:
    """One WebSocket on its socket: the Transport its session sees."""

    emulation = False  # commands come on the socket itself

    __slots__ = ("host", "sock", "fd", "wire", "pongs", "unidirectional", "session_id", "session", "send",
                 "_writer", "_parser", "_closing", "_after_close", "_closed")

    def __init__(self, host: TransportHost, endpoint: Endpoint, sock: _socket.socket, choice: Choice,
                 response: bytes, rest: bytes, request: Request):
        self.host = host
        self.wire: WireFormat
        self.sock = sock
        self.fd = sock.fileno()
        self.wire = choice.wire
        self.pongs = endpoint.pongs
        self.unidirectional = endpoint.unidirectional
        # A unidirectional connection's connect push names its session (centrifugo-protocol.md §4.2).
        self.session_id = new_session_id() if endpoint.unidirectional else ""
        self._writer = SocketWriter(sock, host.batcher, host.max_queue_bytes, self._overflow, self.abort)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        self._parser: wsproto.FrameParser | None = wsproto.FrameParser(MAX_CLIENT_FRAME)
        self._closing = False
        # What the client sent after our close frame: frames while they are
        # still parsed; after a violation (no parser), bytes read and dropped.
        self._after_close = 0
        self._closed = False
        try:
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            pass
        self._writer.write(response)
        sessions = host.session_host
        self.session: Session = sessions.accept(endpoint.session(sessions, self))
        if choice.refusal is not None:
            self.session.close(choice.refusal)
        elif endpoint.opened is not None:
            endpoint.opened(self.session, request)
        host.watch(self.fd, self._readable)   # takes over the door's registration (door.py Head)
        if rest:
            self._feed(rest)

    # --- the Transport interface ------------------------------------------------------

    def disconnect(self, code: int, reason: str, flush: bool) -> None:
        """Send the close frame (after what is queued, unless the client is the
        slow one) and wait a moment for the client's."""
        if self._closing or self._closed:
            return
        writer = self._writer
        if flush:
            writer.flush_pending()   # what is queued, a disconnect message included, goes first
        writer.unbound()
        self._closing = True
        writer.write(wsproto.close_frame(code, reason))
        self.host.closing.add(self)

    # --- reading --------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.abort()
            return
        if self._parser is None:
            self._drop(len(data))
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:   # after a violation nothing more is parsed (see _readable)
            return
        events = parser.feed(data, FEED_BATCH)
        while events:
            for event in events:
                if isinstance(event, wsproto.Message):
                    self._message(event.data)
                elif isinstance(event, wsproto.Ping):
                    if not self._closing:
                        self._writer.write(wsproto.frame(wsproto.PONG, event.payload))
                elif isinstance(event, wsproto.Close):
                    self._client_closed(event)
                    return
                elif isinstance(event, wsproto.Violation):
                    self._violation(event)
                    return
                if self._closed:
                    return
            if self._closing:
                self._after_close += len(events)
                if self._after_close > CLOSING_FRAMES:
                    log.info("client %s: %d frames after our close frame and no close; no longer reading it",
                             self.session.client_id or "-", self._after_close)
                    self.host.unwatch(self.fd)
                    self._writer.when_drained(self._end_output)
                    return
            if len(events) < FEED_BATCH:
                return   # the parser stops short of its limit only when no whole frame is left
            events = parser.feed(b"", FEED_BATCH)

    def _message(self, data: str | bytes) -> None:
        session = self.session
        if self._closing:
            return
        if type(data) is bytes and not self.wire.codec.binary:
            log.warning("client %s: binary frame on a JSON connection", session.client_id or "-")
            session.close(vocabulary.INAPPROPRIATE_PROTOCOL)
            return
        session.handle_frame(data)

    def _client_closed(self, event: wsproto.Close) -> None:
        # The close handshake: answer with the same code (RFC 6455 §5.5.1) if we
        # have not closed first, then end the TCP connection.
        self.session.transport_closed()
        if not self._closing:
            self._closing = True
            self._writer.unbound()
            self._writer.write(wsproto.close_frame(event.code if event.code != wsproto.NO_STATUS else 1000))
        self._writer.when_drained(self.abort)

    def _violation(self, event: wsproto.Violation) -> None:
        log.warning("client %s: %s, closing with %d", self.session.client_id or "-", event.reason, event.code)
        self.session.transport_closed()
        if not self._closing:
            self._closing = True
            self._writer.unbound()
            self._writer.write(wsproto.close_frame(event.code, event.reason))
        # Nothing after a violation can be parsed: read and drop until the
        # client ends (LINGER_BYTES at most), our close frame then FIN sent.
        self._parser = None
        self._after_close = 0
        self.host.closing.add(self)
        self._writer.when_drained(self._end_output)

    def _drop(self, size: int) -> None:
        self._after_close += size
        if self._after_close > LINGER_BYTES:
            log.info("client %s: %d bytes after a protocol violation and no end; no longer reading it",
                     self.session.client_id or "-", self._after_close)
            self.host.unwatch(self.fd)

    # --- the end ------------------------------------------------------------------------

    def abort(self) -> None:
        """Close the socket now (the client is gone, or done, or too slow to say so)."""
        if self._closed:
            return
        self._closed = True
        self.host.closing.discard(self)
        self.host.unwatch(self.fd)
        self._writer.close()
        try:
            self.sock.close()
        except OSError:
            pass
        self.session.transport_closed()

    def _end_output(self) -> None:
        """Our close frame has gone out: send the end of the stream after it."""
        if not self._closed:
            try:
                self.sock.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def _overflow(self) -> None:
        log.warning("client %s: send queue over %d bytes, disconnecting as slow", self.session.client_id or "-",
                    self.host.max_queue_bytes)
        self.session.close(vocabulary.SLOW)


_IPPROTO_TCP, _TCP_NODELAY = _socket.IPPROTO_TCP, _socket.TCP_NODELAY
