"""The HTTP stream transport: a streamed response as a connection, for
clients whose WebSocket is blocked and for clients with no SDK.

A stream endpoint (:class:`~gateway.transports.endpoint.Endpoint` of kind
``STREAM``) is served by :class:`StreamHandler`: Tornado reads the request
(the door hands it every request that is not a WebSocket upgrade) and the
handler checks it (browser origins and CORS, admission, a body of at most
:data:`MAX_REQUEST_BODY` bytes, the endpoint's own ``refuse``). Once
admitted, the handler takes the TCP connection over (``detach()``), keeps a
duplicate of its socket and closes Tornado's IOStream, writes the response
head itself (the content type and first bytes the endpoint chose), and hands
the socket to a small :class:`HttpStream` with a :class:`SocketWriter`, the
write path WebSocket connections use (batched writes straight to the
socket, a bounded queue, cut as slow past it). The body is delimited by the
end of the connection (``Connection: close``), so every frame goes to the
socket as it is: the hub's shared frame (one SSE event, one line) is exactly
the bytes on the wire, with no chunk header to add per connection. Nothing is
buffered on the way (``X-Accel-Buffering: no`` for nginx). Per connection
there remain the socket, the writer, this transport and the session; the
stream reads only to notice the client leave.

Which protocol a stream speaks, and what its request means (a connect
command, a ConnectRequest, an Action Cable subscription), is the endpoint's:
its ``choose`` and ``opened``. The framings of streamed messages are here:
a line (:func:`line`), an SSE event (:func:`sse_event`), bytes that are
already delimited (:func:`as_is`).

To end a stream (a disconnect), what is queued goes out (the session's last
message included), then the connection is closed; a client that does not
read it within :data:`~gateway.transports.stream.CLOSE_WAIT` seconds is cut
by the node's one-second tick (:class:`~gateway.transports.stream.Closing`,
which also serves closing WebSockets).
"""
from __future__ import annotations

import logging
import re
import socket
import urllib.parse
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.log
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream

from gateway.core import vocabulary
from gateway.core.wire import new_session_id
from gateway.transports.endpoint import Choice, Endpoint, HttpRefusal, Request
from gateway.transports.stream import SocketWriter

if TYPE_CHECKING:
    from gateway.core.session import Session
    from gateway.core.wire import WireFormat
    from gateway.transports.host import TransportHost

log = logging.getLogger("pushgate.http_stream")

MAX_REQUEST_BODY = 65536   # bytes of a connect request (Centrifugo's default), and of /emulation
INPUT_AFTER_REQUEST = 4096  # bytes a client may send on an open stream (it should send none)
ALLOWED_HEADERS = "Content-Type, Accept, Last-Event-ID"
PRINTABLE_ORIGIN = re.compile(r"^[\x21-\x7e]{1,300}$")  # safe to echo in a header
SSE_TYPE = "text/event-stream; charset=utf-8"
SSE_PREAMBLE = b"\r\n"   # an empty line first, as Centrifugo sends: every browser fires onopen on it


# --- framings of streamed messages ------------------------------------------------------

def line(message: bytes) -> bytes:
    """A message per line (newline-delimited JSON)."""
    return message + b"\n"


def sse_event(message: bytes) -> bytes:
    """An SSE ``data:`` event. The message must hold no raw newline (JSON from
    the codecs never does), so one message is always one data line."""
    return b"data: " + message + b"\n\n"


def as_is(message: bytes) -> bytes:
    return message  # already delimited (varint-delimited Protobuf)


_NO_CACHE = (b"Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n"
             b"Pragma: no-cache\r\nExpires: 0\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")


def response_head(content_type: str, origin: str | None, preamble: bytes = b"") -> bytes:
    """The 200 response head of a stream (and ``preamble``, the first bytes of its body)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n" + _NO_CACHE
    if origin:
        head += b"Access-Control-Allow-Origin: " + origin.encode() + b"\r\nVary: Origin\r\n"
    return head + b"\r\n" + preamble




_STATUS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


def error_response(status: int, reason: str, origin: str | None) -> bytes:
    """A whole HTTP error response, for a stream refused as it opened."""
    body = ('{"error": "%s"}' % reason.replace('"', "'").replace("\\", "/")).encode()
    head = (f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    if origin:
        head += b"Access-Control-Allow-Origin: " + origin.encode() + b"\r\nVary: Origin\r\n"
    return head + b"\r\n" + body


def over(content_length: str, limit: int) -> bool:
    """Whether a Content-Length header announces more than ``limit`` bytes.
    Only ASCII digits are a length (``"²".isdigit()`` is true, and int()
    refuses it): anything else is left to Tornado, which answers 400. More
    than 18 digits is over any limit (and int() refuses 5,000)."""
    return (content_length.isascii() and content_length.isdigit()
            and (len(content_length) > 18 or int(content_length) > limit))


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
    (see gateway/core/wire.py). It writes through a :class:`SocketWriter`,
    as a WebSocket does, and reads only to notice the client leave."""

    __slots__ = ("wire", "session_id", "session", "send", "unidirectional", "emulation", "pongs", "_host", "_sock",
                 "_fd", "_writer", "_received", "_opening", "_closing", "_closed")

    def __init__(self, host: TransportHost, endpoint: Endpoint, sock: socket.socket, choice: Choice,
                 request: Request, origin: str | None) -> None:
        self.wire: WireFormat = choice.wire
        self.unidirectional = endpoint.unidirectional
        self.emulation = endpoint.emulation
        self.pongs = endpoint.pongs
        # The id in the connect result: an emulation client's commands come
        # through /emulation with it; a unidirectional client's connect push names it.
        if endpoint.emulation:
            self.session_id = host.emulation_session_id()
        else:
            self.session_id = new_session_id() if endpoint.unidirectional else ""
        self._host = host
        self._sock = sock
        self._fd = sock.fileno()
        self._received = 0
        self._closing = False
        self._closed = False
        self._writer = SocketWriter(sock, host.batcher, host.max_queue_bytes, self._overflow, self.abort)
        self.send = self._writer.send  # the hub calls the writer with no hop through here
        # The head goes out with the first messages, in one write. While the
        # session opens, nothing is written: it may yet refuse the request.
        self.send(response_head(choice.content_type, origin, choice.preamble))
        self._opening = True
        sessions = host.session_host
        self.session: Session = sessions.accept(endpoint.session(sessions, self))
        host.watch(self._fd, self._readable)
        refusal = None
        if choice.refusal is not None:
            self.session.close(choice.refusal)
        elif endpoint.opened is not None:
            refusal = endpoint.opened(self.session, request)
        if refusal is not None:
            self._refuse(refusal, origin)
            return
        self._opening = False
        if self._closing:   # the session ended as it opened: its last message, then the end
            self._closing = False
            self.disconnect(0, "", True)

    def _refuse(self, refusal: HttpRefusal, origin: str | None) -> None:
        """An HTTP error instead of the stream; the session is ended."""
        log.info("%s refused with %d: %s", self.wire.name, refusal.status, refusal.reason)
        self.session.close(vocabulary.BAD_REQUEST)   # nothing if the session ended itself
        self._opening = False
        writer = self._writer
        writer.unbound()   # drop the stream's head and messages
        writer.write(error_response(refusal.status, refusal.reason, origin))
        self._closing = True
        self._host.closing.add(self)
        writer.when_drained(self.abort)

    def disconnect(self, code: int, reason: str, flush: bool) -> None:
        """What is queued (the session's last message last), then the end of
        the response (unless the client is the slow one: then at once)."""
        if self._closing or self._closed:
            return
        if self._opening:
            self._closing = True   # finished once the session has opened (see __init__)
            return
        writer = self._writer
        if not flush:
            self.abort()
            return
        writer.flush_pending()
        if writer.overflowed:
            self.abort()
            return
        self._closing = True
        self._host.closing.add(self)
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
        self._host.closing.discard(self)
        self._host.unwatch(self._fd)
        self._writer.close()
        try:
            self._sock.close()
        except OSError:
            pass
        self.session.transport_closed()

    def _overflow(self) -> None:
        log.warning("client %s: send queue over %d bytes, disconnecting as slow", self.session.client_id or "-",
                    self._host.max_queue_bytes)
        self.session.close(vocabulary.SLOW)


class PathOnlyLogs(tornado.web.RequestHandler):
    """Tornado's own log lines for a request (an HTTPError, an uncaught
    exception) name its URI and, for an exception, the whole request: the
    query string too, where a ``cf_connect`` carries a token. These name the
    path only, like the access log (gateway/app.py)."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        if isinstance(value, tornado.web.HTTPError):
            # Its message may quote the argument it could not read.
            tornado.log.gen_log.warning("%d %s: %s", value.status_code, self._request_summary(),
                                        value.reason or "bad request")
        else:
            tornado.log.app_log.error("Uncaught exception %s", self._request_summary(), exc_info=value)


@tornado.web.stream_request_body
class StreamEndpoint(PathOnlyLogs):
    """What every stream endpoint and ``/emulation`` share: browser origins and
    CORS, admission at the door, a request body of at most
    :data:`MAX_REQUEST_BODY` bytes (413 beyond), and answers that say what
    was wrong."""

    admit = True  # new connections pass the node's admission (not /emulation)
    log_detail = ""  # said after the access log's line (gateway/app.py): why a stream was refused

    def initialize(self, host: TransportHost, **kwargs: Any) -> None:
        self.host = host
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
            refusal = self.host.admit_handshake()
            if refusal is not None:
                self.log_detail = self.host.explain_refusal(refusal)
                self.set_header("Retry-After", "1")
                self.refuse(503, refusal, unread=True)
                return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and over(declared, MAX_REQUEST_BODY):
            self.refuse(413, f"request body over {MAX_REQUEST_BODY} bytes", unread=True)
            return
        # Tornado stops reading (and closes) past this; data_received answers 413 first.
        # (Tornado's server makes HTTP1Connections; its interface has no such method.)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(MAX_REQUEST_BODY + 65536)

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
        if self.host.origin_allowed(origin, self.request.host) and PRINTABLE_ORIGIN.match(origin):
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

    def open_stream(self, endpoint: Endpoint, choice: Choice, request: Request) -> None:
        """Take the connection over from Tornado and start a session on it
        (nothing when the client left while its request was read)."""
        host = self.host
        stream = self.detach()  # Tornado's part ends here
        host.pending.discard(stream)  # a session now, counted against --max-connections
        sock = take_socket(stream)
        # Log the request as answered, and let go of the handler.
        self.set_status(200 if sock is not None else 499)
        self.application.log_request(self)
        self._break_cycles()
        if sock is not None:
            HttpStream(host, endpoint, sock, choice, request, self._origin)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})


class StreamHandler(StreamEndpoint):
    """Serves one stream endpoint: its methods, its refusals, its choice."""

    def initialize(self, host: TransportHost, **kwargs: Any) -> None:
        super().initialize(host)
        self.endpoint: Endpoint = kwargs["endpoint"]

    def get(self) -> None:
        self._serve()

    def post(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if self._finished:
            return
        endpoint = self.endpoint
        if self.request.method not in endpoint.methods:
            self.set_header("Allow", ", ".join(endpoint.methods))
            self.refuse(405, f"{endpoint.path}: {' or '.join(endpoint.methods)}")
            return
        headers: dict[str, str] = {}
        for name, value in self.request.headers.get_all():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = urllib.parse.parse_qs(self.request.query, keep_blank_values=True) if self.request.query else {}
        request = Request(self.request.method or "GET", self.request.path, headers, query, self.body)
        if endpoint.refuse is not None:
            reason = endpoint.refuse(request)
            if reason is not None:
                self.refuse(400, reason)
                return
        self.open_stream(endpoint, endpoint.choose(request), request)
