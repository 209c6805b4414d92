"""The session core's own words: why a connection ends, why a subscription
ends, and the input a protocol cannot accept.

Every protocol says these its own way: the Centrifugo protocol as a close
code (3001 "shutdown", 3008 "slow", ...) and an unsubscribe code (2000,
2500, 2501); Action Cable as a ``disconnect`` message with a ``reason`` and
whether to ``reconnect``, or a ``reject_subscription``. The mapping lives in
each protocol's package (``gateway.protocols.centrifugo.model``,
``gateway.protocols.cable.protocol``); nothing here knows a wire code.
"""
from __future__ import annotations

import enum
from typing import NamedTuple


class Reason(enum.Enum):
    """Why the server ends a connection. The value is the reason in plain
    words, and whether the client should come back (it may reconnect and
    succeed) or not (it would only be refused again)."""

    SHUTDOWN = ("shutdown", True)                          # the node drains or stops
    INTERNAL = ("internal server error", True)             # a bug, caught: it costs one connection
    EXPIRED = ("connection expired", True)                 # the connection's credentials ran out
    SUBSCRIPTION_EXPIRED = ("subscription expired", True)  # a server-side subscription's expire_at came
    SLOW = ("slow", True)                                  # the client does not read what it is sent
    WRITE_ERROR = ("write error", True)
    INSUFFICIENT_STATE = ("insufficient state", True)      # this node lost what the client should have had
    FORCE_RECONNECT = ("force reconnect", True)            # the backend asks the client to come back
    NO_PONG = ("no pong", True)
    TOO_MANY_REQUESTS = ("too many requests", True)        # over the command rate
    INVALID_TOKEN = ("invalid token", False)
    BAD_REQUEST = ("bad request", False)                   # input the protocol cannot accept
    STALE = ("stale", False)                               # no connect within the handshake time
    FORCE_DISCONNECT = ("force disconnect", False)         # the backend ends the connection
    CONNECTION_LIMIT = ("connection limit", False)         # the user's connection cap
    CHANNEL_LIMIT = ("channel limit", False)               # too many server-side channels
    INAPPROPRIATE_PROTOCOL = ("inappropriate protocol", False)  # the wrong encoding or subprotocol
    PERMISSION_DENIED = ("permission denied", False)
    NOT_AVAILABLE = ("not available", False)
    TOO_MANY_ERRORS = ("too many errors", False)

    @property
    def words(self) -> str:
        return self.value[0]

    @property
    def reconnect(self) -> bool:
        return self.value[1]

    @property
    def label(self) -> str:
        """The metrics label: ``slow``, ``no_pong``, ..."""
        return self.name.lower()


class Ending(NamedTuple):
    """The end of a connection, as the core decides it: a :class:`Reason`,
    and optionally words for the client in place of the reason's own
    (``detail``, under 123 bytes: it may travel in a WebSocket close frame)
    and an application's own code chosen by the backend (``code``, from the
    server API's ``disconnect``; 0 when there is none). A protocol that has
    codes may carry ``code``; one that has none maps the reason."""

    reason: Reason
    detail: str = ""
    code: int = 0

    @property
    def words(self) -> str:
        return self.detail or self.reason.words

    @property
    def reconnect(self) -> bool:
        return self.reason.reconnect


# One ready-made Ending per reason: most ends say nothing more.
SHUTDOWN = Ending(Reason.SHUTDOWN)
INTERNAL = Ending(Reason.INTERNAL)
EXPIRED = Ending(Reason.EXPIRED)
SUBSCRIPTION_EXPIRED = Ending(Reason.SUBSCRIPTION_EXPIRED)
SLOW = Ending(Reason.SLOW)
WRITE_ERROR = Ending(Reason.WRITE_ERROR)
INSUFFICIENT_STATE = Ending(Reason.INSUFFICIENT_STATE)
FORCE_RECONNECT = Ending(Reason.FORCE_RECONNECT)
NO_PONG = Ending(Reason.NO_PONG)
TOO_MANY_REQUESTS = Ending(Reason.TOO_MANY_REQUESTS)
INVALID_TOKEN = Ending(Reason.INVALID_TOKEN)
BAD_REQUEST = Ending(Reason.BAD_REQUEST)
STALE = Ending(Reason.STALE)
FORCE_DISCONNECT = Ending(Reason.FORCE_DISCONNECT)
CONNECTION_LIMIT = Ending(Reason.CONNECTION_LIMIT)
CHANNEL_LIMIT = Ending(Reason.CHANNEL_LIMIT)
INAPPROPRIATE_PROTOCOL = Ending(Reason.INAPPROPRIATE_PROTOCOL)
PERMISSION_DENIED = Ending(Reason.PERMISSION_DENIED)
NOT_AVAILABLE = Ending(Reason.NOT_AVAILABLE)
TOO_MANY_ERRORS = Ending(Reason.TOO_MANY_ERRORS)


class SubscriptionEnd(enum.Enum):
    """Why the server ends one subscription while the connection stays. The
    value: the reason in plain words, and whether the client should subscribe
    again (recovering what it can) or let it go."""

    SERVER = ("server unsubscribe", False)           # the backend ended it (server API)
    INSUFFICIENT_STATE = ("insufficient state", True)  # this node lost a publication of it
    EXPIRED = ("subscription expired", True)         # its credentials ran out

    @property
    def words(self) -> str:
        return self.value[0]

    @property
    def resubscribe(self) -> bool:
        return self.value[1]


class ProtocolError(Exception):
    """Input the protocol cannot accept; the answer is the end of the
    connection (``ending``, BAD_REQUEST unless the protocol says otherwise)."""

    def __init__(self, detail: str, ending: Ending = BAD_REQUEST):
        super().__init__(detail)
        self.detail = detail
        self.ending = ending


class Refusal(NamedTuple):
    """Why a session did not do what the server asked of it (a server-side
    subscribe its protocol cannot express, say): said back to the caller."""

    reason: str
