"""WebSocket endpoints on a lean path, and the door every TCP connection
comes through.

Each accepted connection first has its HTTP request head read here, from
the socket, with no framework in between (:class:`Head`). If the head is a
WebSocket upgrade for one of the endpoints, it is checked (RFC 6455 §4.2,
the origin, the node's admission), answered ``101`` and the socket becomes a
:class:`WebSocketConnection`: its frames parsed by
:mod:`gateway.transports.wsproto`, its writes by
:class:`~gateway.transports.stream.SocketWriter`, both straight on the
socket. Any other request goes to Tornado: its socket is wrapped in an
IOStream that hands Tornado the bytes already read first
(:class:`PrefilledIOStream`, through ``read_from_fd``, the method IOStream
subclasses provide) and served by the HTTP server as before.

Tornado's HTTP and WebSocket machinery (a connection object, a request
context, header parsing with regular expressions, a handler, a coroutine
and futures per frame) was most of what a connect cost; this path does the
same work with a few objects and plain byte operations
(docs/benchmarks.md has the figures).

No timer per connection: a head that does not arrive within
``--handshake-timeout`` and a closing WebSocket whose client never answers
our close frame are both found by the node's one-second timer.
"""
from __future__ import annotations

import logging
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Callable, NamedTuple

from tornado.iostream import IOStream
from tornado.log import access_log

from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.model import Disconnect
from gateway.transports.door import client_address
from gateway.transports import wsproto
from gateway.core.wire import WireFormat, new_session_id
from gateway.transports.stream import SocketWriter

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.transports.door import Listener
    from gateway.core.session import Session

log = logging.getLogger("pushgate.websocket")

# Largest client message accepted (Centrifugo's default); past it, close 1009.
MAX_CLIENT_FRAME = 65536
MAX_HEAD = 16384    # bytes of request line and headers
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
    open (a protocol that authenticates with it, as Action Cable does;
    header names are lower-case)."""

    def __init__(self, path: str, choose: Callable[[list[str], dict[str, list[str]]], Choice],
                 session: Callable[..., Session], *, pongs: bool = True, unidirectional: bool = False,
                 unacceptable: Callable[[list[str]], str | None] | None = None,
                 opened: Callable[[Session, dict[str, str], dict[str, list[str]]], None] | None = None):
        self.path = path
        self.choose = choose
        self.session = session
        self.pongs = pongs
        self.unidirectional = unidirectional
        self.unacceptable = unacceptable
        self.opened = opened


class Request(NamedTuple):
    method: str
    path: str
    query: str
    headers: dict[str, str]   # lower-cased names; a repeated header's values joined with ", "


def parse_head(head: bytes) -> Request | None:
    """The request line and headers of an HTTP/1.1 request head (without the
    blank line), or None when it is not one."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = parts[1].partition("?")
    return Request(parts[0], path, query, headers)


class PrefilledIOStream(IOStream):
    """An IOStream whose first reads return bytes already taken from the socket."""

    def __init__(self, socket, prefill: bytes, **kwargs):
        self._prefill = prefill
        super().__init__(socket, **kwargs)

    def read_from_fd(self, buf):
        prefill = self._prefill
        if prefill:
            n = min(len(buf), len(prefill))
            buf[:n] = prefill[:n]
            self._prefill = prefill[n:]
            return n
        return super().read_from_fd(buf)


class Upgrades:
    """The WebSocket endpoints of the node."""

    def __init__(self, node: Node, endpoints: list[Endpoint]):
        self.node = node
        self.endpoints = {e.path: e for e in endpoints}


class Head:
    """A new connection while its request head arrives (at most MAX_HEAD bytes,
    within --handshake-timeout)."""

    __slots__ = ("listener", "upgrades", "sock", "address", "buffer", "started", "_closed")

    def __init__(self, listener: Listener, upgrades: Upgrades, sock, address) -> None:
        self.listener = listener
        self.upgrades = upgrades
        self.sock = sock
        self.address = address
        self.buffer = b""
        self.started = time.monotonic()
        self._closed = False
        sock.setblocking(False)
        listener.pending.add(self)
        upgrades.node.loop.add_reader(sock.fileno(), self._readable)

    # PendingConnections' interface
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._detach()
            self.sock.close()

    def expired(self, now: float, timeout: float) -> bool:
        return now - self.started > timeout

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        buffer = self.buffer + chunk if self.buffer else chunk
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(buffer) > MAX_HEAD:   # a whole head that came in more than one read counts too
                self._answer(431, "request head too large")
            else:
                self.buffer = buffer
            return
        self._detach()  # the socket goes to Tornado or to a WebSocket, or is answered and closed
        request = parse_head(buffer[:end])
        endpoint = self.upgrades.endpoints.get(request.path) if request is not None else None
        if endpoint is None:
            # Everything else is Tornado's, with the bytes already read given back.
            stream = PrefilledIOStream(self.sock, buffer, max_buffer_size=self.listener.max_buffer_size,
                                       read_chunk_size=self.listener.read_chunk_size)
            self.listener.handle_stream(stream, self.address)
            return
        _Handshake(self, endpoint, request, buffer[end + 4:]).run()

    def _detach(self) -> None:
        if not self._closed:
            self._closed = True
            self.upgrades.node.loop.remove_reader(self.sock.fileno())
            self.listener.pending.discard(self)

    def _answer(self, status: int, reason: str, extra: dict | None = None) -> None:
        """An HTTP error response, then the end of the connection."""
        self._detach()
        body = ('{"error": "%s"}' % reason.replace('"', "'")).encode()
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        try:
            self.sock.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        except OSError:
            pass
        self.sock.close()


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


class _Handshake:
    """RFC 6455 §4.2, the server's part, with pushgate's door in front of it."""

    def __init__(self, head: Head, endpoint: Endpoint, request: Request, rest: bytes):
        self.head = head
        self.node = head.upgrades.node
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
        if not self.node.origin_allowed(origin, host):
            # Say what would allow it: the first thing a Vite-on-5173 user hits.
            log.warning("refused a browser connection from origin %r (the gateway's host is %r): to allow it, "
                        "add it to --allowed-origins (PUSHGATE_ALLOWED_ORIGINS), e.g. --allowed-origins=%s",
                        origin[:200], host[:200],
                        origin if ALLOWABLE_ORIGIN.match(origin) else "https://app.example.com")
            return self.refuse(403, "origin not allowed")
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        if self.endpoint.unacceptable is not None:
            reason = self.endpoint.unacceptable(offered)
            if reason is not None:
                return self.refuse(400, reason)
        # Refused before the upgrade: cheaper than a WebSocket closed at once,
        # and the SDKs retry a failed handshake with backoff.
        refusal = self.node.admit_handshake()
        if refusal is not None:
            return self.refuse(503, refusal, {"Retry-After": "1"})
        query = urllib.parse.parse_qs(request.query) if request.query else {}
        choice = self.endpoint.choose(offered, query)
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + wsproto.accept_key(key).encode() + b"\r\n")
        if choice.subprotocol:
            response += b"Sec-WebSocket-Protocol: " + choice.subprotocol.encode() + b"\r\n"
        self.log(101, logging.DEBUG)
        WebSocketConnection(self.head.upgrades, self.endpoint, self.head.sock, choice, response + b"\r\n",
                            self.rest, headers, query)

    def refuse(self, status: int, reason: str, extra: dict | None = None) -> None:
        self.log(status, logging.WARNING)
        self.head._answer(status, reason, extra)

    def log(self, status: int, level: int) -> None:
        # The access log's line, with the path only: tokens travel in query strings.
        if access_log.isEnabledFor(level):
            headers = self.request.headers
            peer = client_address(self.head.address[0] if self.head.address else "",
                                  headers.get("x-forwarded-for", ""), headers.get("x-real-ip", ""),
                                  self.node.trusted_networks)
            access_log.log(level, "%d %s %s (%s) %.2fms", status, self.request.method, self.request.path, peer,
                           1000.0 * (time.monotonic() - self.head.started))


class WebSocketConnection:
    """One WebSocket on its socket: the Transport its session sees."""

    emulation = False  # commands come on the socket itself

    __slots__ = ("upgrades", "sock", "fd", "wire", "pongs", "unidirectional", "session_id", "session", "send",
                 "_writer", "_parser", "_closing", "_after_close", "_closed")

    def __init__(self, upgrades: Upgrades, endpoint: Endpoint, sock, choice: Choice, response: bytes,
                 rest: bytes, headers: dict[str, str] | None = None, query: dict[str, list[str]] | None = None):
        node = upgrades.node
        self.upgrades = upgrades
        self.sock = sock
        self.fd = sock.fileno()
        self.wire = choice.wire
        self.pongs = endpoint.pongs
        self.unidirectional = endpoint.unidirectional
        # A unidirectional connection's connect push names its session (centrifugo-protocol.md §4.2).
        self.session_id = new_session_id() if endpoint.unidirectional else ""
        self._writer = SocketWriter(sock, node.batcher, node.settings.max_queue_bytes, self._overflow, self.abort)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        self._parser = wsproto.FrameParser(MAX_CLIENT_FRAME)
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
        self.session = node.host.accept(endpoint.session(node.host, self))
        if choice.refusal is not None:
            self.session.close(choice.refusal)
        elif endpoint.opened is not None:
            endpoint.opened(self.session, headers or {}, query or {})
        node.loop.add_reader(self.fd, self._readable)
        if rest:
            self._feed(rest)

    # --- the Transport interface ------------------------------------------------------

    def disconnect(self, disconnect: Disconnect) -> None:
        """Send the close frame (after what is queued, unless the client is the
        slow one) and wait a moment for the client's."""
        if self._closing or self._closed:
            return
        writer = self._writer
        if disconnect.code != model.DISCONNECT_SLOW.code:
            writer.flush_pending()   # what is queued, a disconnect push included, goes first
        writer.unbound()
        self._closing = True
        writer.write(wsproto.close_frame(disconnect.code, disconnect.reason))
        self.upgrades.node.closing.add(self)

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
        events = parser.feed(data, FEED_BATCH)
        while events:
            for event in events:
                kind = type(event)
                if kind is wsproto.Message:
                    self._message(event.data)
                elif kind is wsproto.Ping:
                    if not self._closing:
                        self._writer.write(wsproto.frame(wsproto.PONG, event.payload))
                elif kind is wsproto.Close:
                    self._client_closed(event)
                    return
                elif kind is wsproto.Violation:
                    self._violation(event)
                    return
                if self._closed:
                    return
            if self._closing:
                self._after_close += len(events)
                if self._after_close > CLOSING_FRAMES:
                    log.info("client %s: %d frames after our close frame and no close; no longer reading it",
                             self.session.client_id or "-", self._after_close)
                    self.upgrades.node.loop.remove_reader(self.fd)
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
            session.close(model.DISCONNECT_INAPPROPRIATE_PROTOCOL)
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
        self.upgrades.node.closing.add(self)
        self._writer.when_drained(self._end_output)

    def _drop(self, size: int) -> None:
        self._after_close += size
        if self._after_close > LINGER_BYTES:
            log.info("client %s: %d bytes after a protocol violation and no end; no longer reading it",
                     self.session.client_id or "-", self._after_close)
            self.upgrades.node.loop.remove_reader(self.fd)

    # --- the end ------------------------------------------------------------------------

    def abort(self) -> None:
        """Close the socket now (the client is gone, or done, or too slow to say so)."""
        if self._closed:
            return
        self._closed = True
        self.upgrades.node.closing.discard(self)
        self.upgrades.node.loop.remove_reader(self.fd)
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

    def _overflow(self, disconnect: Disconnect) -> None:
        log.warning("client %s: send queue over %d bytes, disconnecting as slow", self.session.client_id or "-",
                    self.upgrades.node.settings.max_queue_bytes)
        self.session.close(disconnect)


import socket as _socket  # noqa: E402

_IPPROTO_TCP, _TCP_NODELAY = _socket.IPPROTO_TCP, _socket.TCP_NODELAY
