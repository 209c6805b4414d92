"""Transports move bytes between a socket and a session, and know no protocol:
the door (accepting TCP, reading request heads), the WebSocket transport and
its frame parser, the HTTP stream transport, and the write path they share.
They see the node only as a :class:`~gateway.transports.host.TransportHost`
and serve the :class:`~gateway.transports.endpoint.Endpoint`\\ s the protocols
register."""
