"""The client protocols, each over every transport it is served on.

A protocol is a session (a :class:`gateway.core.session.Session` subclass),
its codecs, and its endpoints (``endpoints.py``). Registering it is one line
here: the node serves every endpoint listed, WebSocket ones on the lean path
(gateway/transports/websocket.py) and streams through Tornado
(gateway/transports/http.py).
"""
from __future__ import annotations

from gateway.protocols.cable import endpoints as cable
from gateway.protocols.centrifugo import endpoints as centrifugo
from gateway.transports.endpoint import Endpoint

ENDPOINTS: list[Endpoint] = [*centrifugo.ENDPOINTS, *cable.ENDPOINTS]
