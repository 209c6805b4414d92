"""What a protocol registers with the transports: its endpoints.

An :class:`Endpoint` is a path, the transport that serves it (a WebSocket,
or an HTTP stream: http_stream, SSE, the unidirectional streams), how a
connection there chooses its wire format from the request (:class:`Choice`),
and the protocol's session. The transports know nothing else of the
protocol: they read the request, answer the handshake, move bytes, and hand
the session what it needs of the request once the connection is open
(``opened``). A protocol is its session, its codecs and a list of endpoints
(``gateway/protocols/*/endpoints.py``), registered once in
``gateway/protocols/__init__.py``.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    from gateway.core.host import SessionHost
    from gateway.core.session import Session
    from gateway.core.vocabulary import Ending
    from gateway.core.wire import Transport, WireFormat


class Kind(enum.Enum):
    """The transport that serves an endpoint."""

    WEBSOCKET = "websocket"     # gateway/transports/websocket.py, on the lean path
    STREAM = "stream"           # gateway/transports/http.py: a streamed HTTP response


class Request(NamedTuple):
    """What an endpoint sees of the client's request."""

    method: str
    path: str
    headers: dict[str, str]         # lower-case names; a repeated header's values joined with ", "
    query: dict[str, list[str]]
    body: bytes = b""               # an HTTP stream's request body (at most 64 KB)
    offered: tuple[str, ...] = ()   # WebSocket subprotocols offered, in order
    target: str = ""                # the request target as sent: path and query string
    peer: str = ""                  # the client's address (a trusted proxy's X-Forwarded-For believed)

    def arg(self, name: str) -> str:
        """The last value of query argument ``name``, or ""."""
        values = self.query.get(name)
        return values[-1] if values else ""


class Choice(NamedTuple):
    """What an endpoint makes of a request: the wire format; the subprotocol to
    echo (WebSocket) or the response's content type and first bytes (an HTTP
    stream); and a refusal to close with at once (for a WebSocket client that
    offered only subprotocols the endpoint does not speak: the SDKs show a
    close reason, where a refused handshake would make them retry forever)."""

    wire: WireFormat
    subprotocol: str | None = None
    refusal: Ending | None = None
    content_type: str = ""
    preamble: bytes = b""


class HttpRefusal(NamedTuple):
    """An HTTP stream's session refused at once (an unauthorized token, a
    subscription it may not have): answered with this status instead of the
    stream, as AnyCable answers its SSE clients."""

    status: int
    reason: str


SessionFactory = Callable[["SessionHost", "Transport"], "Session"]
Opened = Callable[["Session", Request], "HttpRefusal | None"]


class Endpoint:
    """One path a protocol serves on one transport.

    * ``choose(request)``: the wire format (and subprotocol, content type);
    * ``session(host, transport)``: the protocol's session for a connection;
    * ``refuse(request)``: a reason to answer HTTP 400 before anything opens
      (a request that can only fail: a missing connect command, an offer of
      subprotocols a browser would fail the handshake on), or None;
    * ``opened(session, request)``: the connection is open and accepted by the
      host: hand the session what it needs of the request (a connect command,
      a token, a subscription), or None when it waits for frames. On an HTTP
      stream, it may answer an :class:`HttpRefusal` instead of the stream;
    * ``methods``: the HTTP methods of a stream endpoint;
    * ``busy(host, request)``: a reason to answer HTTP 503 before the upgrade
      (what the connection would need is saturated: the client retries with
      back-off), or None;
    * ``pongs``: the client answers pings; ``unidirectional``: it sends no
      commands after connect; ``emulation``: its later commands arrive apart
      from the stream (``/emulation``), addressed by its session id.
    """

    __slots__ = ("path", "kind", "choose", "session", "refuse", "opened", "methods", "pongs", "unidirectional",
                 "emulation", "busy")

    def __init__(self, path: str, kind: Kind, choose: Callable[[Request], Choice], session: SessionFactory, *,
                 refuse: Callable[[Request], str | None] | None = None,
                 opened: Opened | None = None,
                 methods: tuple[str, ...] = ("GET",), pongs: bool = True, unidirectional: bool = False,
                 emulation: bool = False, busy: Callable[[SessionHost, Request], str | None] | None = None):
        self.path = path
        self.kind = kind
        self.choose = choose
        self.session = session
        self.refuse = refuse
        self.opened = opened
        self.methods = methods
        self.pongs = pongs
        self.unidirectional = unidirectional
        self.emulation = emulation
        self.busy = busy

    def __repr__(self) -> str:
        return f"<Endpoint {self.kind.value} {self.path}>"
