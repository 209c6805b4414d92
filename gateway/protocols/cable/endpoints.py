"""The WebSocket transport's Action Cable endpoint: ``/cable``, for the stock
``@rails/actioncable`` client, Turbo, and ``@anycable/web``.

The same door and the same connection as ``/connection/websocket``
(:mod:`gateway.transports.websocket`), with another protocol behind it:

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

from gateway.protocols.cable.protocol import EXT, SUBPROTOCOLS, TOKEN_SUBPROTOCOL, V1, BaseCodec
from gateway.protocols.cable.session import CableSession
from gateway.core.wire import WireFormat
from gateway.transports.websocket import Choice, Endpoint
from gateway.protocols.centrifugo.websocket import text_frame

CABLE_V1 = WireFormat("cable", BaseCodec(), text_frame)
CABLE_EXT = WireFormat("cable-ext", BaseCodec(), text_frame)
REFUSAL = ("/cable speaks the Action Cable protocol: offer the WebSocket subprotocol actioncable-v1-json "
           "(what @rails/actioncable and Turbo offer) or actioncable-v1-ext-json (@anycable/web)")


def unacceptable(offered: list[str]) -> str | None:
    return None if any(name in SUBPROTOCOLS for name in offered) else REFUSAL


def choose(offered: list[str], query: dict[str, list[str]]) -> Choice:
    for name in offered:
        if name == EXT:
            return Choice(CABLE_EXT, EXT)
        if name == V1:
            return Choice(CABLE_V1, V1)
    return Choice(CABLE_V1, None)  # not reached: refused before the upgrade


def _first(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    return values[-1] if values else ""


def opened(session: CableSession, headers: dict[str, str], query: dict[str, list[str]]) -> None:
    token = headers.get("x-jid", "")
    if not token:
        for name in headers.get("sec-websocket-protocol", "").split(","):
            name = name.strip()
            if name.startswith(TOKEN_SUBPROTOCOL):
                token = name[len(TOKEN_SUBPROTOCOL):]
                break
    token = token or _first(query, "jid")
    sid = headers.get("x-anycable-restore-sid", "") or _first(query, "sid")
    session.start(token, sid)


def new_session(host, transport) -> CableSession:
    return CableSession(host, transport, EXT if transport.wire is CABLE_EXT else V1)


CABLE = Endpoint("/cable", choose, new_session, pongs=False, unacceptable=unacceptable, opened=opened)
