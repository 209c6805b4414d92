"""Transports move bytes between a socket and a :class:`gateway.core.session.Session`.

They know the framing of their wire (WebSocket frames, SSE events, ...) and
nothing of the protocol; the session knows the protocol and nothing of them.
"""
