"""WebSocket transport at ``/cable``: the Action Cable protocol, for the stock
``@rails/actioncable`` client, Turbo, and ``@anycable/web``.

It is the WebSocket transport of ``/connection/websocket`` (the same door:
admission before the upgrade, origins, pending sockets, batched writes) with
another protocol behind it:

* the subprotocol is ``actioncable-v1-json`` or ``actioncable-v1-ext-json``,
  whichever the client offers first. A client that offers neither is refused
  before the upgrade with HTTP 400 and a line that says what to offer: a
  browser that offered subprotocols fails a handshake that selects none
  anyway, so the HTTP answer is the only refusal anybody can read;
* the token comes with the request, AnyCable's way: the ``X-JID`` header, an
  ``anycable-token.<jwt>`` subprotocol (never selected), or ``?jid=`` (what
  an ``action-cable-url`` meta tag carries); a session to restore comes as
  ``X-ANYCABLE-RESTORE-SID`` or ``?sid=``;
* clients do not answer pings; the close frame after a ``disconnect`` message
  is 1000, as Rails sends it (the message is what clients read).
"""
from __future__ import annotations

import logging

from gateway.cable import protocol
from gateway.cable.protocol import BaseCodec, SUBPROTOCOLS, TOKEN_SUBPROTOCOL, V1
from gateway.cable.session import CableSession
from gateway.centrifugo.model import Disconnect
from gateway.transports.base import WireFormat
from gateway.transports.websocket import WebSocketTransport, text_frame

log = logging.getLogger("pushgate.cable")

CABLE = WireFormat("cable", BaseCodec(), text_frame)
REFUSAL = ("/cable speaks the Action Cable protocol: offer the WebSocket subprotocol actioncable-v1-json "
           "(what @rails/actioncable and Turbo offer) or actioncable-v1-ext-json (@anycable/web).\n")


class CableTransport(WebSocketTransport):
    pongs = False

    def initialize(self, node) -> None:
        super().initialize(node)
        self.wire = CABLE
        self._subprotocol = V1
        self._token = ""  # from an anycable-token.<jwt> subprotocol

    async def get(self, *args, **kwargs) -> None:
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() == "websocket":
            offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
            if not any(p in SUBPROTOCOLS for p in offered):
                log.warning("/cable refused a client offering %s", ", ".join(p for p in offered if p and not
                                                                              p.startswith(TOKEN_SUBPROTOCOL))
                            or "no subprotocol")
                self.set_status(400)
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.finish(REFUSAL)
                return
        await super().get(*args, **kwargs)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = None
        for name in subprotocols:
            if name.startswith(TOKEN_SUBPROTOCOL):
                self._token = name[len(TOKEN_SUBPROTOCOL):]
            elif chosen is None and name in SUBPROTOCOLS:
                chosen = name
        self._subprotocol = chosen or V1
        self.wire = CABLE
        return chosen

    def new_session(self) -> CableSession:
        return CableSession(self.node.host, self, self._subprotocol)

    def open(self) -> None:
        super().open()
        if self.session is None:
            return
        headers = self.request.headers
        token = headers.get("X-JID") or self._token or self.get_query_argument("jid", "")
        sid = headers.get("X-AnyCable-Restore-Sid") or self.get_query_argument("sid", "")
        self.session.start(token, sid)  # type: ignore[attr-defined]

    def close_frame(self, disconnect: Disconnect) -> tuple[int, str]:
        return 1000, protocol.disconnect_reason(disconnect)[0]
