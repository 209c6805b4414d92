"""Centrifugo client protocol v2 (JSON), sans I/O.

This module turns client frames into :class:`Command` tuples and builds the
server's replies and pushes as JSON bytes. It does no I/O and holds no state,
so the session, the hub and every transport share one definition of the wire.

The rules that keep the stock SDKs (centrifuge-js, centrifuge-python) working
are the ones in ``centrifugo-protocol.md``: several ``\\n``-separated commands
per frame, processed in order; every reply carries its result key even when
empty; errors always carry ``message``; payloads are embedded raw JSON with no
raw newline.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import ujson

# Every command name the protocol defines, in the order the Go server checks
# them ("the first non-null wins").
METHODS = (
    "connect", "subscribe", "unsubscribe", "publish", "presence",
    "presence_stats", "history", "ping", "send", "rpc", "refresh", "sub_refresh",
)
_METHOD_SET = frozenset(METHODS)
MAX_COMMAND_ID = 2**32 - 1


class Error(NamedTuple):
    """A reply error (``{"id":N,"error":{...}}``); the connection stays up."""

    code: int
    message: str
    temporary: bool = False


ERROR_INTERNAL = Error(100, "internal server error", True)
ERROR_UNAUTHORIZED = Error(101, "unauthorized")
ERROR_UNKNOWN_CHANNEL = Error(102, "unknown channel")
ERROR_PERMISSION_DENIED = Error(103, "permission denied")
ERROR_METHOD_NOT_FOUND = Error(104, "method not found")
ERROR_ALREADY_SUBSCRIBED = Error(105, "already subscribed")
ERROR_LIMIT_EXCEEDED = Error(106, "limit exceeded")
ERROR_BAD_REQUEST = Error(107, "bad request")
ERROR_NOT_AVAILABLE = Error(108, "not available")
ERROR_TOKEN_EXPIRED = Error(109, "token expired")
ERROR_EXPIRED = Error(110, "expired")
ERROR_TOO_MANY_REQUESTS = Error(111, "too many requests", True)
ERROR_UNRECOVERABLE_POSITION = Error(112, "unrecoverable position")


class Disconnect(NamedTuple):
    """A close of the connection: the WebSocket close code and reason.

    The code decides what the SDKs do next: 3500-3999 and 4500-4999 are
    terminal, every other code >= 3000 makes them reconnect with backoff.
    """

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code <= 3999 or 4500 <= self.code <= 4999)


DISCONNECT_SHUTDOWN = Disconnect(3001, "shutdown")
DISCONNECT_INTERNAL = Disconnect(3004, "internal server error")
DISCONNECT_EXPIRED = Disconnect(3005, "connection expired")
DISCONNECT_SUBSCRIPTION_EXPIRED = Disconnect(3006, "subscription expired")
DISCONNECT_SLOW = Disconnect(3008, "slow")
DISCONNECT_WRITE_ERROR = Disconnect(3009, "write error")
DISCONNECT_INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
DISCONNECT_FORCE_RECONNECT = Disconnect(3011, "force reconnect")
DISCONNECT_NO_PONG = Disconnect(3012, "no pong")
DISCONNECT_TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
DISCONNECT_INVALID_TOKEN = Disconnect(3500, "invalid token")
DISCONNECT_BAD_REQUEST = Disconnect(3501, "bad request")
DISCONNECT_STALE = Disconnect(3502, "stale")
DISCONNECT_FORCE_DISCONNECT = Disconnect(3503, "force disconnect")
DISCONNECT_CONNECTION_LIMIT = Disconnect(3504, "connection limit")
DISCONNECT_CHANNEL_LIMIT = Disconnect(3505, "channel limit")
DISCONNECT_INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
DISCONNECT_PERMISSION_DENIED = Disconnect(3507, "permission denied")
DISCONNECT_NOT_AVAILABLE = Disconnect(3508, "not available")
DISCONNECT_TOO_MANY_ERRORS = Disconnect(3509, "too many errors")


class ProtocolError(Exception):
    """A frame the protocol cannot accept; the answer is a disconnect."""

    def __init__(self, detail: str, disconnect: Disconnect = DISCONNECT_BAD_REQUEST):
        super().__init__(detail)
        self.detail = detail
        self.disconnect = disconnect


class Command(NamedTuple):
    """One client command. ``method`` is ``""`` for a pong (the empty ``{}``)."""

    id: int
    method: str
    params: dict


PONG = Command(0, "", {})


def parse_frame(text: str) -> list[Command]:
    """Split a text frame into commands, in order.

    Raises :class:`ProtocolError` for anything that is not a sequence of
    protocol commands: bad JSON, a non-object, an unknown method, a bad id.
    """
    commands = []
    for line in text.split("\n"):
        if not line or line.isspace():
            continue
        try:
            obj = ujson.loads(line)
        except (ValueError, OverflowError):
            raise ProtocolError("malformed JSON") from None
        commands.append(_command(obj))
    return commands


def _command(obj: Any) -> Command:
    if type(obj) is not dict:
        raise ProtocolError("command is not an object")
    cmd_id = obj.get("id", 0)
    if type(cmd_id) is not int or not 0 <= cmd_id <= MAX_COMMAND_ID:
        raise ProtocolError("bad command id")
    for key, value in obj.items():
        if key in _METHOD_SET and value is not None:
            if type(value) is not dict:
                raise ProtocolError(f"{key}: params must be an object")
            if cmd_id == 0 and key != "send":
                raise ProtocolError(f"{key}: command without id")
            return Command(cmd_id, key, value)
    if cmd_id == 0 and all(k == "id" or k in _METHOD_SET for k in obj):
        return PONG
    raise ProtocolError("unknown command")


# --- building server messages --------------------------------------------------

def dumps(obj: Any) -> str:
    """Compact JSON with no raw newline (ujson escapes control characters)."""
    return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False)


class Raw(bytes):
    """Bytes that are already JSON (a stored publication): embedded as they are."""


def encode(obj: Any) -> bytes:
    """JSON bytes of ``obj``, with any :class:`Raw` value embedded untouched."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if isinstance(obj, dict):
        if not any(isinstance(v, (Raw, dict, list)) for v in obj.values()):
            return dumps(obj).encode()
        return b"{" + b",".join(dumps(k).encode() + b":" + encode(v) for k, v in obj.items()) + b"}"
    if isinstance(obj, list) and any(isinstance(v, (Raw, dict, list)) for v in obj):
        return b"[" + b",".join(encode(v) for v in obj) + b"]"
    return dumps(obj).encode()


def reply(cmd_id: int, method: str, result: dict | None = None) -> bytes:
    """A successful reply. The result key is always present, even when empty."""
    return encode({"id": cmd_id, method: result or {}})


def error_reply(cmd_id: int, error: Error) -> bytes:
    body = {"code": error.code, "message": error.message}
    if error.temporary:
        body["temporary"] = True
    return dumps({"id": cmd_id, "error": body}).encode()


def publication(data: bytes, offset: int | None = None) -> Raw:
    """An encoded Publication object from its data (JSON bytes) and offset."""
    if offset is None:
        return Raw(b'{"data":%s}' % data)
    return Raw(b'{"data":%s,"offset":%d}' % (data, offset))


def pub_push(channel: str, publication: bytes) -> bytes:
    """A publication push; ``publication`` is the encoded Publication object
    (``{"data":...,"offset":...}``).

    Built by concatenation so the payload is embedded as it is, never parsed
    or re-encoded again on the way out.
    """
    return b"".join((b'{"push":{"channel":', dumps(channel).encode(), b',"pub":', publication, b"}}"))


def unsubscribe_push(channel: str, code: int, reason: str) -> bytes:
    return dumps({"push": {"channel": channel, "unsubscribe": {"code": code, "reason": reason}}}).encode()


UNSUBSCRIBE_INSUFFICIENT_STATE = (2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = (2501, "subscription expired")


# The server ping: an empty reply. Clients answer with the empty command.
PING = b"{}"
