"""Streaming HTTP transports, for clients whose WebSocket is blocked and for
clients with no SDK (centrifugo-protocol.md §9).

Bidirectional emulation (what centrifuge-js falls back to):

* ``POST /connection/http_stream``: the body is the connect command (JSON,
  or varint-delimited Protobuf with ``Content-Type:
  application/octet-stream``); the response is the stream of replies and
  pushes, one JSON message per line (``\\n`` after each) or delimited
  Protobuf ``Reply`` messages.
* ``GET /connection/sse?cf_connect=<connect command>`` (or ``POST`` with the
  command as the body): ``text/event-stream``, one ``data:`` event per
  message, JSON only.

The client's later commands (subscribes, pongs, refreshes) arrive through
``POST /emulation`` with the ``session`` and ``node`` of the connect result
(:mod:`gateway.protocols.centrifugo.emulation`), on whatever node the load balancer
picks.

Unidirectional (centrifugo-protocol.md §9.5), server-side subscriptions
only, pings with no pong expected:

* ``GET /connection/uni_sse?cf_connect=<ConnectRequest>`` (or ``POST``): a
  plain ``EventSource`` is enough;
* ``POST /connection/uni_http_stream`` with the ConnectRequest as the body:
  newline-delimited JSON, ``curl -N`` is enough.

How a stream is served: Tornado reads the request (main's lean path hands
it every request that is not a WebSocket upgrade, gateway/transports/websocket.py)
and the handler checks it. Once admitted, the handler takes the TCP
connection over (``detach()``), keeps a duplicate of its socket and closes
Tornado's IOStream, writes the response head itself, and hands the socket to
a small :class:`HttpStream` with a :class:`SocketWriter`, the write path
WebSocket connections use (batched writes straight to the socket, a bounded
queue, 3008 for a client that falls behind). The body is delimited by the
end of the connection (``Connection: close``), so every frame goes to the
socket as it is: the hub's shared frame (one SSE event, one line) is
exactly the bytes on the wire, with no chunk header to add per connection.
Nothing is buffered on the way (``X-Accel-Buffering: no`` for nginx) and
every batch is written at once. Per connection there remain the socket,
the writer, this transport and the session; the stream reads only to
notice the client leave.

To end a stream (a disconnect), the disconnect push goes out after what is
queued, then the connection is closed; a client that does not read it within
:data:`~gateway.transports.stream.CLOSE_WAIT` seconds is cut by the node's
one-second tick (:class:`~gateway.transports.stream.Closing`, which also
serves closing WebSockets).
"""
from __future__ import annotations

import logging
import re
import socket
from typing import TYPE_CHECKING

import tornado.log
import tornado.web
import ujson
from tornado.iostream import IOStream

from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import JSON, JSON_UNI
from gateway.protocols.centrifugo.model import Disconnect
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.core.wire import WireFormat, new_session_id
from gateway.transports.stream import SocketWriter

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.core.session import Session
    from gateway.protocols.centrifugo.emulation import EmulationSessions

log = logging.getLogger("pushgate.http_stream")

MAX_REQUEST_BODY = 65536   # bytes of a connect request (Centrifugo's default), and of /emulation
INPUT_AFTER_REQUEST = 4096  # bytes a client may send on an open stream (it should send none)
PROTOBUF_TYPE = "application/octet-stream"
ALLOWED_HEADERS = "Content-Type, Accept, Last-Event-ID"
PRINTABLE_ORIGIN = re.compile(r"^[\x21-\x7e]{1,300}$")  # safe to echo in a header


def _line(message: bytes) -> bytes:
    return message + b"\n"


def _event(message: bytes) -> bytes:
    # JSON messages have no raw newline (the codec and the ingest see to it),
    # so one message is always one data line.
    return b"data: " + message + b"\n\n"


def _as_is(message: bytes) -> bytes:
    return message  # already varint-delimited


# One wire format per (encoding, framing): the hub builds one frame per
# publication for each, shared by every connection that uses it.
HTTP_STREAM_JSON = WireFormat("http_stream-json", JSON, _line)
HTTP_STREAM_PROTOBUF = WireFormat("http_stream-protobuf", PROTOBUF, _as_is)
SSE_JSON = WireFormat("sse-json", JSON, _event)
UNI_HTTP_STREAM = WireFormat("uni_http_stream-json", JSON_UNI, _line)
UNI_SSE = WireFormat("uni_sse-json", JSON_UNI, _event)

_NO_CACHE = (b"Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n"
             b"Pragma: no-cache\r\nExpires: 0\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")


def response_head(content_type: str, origin: str | None, preamble: bytes = b"") -> bytes:
    """The 200 response head of a stream (and ``preamble``, the first bytes of its body)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n" + _NO_CACHE
    if origin:
        head += b"Access-Control-Allow-Origin: " + origin.encode() + b"\r\nVary: Origin\r\n"
    return head + b"\r\n" + preamble




def take_socket(stream: IOStream) -> socket.socket | None:
    """The connection's socket, ours alone: a duplicate of it, and Tornado's
    IOStream closed (which closes only its own descriptor, not the
    connection). None when the client has left already."""
    if stream.closed() or stream.socket is None:
        return None
    sock = stream.socket.dup()
    stream.close()
    sock.setblocking(False)
    return sock


class HttpStream:
    """One streaming response on its socket: the Transport of one session
    (see gateway/core/wire.py). It writes through a
    :class:`SocketWriter`, as a WebSocket does, and reads only to notice the
    client leave."""

    unidirectional = False
    emulation = True
    pongs = True

    __slots__ = ("wire", "session_id", "session", "send", "_node", "_sock", "_fd", "_writer", "_sessions",
                 "_received", "_closing", "_closed")

    def __init__(self, node: Node, sock: socket.socket, wire: WireFormat, head: bytes,
                 sessions: EmulationSessions | None = None) -> None:
        self.wire = wire
        self.session_id = new_session_id()
        self.session: Session | None = None
        self._node = node
        self._sock = sock
        self._fd = sock.fileno()
        self._sessions = sessions
        self._received = 0
        self._closing = False
        self._closed = False
        self._writer = SocketWriter(sock, node.batcher, node.settings.max_queue_bytes, self._overflow, self.abort)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        self.send(head)  # goes out with the connect reply, in one write
        node.loop.add_reader(self._fd, self._readable)

    def start(self, node: Node) -> CentrifugoSession:
        session = CentrifugoSession(node.host, self)
        self.session = node.host.accept(session)
        if self._sessions is not None:
            self._sessions.add(self.session_id, session)
        return session

    def disconnect(self, disconnect: Disconnect) -> None:
        """The disconnect push after what is queued, then the end of the response
        (unless the client is the slow one: then at once)."""
        if self._closing or self._closed:
            return
        writer = self._writer
        if disconnect.code == model.DISCONNECT_SLOW.code:
            self.abort()
            return
        writer.flush_pending()   # the session's disconnect push is queued last
        if writer.overflowed:
            self.abort()
            return
        self._closing = True
        self._node.closing.add(self)
        writer.when_drained(self.abort)

    def _readable(self) -> None:
        # A client sends nothing once its request is read: this only notices it leave.
        try:
            data = self._sock.recv(INPUT_AFTER_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._received += len(data)
        if not data or self._received > INPUT_AFTER_REQUEST:
            self.abort()

    def abort(self) -> None:
        """Close the socket now (the client left, the response ended, or it was too slow)."""
        if self._closed:
            return
        self._closed = True
        self._node.closing.discard(self)
        self._node.loop.remove_reader(self._fd)
        self._writer.close()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._sessions is not None:
            self._sessions.remove(self.session_id)
        if self.session is not None:
            self.session.transport_closed()

    def _overflow(self, disconnect: Disconnect) -> None:
        session = self.session
        if session is None:
            self.abort()
            return
        log.warning("client %s: send queue over %d bytes, disconnecting as slow", session.client_id or "-",
                    session.host.settings.max_queue_bytes)
        session.close(disconnect)


class UniHttpStream(HttpStream):
    unidirectional = True
    emulation = False
    pongs = False
    __slots__ = ()


class PathOnlyLogs:
    """Tornado's own log lines for a request (an HTTPError, an uncaught
    exception) name its URI and, for an exception, the whole request: the
    query string too, where a ``cf_connect`` carries a token. These name the
    path only, like the access log (gateway/app.py)."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            # Its message may quote the argument it could not read.
            tornado.log.gen_log.warning("%d %s: %s", value.status_code, self._request_summary(),
                                        value.reason or "bad request")
        else:
            tornado.log.app_log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class StreamEndpoint(PathOnlyLogs, tornado.web.RequestHandler):
    """What every stream endpoint and ``/emulation`` share: browser origins and
    CORS, admission at the door, a request body of at most
    :data:`MAX_REQUEST_BODY` bytes (413 beyond), and answers that say what
    was wrong."""

    admit = True  # new connections pass the node's admission (not /emulation)

    def initialize(self, node: Node, sessions: EmulationSessions | None = None) -> None:
        self.node = node
        self.sessions = sessions
        self._chunks: list[bytes] = []
        self._size = 0
        self._origin: str | None = None

    def prepare(self) -> None:
        method = self.request.method
        if method == "OPTIONS":
            return
        origin = self.request.headers.get("Origin")
        if origin:
            if not self._origin_allowed(origin):
                return
            self._origin = origin
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        if self.admit and method in ("GET", "POST"):
            refusal = self.node.admit_handshake()
            if refusal is not None:
                self.set_header("Retry-After", "1")
                self.refuse(503, refusal, unread=True)
                return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
            self.refuse(413, f"request body over {MAX_REQUEST_BODY} bytes", unread=True)
            return
        # Tornado stops reading (and closes) past this; data_received answers 413 first.
        self.request.connection.set_max_body_size(MAX_REQUEST_BODY + 65536)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > MAX_REQUEST_BODY:
            self._chunks = []
            self.refuse(413, f"request body over {MAX_REQUEST_BODY} bytes", unread=True)
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def _origin_allowed(self, origin: str) -> bool:
        """Whether ``origin`` may use this endpoint; if not, answered 403 here."""
        if self.node.origin_allowed(origin, self.request.host) and PRINTABLE_ORIGIN.match(origin):
            return True
        log.warning("refused a browser request to %s from origin %r (the gateway's host is %r): to allow it, "
                    "add it to --allowed-origins (PUSHGATE_ALLOWED_ORIGINS)",
                    self.request.path, origin[:200], self.request.host[:200])
        self.refuse(403, "origin not allowed: see --allowed-origins", unread=True)
        return False

    def options(self) -> None:
        """The CORS preflight browsers send before a POST with a JSON body."""
        origin = self.request.headers.get("Origin")
        if origin and not self._origin_allowed(origin):
            return
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.set_header("Access-Control-Max-Age", "300")
        self.set_status(204)
        self.finish()

    def refuse(self, status: int, reason: str, unread: bool = False) -> None:
        """Answer ``status`` with the reason as JSON; close the connection when
        the body is left ``unread``, so that it is not taken for a request."""
        if self._finished:
            return
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if unread:
            self.set_header("Connection", "close")
        self.finish({"error": reason})

    def open_stream(self, wire: WireFormat, content_type: str, preamble: bytes = b"",
                    cls: type[HttpStream] = HttpStream) -> CentrifugoSession | None:
        """Take the connection over from Tornado and start a session on it
        (None: the client left while its request was read)."""
        node = self.node
        stream = self.detach()  # Tornado's part ends here
        node.pending.discard(stream)  # a session now, counted against --max-connections
        sock = take_socket(stream)
        # Log the request as answered, and let go of the handler.
        self.set_status(200 if sock is not None else 499)
        self.application.log_request(self)
        self._break_cycles()
        if sock is None:
            return None
        head = response_head(content_type, self._origin, preamble)
        return cls(node, sock, wire, head, self.sessions if cls.emulation else None).start(node)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"error": self._reason})


class HttpStreamEndpoint(StreamEndpoint):
    """``POST /connection/http_stream``: the body is the connect command."""

    def post(self) -> None:
        if self._finished:
            return
        body = self.body
        if not body.strip():
            self.refuse(400, "the body must be the connect command")
            return
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() == PROTOBUF_TYPE:
            session = self.open_stream(HTTP_STREAM_PROTOBUF, PROTOBUF_TYPE)
        else:
            session = self.open_stream(HTTP_STREAM_JSON, "application/x-ndjson")
        if session is not None:
            session.handle_frame(body)


class SseEndpoint(StreamEndpoint):
    """``GET /connection/sse?cf_connect=<connect command>``, or ``POST`` with the
    command as the body. JSON only."""

    def get(self) -> None:
        if self._finished:
            return
        command = self.get_query_argument("cf_connect", "", strip=False)
        if not command.strip():
            self.refuse(400, "cf_connect: the connect command is missing")
            return
        self._open(command)

    def post(self) -> None:
        if self._finished:
            return
        body = self.body
        if not body.strip():
            self.refuse(400, "the body must be the connect command")
            return
        self._open(body)

    def _open(self, command: str | bytes) -> None:
        # An empty line first, as Centrifugo sends: every browser fires onopen on it.
        session = self.open_stream(SSE_JSON, "text/event-stream; charset=utf-8", b"\r\n")
        if session is not None:
            session.handle_frame(command)


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


class UniSseEndpoint(StreamEndpoint):
    """``GET /connection/uni_sse?cf_connect=<ConnectRequest>`` (none: an empty
    request), or ``POST`` with the ConnectRequest as the body."""

    def get(self) -> None:
        if not self._finished:
            self._open(self.get_query_argument("cf_connect", "", strip=False))

    def post(self) -> None:
        if not self._finished:
            self._open(self.body)

    def _open(self, raw: str | bytes) -> None:
        request = connect_request(raw)
        if request is None:
            self.refuse(400, "the connect request must be a JSON object")
            return
        session = self.open_stream(UNI_SSE, "text/event-stream; charset=utf-8", b"\r\n", UniHttpStream)
        if session is not None:
            session.connect_unidirectional(request)


class UniHttpStreamEndpoint(StreamEndpoint):
    """``POST /connection/uni_http_stream`` with the ConnectRequest as the body:
    newline-delimited JSON pushes."""

    def post(self) -> None:
        if self._finished:
            return
        request = connect_request(self.body)
        if request is None:
            self.refuse(400, "the body must be a connect request: a JSON object")
            return
        session = self.open_stream(UNI_HTTP_STREAM, "application/x-ndjson", cls=UniHttpStream)
        if session is not None:
            session.connect_unidirectional(request)
