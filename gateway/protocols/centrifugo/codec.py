"""The interface both encodings of the Centrifugo protocol implement.

A codec turns client input into :class:`Command` tuples and builds the
server's messages as bytes: one *message* each, in the encoding's own stream
form (a JSON object; a varint-length-delimited Protobuf ``Reply``). Putting
messages on the wire (a WebSocket frame, a line of an HTTP stream, an SSE
event) is the transport's framing, not the codec's.

Results are plain dicts keyed by the protocol's JSON field names, the same
for both encodings; publications in them are
:class:`gateway.core.history.Publication` (offset, JSON data bytes). A value the
encoding would drop as empty but an SDK indexes directly (``client``,
``ttl``, an error's ``message``) is always set by the session.

The hot path is :meth:`Codec.pub_push`: the hub calls it once per
publication and per encoding, and every subscriber of that encoding gets the
same bytes.
"""
from __future__ import annotations

from typing import Protocol

from gateway.core.history import Published
from gateway.protocols.centrifugo.model import Command, Disconnect, Error


class Codec(Protocol):
    name: str        # "json" or "protobuf"
    binary: bool     # carried in binary WebSocket frames
    ping: bytes      # the server ping: an empty reply (or push, unidirectional)

    def count(self, data: str | bytes) -> int:
        """An upper bound of the commands in ``data``, cheap, before decoding:
        the rate limit counts them before they cost anything."""

    def decode(self, data: str | bytes) -> list[Command]:
        """Every command in ``data``, in order; raises ProtocolError."""

    def reply(self, cmd_id: int, method: str, result: dict | None = None) -> bytes:
        """A successful reply; the result is present even when empty."""

    def error(self, cmd_id: int, error: Error) -> bytes: ...

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        """A publication push: ``data`` is JSON bytes, ``offset`` None when the
        publication has no position."""

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        """:meth:`pub_push` of a publication with extras: the publisher's
        ClientInfo (a client's publication, through the publish proxy), tags,
        binary data (None when this encoding cannot carry it: JSON and bytes
        that are not JSON)."""

    def push(self, channel: str, kind: str, body: dict) -> bytes:
        """Any other push (``unsubscribe``, ``subscribe``, ``join``, ``leave``,
        ``message``, ``refresh``, ``connect``, ``disconnect``)."""

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None:
        """:meth:`push`, as the hub asks for ``join`` and ``leave``."""

    def disconnect(self, disconnect: Disconnect) -> bytes:
        """The disconnect push, for transports without close frames."""
