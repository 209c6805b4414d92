"""What a transport may use of its node: the transport host.

A transport accepts a socket, reads and writes it, and hands what arrives to
a session. For that it needs the event loop's readiness callbacks, the write
batcher, the registry of closing connections and the pending-socket count,
the door's rules (admission, browser origins, trusted proxies), the send
queue's bound, and the session host to create sessions with. Nothing else:
no NSQ, no cluster, no settings object. :class:`gateway.node.Node` satisfies
this protocol.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from gateway.core.host import SessionHost
    from gateway.transports.door import PendingConnections
    from gateway.transports.stream import Closing, WriteBatcher


class TransportHost(Protocol):
    batcher: WriteBatcher        # one flush for every connection's queued frames
    closing: Closing             # connections finishing their close, cut after CLOSE_WAIT
    pending: PendingConnections  # sockets that are not sessions yet

    @property
    def session_host(self) -> SessionHost:
        """Where sessions are created and accepted."""

    @property
    def max_queue_bytes(self) -> int:
        """A connection's send queue, at most (past it: cut as slow)."""

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` whenever ``fd`` can be read."""

    def unwatch(self, fd: int) -> None: ...

    def admit_handshake(self) -> str | None:
        """None when a new connection may start, else why not (HTTP 503)."""

    def explain_refusal(self, reason: str) -> str:
        """A refusal of admit_handshake in words, naming the limit, for the log."""

    def origin_allowed(self, origin: str, host: str) -> bool: ...

    def client_address(self, peer: str, forwarded_for: str, real_ip: str) -> str:
        """The client's address: the peer's, or a trusted proxy's word for it."""

    def emulation_session_id(self) -> str:
        """A new id for an emulated stream's session: one the node can vouch
        for to the others (gateway.core.wire.SessionIds)."""
