"""The Centrifugo client protocol's model, apart from any encoding: commands,
reply errors, and the disconnect and unsubscribe codes that say the session
core's reasons (:mod:`gateway.core.vocabulary`) on this protocol's wire. The
codes are the reference's (``centrifugo-protocol.md`` §8).
"""
from __future__ import annotations

from typing import NamedTuple

from gateway.core.vocabulary import Ending, ProtocolError, Reason, SubscriptionEnd

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
# Map subscriptions and publishes, and sub_refresh's track/untrack (the
# protocol's ``type`` fields): pushgate has no maps, so they are refused
# rather than served as the plain stream they would otherwise look like.
ERROR_NO_MAPS = Error(108, "not available: map subscriptions and publishes (type, key, removed)")
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

# The core's reasons as close codes. An Ending with an application's own
# code (the server API's disconnect) keeps it.
CODES: dict[Reason, Disconnect] = {
    Reason.SHUTDOWN: DISCONNECT_SHUTDOWN,
    Reason.INTERNAL: DISCONNECT_INTERNAL,
    Reason.EXPIRED: DISCONNECT_EXPIRED,
    Reason.SUBSCRIPTION_EXPIRED: DISCONNECT_SUBSCRIPTION_EXPIRED,
    Reason.SLOW: DISCONNECT_SLOW,
    Reason.WRITE_ERROR: DISCONNECT_WRITE_ERROR,
    Reason.INSUFFICIENT_STATE: DISCONNECT_INSUFFICIENT_STATE,
    Reason.FORCE_RECONNECT: DISCONNECT_FORCE_RECONNECT,
    Reason.NO_PONG: DISCONNECT_NO_PONG,
    Reason.TOO_MANY_REQUESTS: DISCONNECT_TOO_MANY_REQUESTS,
    Reason.INVALID_TOKEN: DISCONNECT_INVALID_TOKEN,
    Reason.BAD_REQUEST: DISCONNECT_BAD_REQUEST,
    Reason.STALE: DISCONNECT_STALE,
    Reason.FORCE_DISCONNECT: DISCONNECT_FORCE_DISCONNECT,
    Reason.CONNECTION_LIMIT: DISCONNECT_CONNECTION_LIMIT,
    Reason.CHANNEL_LIMIT: DISCONNECT_CHANNEL_LIMIT,
    Reason.INAPPROPRIATE_PROTOCOL: DISCONNECT_INAPPROPRIATE_PROTOCOL,
    Reason.PERMISSION_DENIED: DISCONNECT_PERMISSION_DENIED,
    Reason.NOT_AVAILABLE: DISCONNECT_NOT_AVAILABLE,
    Reason.TOO_MANY_ERRORS: DISCONNECT_TOO_MANY_ERRORS,
}


def disconnect_of(ending: Ending) -> Disconnect:
    """The close code and reason that say ``ending`` on this protocol's wire."""
    if ending.code:
        return Disconnect(ending.code, ending.words)
    standard = CODES[ending.reason]
    return standard if not ending.detail else Disconnect(standard.code, ending.detail)


# Unsubscribe push codes: below 2500 terminal for the subscription, from 2500
# the SDKs resubscribe (recovering what they can).
UNSUBSCRIBE_CODES: dict[SubscriptionEnd, tuple[int, str]] = {
    SubscriptionEnd.SERVER: (2000, "server unsubscribe"),
    SubscriptionEnd.INSUFFICIENT_STATE: (2500, "insufficient state"),
    SubscriptionEnd.EXPIRED: (2501, "subscription expired"),
}


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
