"""Where the Action Cable protocol is served: ``/cable``, a WebSocket for the
stock ``@rails/actioncable`` client, Turbo, and ``@anycable/web``; and
``/events``, Server-Sent Events as AnyCable serves them (:mod:`.sse`).

``/cable`` is the same door and the same connection as
``/connection/websocket`` (:mod:`gateway.transports.websocket`), with
another protocol behind it:

* the subprotocol is ``actioncable-v1-json`` or ``actioncable-v1-ext-json``,
  whichever the client offers first. A client that offers neither is refused
  before the upgrade with HTTP 400 saying what to offer: a browser that
  offered subprotocols fails a handshake that selects none by itself, so the
  HTTP answer is the only refusal anybody can read;
* the token comes with the request, AnyCable's way: the ``X-JID`` header, an
  ``anycable-token.<jwt>`` subprotocol (read, never selected), or ``?jid=``
  (what an ``action-cable-url`` meta tag carries); a session to restore comes
  as ``X-AnyCable-Restore-Sid`` or ``?sid=``;
* clients do not answer pings.
"""

from __future__ import annotations

from gateway.core.host import SessionHost
from gateway.core.session import Session
from gateway.core.wire import Transport, WireFormat
from gateway.protocols.cable import sse
from gateway.protocols.cable.protocol import EXT, SUBPROTOCOLS, TOKEN_SUBPROTOCOL, V1, BaseCodec
from gateway.protocols.cable.rpc_session import RpcCableSession, rpc_client_of
from gateway.protocols.cable.session import CableSession
from gateway.transports.endpoint import Choice, Endpoint, HttpRefusal, Kind, Request
from gateway.transports.wsproto import text_frame

CABLE_V1 = WireFormat("cable", BaseCodec(), text_frame)
CABLE_EXT = WireFormat("cable-ext", BaseCodec(), text_frame)
REFUSAL = ("/cable speaks the Action Cable protocol: offer the WebSocket subprotocol actioncable-v1-json "
           "(what @rails/actioncable and Turbo offer) or actioncable-v1-ext-json (@anycable/web)")


def refuse(request: Request) -> str | None:
    return None if any(name in SUBPROTOCOLS for name in request.offered) else REFUSAL


def choose(request: Request) -> Choice:
    for name in request.offered:
        if name == EXT:
            return Choice(CABLE_EXT, EXT)
        if name == V1:
            return Choice(CABLE_V1, V1)
    return Choice(CABLE_V1, None)  # not reached: refused before the upgrade


def token_of(request: Request) -> str:
    """The connection's JWT, AnyCable's way: ``X-JID``, an ``anycable-token.``
    subprotocol (read, never selected), or ``?jid=``."""
    token = request.headers.get("x-jid", "")
    if not token:
        for name in request.offered:
            if name.startswith(TOKEN_SUBPROTOCOL):
                token = name[len(TOKEN_SUBPROTOCOL):]
                break
    return token or request.arg("jid")


def opened(session: Session, request: Request) -> HttpRefusal | None:
    assert isinstance(session, CableSession)
    token = token_of(request)
    if not token and isinstance(session, RpcCableSession):
        session.start_rpc(request)   # no JWT: the Rails app decides (--cable-rpc-url)
        return None
    sid = request.headers.get("x-anycable-restore-sid", "") or request.arg("sid")
    if isinstance(session, RpcCableSession):
        session.start_jwt(request, token, sid)   # an AnyCable token's identifiers reach the app's channels
    else:
        session.start(token, sid)
    return None


def busy(host: SessionHost, request: Request) -> str | None:
    """A connect the Rails app would decide, while its RPC calls fill every
    slot and the queue: 503 at once, before the upgrade."""
    if host.settings.cable_rpc_url and not token_of(request) and rpc_client_of(host).caller.full:
        rpc_client_of(host).caller.shed("a /cable connect answered 503")
        return "the Rails app's RPC calls fill --cable-rpc-concurrency and --cable-rpc-queue; retry"
    return None


def new_session(host: SessionHost, transport: Transport) -> CableSession:
    subprotocol = EXT if transport.wire is CABLE_EXT else V1
    if host.settings.cable_rpc_url:
        return RpcCableSession(host, transport, subprotocol)
    return CableSession(host, transport, subprotocol)


ENDPOINTS = [
    Endpoint("/cable", Kind.WEBSOCKET, choose, new_session, refuse=refuse, opened=opened, pongs=False, busy=busy),
    sse.EVENTS,
]
