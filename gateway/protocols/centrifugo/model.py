"""The Centrifugo client protocol's model, apart from any encoding: commands,
reply errors, disconnect codes and the protocol errors that end a
connection. The codes are the reference's (``centrifugo-protocol.md`` §8);
the session core uses them as its vocabulary for every protocol (the Action
Cable session maps them to its own messages).
"""
from __future__ import annotations

from typing import NamedTuple

# Every command the protocol defines, in the order the Go server checks them
# ("the first present wins").
METHODS = (
    "connect", "subscribe", "unsubscribe", "publish", "presence",
    "presence_stats", "history", "ping", "send", "rpc", "refresh", "sub_refresh",
)
METHOD_SET = frozenset(METHODS)
MAX_COMMAND_ID = 2**32 - 1


class Error(NamedTuple):
    """A reply error; the connection stays up."""

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
    """The end of a connection: a code and a reason (a WebSocket close frame,
    or a disconnect push on streams).

    The code decides what the SDKs do next: 3500-3999 and 4500-4999 are
    terminal, every other code >= 3000 makes them reconnect with backoff.
    The reason is plain words under 123 bytes: some SDKs first try to read it
    as legacy JSON.
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

# Unsubscribe push codes: below 2500 terminal for the subscription, from 2500
# the SDKs resubscribe (recovering what they can).
UNSUBSCRIBE_SERVER = (2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE = (2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = (2501, "subscription expired")


class ProtocolError(Exception):
    """Input the protocol cannot accept; the answer is a disconnect."""

    def __init__(self, detail: str, disconnect: Disconnect = DISCONNECT_BAD_REQUEST):
        super().__init__(detail)
        self.detail = detail
        self.disconnect = disconnect


class Command(NamedTuple):
    """One client command, whatever its encoding. ``method`` is ``""`` for a
    pong (the empty command); ``params`` holds the request's fields by their
    JSON names, only those present. Payloads (``data``) are JSON values from a
    JSON client and bytes from a Protobuf one."""

    id: int
    method: str
    params: dict


PONG = Command(0, "", {})


def check_command(cmd_id: object, method: str | None, params: object) -> Command:
    """The rules every encoding shares: a valid id, a known method with
    params, an id on everything but ``send`` (and the pong)."""
    if type(cmd_id) is not int or not 0 <= cmd_id <= MAX_COMMAND_ID:
        raise ProtocolError("bad command id")
    if method is None:
        if cmd_id:
            raise ProtocolError("command without a method")
        return PONG
    if type(params) is not dict:
        raise ProtocolError(f"{method}: params must be an object")
    if cmd_id == 0 and method != "send":
        raise ProtocolError(f"{method}: command without id")
    return Command(cmd_id, method, params)
