"""The Action Cable protocol on the wire, sans I/O: client commands in, the
server's messages out, as bytes.

Two subprotocols share it:

* ``actioncable-v1-json``, exactly what Rails sends: ``welcome``, a ``ping``
  with the Unix time every 3 s, ``confirm_subscription`` /
  ``reject_subscription`` echoing the client's identifier, data as
  ``{"identifier":…,"message":…}``, and ``disconnect`` with a ``reason`` and
  whether to ``reconnect``;
* ``actioncable-v1-ext-json``, AnyCable's extension: ``welcome`` carries a
  session id (and, after a restore, ``restored`` and ``restored_ids``), data
  carries its stream position (``stream_id``, ``epoch``, ``offset``), and
  ``history`` requests are answered with the missed messages and
  ``confirm_history``, or ``reject_history`` when they cannot be vouched for.

The client matches messages to subscriptions by the identifier's exact
string (``===`` in JavaScript), so the identifier is kept as decoded from
the client's frame and encoded again as a JSON string: the same string,
whatever escaping the client used (Rails does the same).

Every message of a subscription echoes its identifier, so a publication is
rendered once per identifier (:class:`IdentifierCodec`), not once per
protocol: subscribers that share an identifier (every viewer of one Turbo
stream) share the bytes.
"""
from __future__ import annotations

from typing import Any, Callable

import ujson

from gateway.core.vocabulary import Ending, ProtocolError, Reason
from gateway.core.history import PERIOD_NS, Published

V1 = "actioncable-v1-json"
EXT = "actioncable-v1-ext-json"
SUBPROTOCOLS = (V1, EXT)
TOKEN_SUBPROTOCOL = "anycable-token."  # AnyCable's way to carry the JWT in Sec-WebSocket-Protocol

# Commands that name a subscription. "message" (a Ruby channel's action),
# "whisper", "join", "leave" and "presence" are AnyCable's; pushgate runs no
# channel code and keeps no presence, so they are accepted and ignored.
WITH_IDENTIFIER = frozenset(("subscribe", "unsubscribe", "history", "message", "whisper", "join", "leave",
                             "presence"))
# The latest ``since`` of a history request, in Unix seconds (the year 33658):
# a larger number is not a time, and one past what a float holds cannot even
# be turned into a position.
MAX_SINCE = 10**12


def quote(text: str) -> bytes:
    """``text`` as a JSON string (UTF-8, no raw control characters); raises
    ValueError for a string JSON cannot carry (a lone surrogate)."""
    try:
        return ujson.dumps(text, ensure_ascii=False, escape_forward_slashes=False).encode()
    except (UnicodeEncodeError, OverflowError):
        raise ValueError("not representable as JSON") from None


def json_text(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; raises ValueError for what browsers'
    JSON.parse would refuse (NaN, Infinity, a lone surrogate)."""
    try:
        return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False).encode()
    except (UnicodeEncodeError, OverflowError):
        raise ValueError("not representable as JSON") from None


# --- client to server ----------------------------------------------------------------

def parse(data: str | bytes) -> dict[str, Any]:
    """One client command: a JSON object with a string ``command`` (and a string
    ``identifier`` for the commands that name a subscription). Raises
    ProtocolError for anything else."""
    try:
        command = ujson.loads(data)
    except (ValueError, OverflowError):
        raise ProtocolError("malformed JSON") from None
    if type(command) is not dict:
        raise ProtocolError("a command must be a JSON object")
    name = command.get("command")
    if not isinstance(name, str):
        raise ProtocolError('a command needs a "command" string')
    if name in WITH_IDENTIFIER:
        identifier = command.get("identifier")
        if not isinstance(identifier, str):
            raise ProtocolError(f'{name}: "identifier" must be a string')
        try:
            quote(identifier)
        except ValueError:
            raise ProtocolError(f"{name}: the identifier holds a lone surrogate") from None
    history = command.get("history")
    if type(history) is dict:
        since = history.get("since")
        # Anything but a number is ignored, as before (@anycable/web sends false
        # when asked not to use it); a number must be a time.
        if isinstance(since, (int, float)) and not isinstance(since, bool) and not abs(since) <= MAX_SINCE:
            raise ProtocolError(f"{name}: history since is not a time (Unix seconds)")
    return command


# --- server to client ----------------------------------------------------------------

def welcome(sid: str = "", restored_ids: list[str] | None = None) -> bytes:
    if not sid:
        return b'{"type":"welcome"}'
    if restored_ids is None:
        return b'{"type":"welcome","sid":%s}' % quote(sid)
    ids = b",".join(quote(i) for i in restored_ids)
    return b'{"type":"welcome","sid":%s,"restored":true,"restored_ids":[%s]}' % (quote(sid), ids)


def ping(unix_seconds: int) -> bytes:
    return b'{"type":"ping","message":%d}' % unix_seconds


def _typed(kind: bytes) -> Callable[[str], bytes]:
    def message(identifier: str) -> bytes:
        return b'{"identifier":%s,"type":"%s"}' % (quote(identifier), kind)
    return message


confirm = _typed(b"confirm_subscription")
reject = _typed(b"reject_subscription")
confirm_history = _typed(b"confirm_history")
reject_history = _typed(b"reject_history")


def disconnect(reason: str, reconnect: bool) -> bytes:
    return b'{"type":"disconnect","reason":%s,"reconnect":%s}' % (quote(reason), b"true" if reconnect else b"false")


# The core's reasons, as Action Cable clients read them: a reason and
# whether to reconnect. Rails' own reasons where it has one (unauthorized,
# invalid_request, server_restart, remote), AnyCable's token_expired,
# otherwise the core's words in Rails' style.
_REASONS = {
    Reason.SHUTDOWN: "server_restart",
    Reason.EXPIRED: "token_expired",
    Reason.FORCE_RECONNECT: "remote",
    Reason.FORCE_DISCONNECT: "remote",
    Reason.INVALID_TOKEN: "unauthorized",
    Reason.BAD_REQUEST: "invalid_request",
    Reason.INAPPROPRIATE_PROTOCOL: "invalid_request",
}


def disconnect_reason(ending: Ending) -> tuple[str, bool]:
    """The Action Cable ``reason`` and ``reconnect`` for the core's ending (an
    application's own code keeps its own words)."""
    if ending.code:
        return ending.words.replace(" ", "_"), ending.reconnect
    return _REASONS.get(ending.reason) or ending.reason.words.replace(" ", "_"), ending.reconnect


def epoch_for(offset: int, now_ns: int) -> bytes:
    """The epoch of a live publication's ``offset`` (the nanosecond within its
    2^53 ns period, plus one): the period of "now", or the one before when the
    offset lies far ahead of now within the period (a publication from just
    before a period boundary; live publications are never more than
    --max-message-age old)."""
    period, within = divmod(now_ns, PERIOD_NS)
    if offset - 1 > within + PERIOD_NS // 2:
        period -= 1
    return b"%d" % period


class IdentifierCodec:
    """Renders publications for the subscribers of one identifier, which names
    one channel: ``{"identifier":…,"message":<data>}``, plus its position on
    ``actioncable-v1-ext-json`` when it has one (a late publication goes out
    without, so no client's position moves back). The data is embedded as it
    is: it is the value the Ruby side broadcast, exactly what Rails sends."""

    __slots__ = ("identifier", "quoted", "channel", "ext", "head", "stream_id", "now_ns")
    binary = False
    ping = b""  # Action Cable's ping carries the time: built once a second (CableState)

    def __init__(self, identifier: str, channel: str, ext: bool, now_ns: Callable[[], int]):
        self.identifier = identifier
        self.channel = channel
        self.ext = ext
        self.quoted = quote(identifier)
        self.head = b'{"identifier":%s,"message":' % self.quoted
        self.stream_id = b',"stream_id":%s,"epoch":"' % quote(channel)
        self.now_ns = now_ns

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        if offset is None or not self.ext:
            return b"%s%s}" % (self.head, data)
        return b'%s%s%s%s","offset":%d}' % (self.head, data, self.stream_id, epoch_for(offset, self.now_ns()),
                                              offset)

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        # Action Cable has no place for the publisher or tags; its messages are JSON.
        json = data.json_form()
        return self.pub_push(channel, json, offset) if json is not None else None

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None:
        # Action Cable has no join or leave message; AnyCable's explicit
        # presence events go to every subscriber of the stream.
        if kind == "cable_presence":
            return b'{"type":"presence","identifier":%s,"message":%s}' % (self.quoted, body["message"])
        return None


class CompositeCodec:
    """Several identifiers of one connection that name the same channel (a
    Turbo element with data attributes and a ``$pubsub`` signed name for one
    stream): the hub holds a connection once per channel, so one publication
    becomes one message per identifier, each framed here with the
    connection's framing (its wire format then adds nothing)."""

    __slots__ = ("codecs", "frame")
    binary = False
    ping = b""

    def __init__(self, codecs: tuple[IdentifierCodec, ...], frame: Callable[[bytes], bytes]):
        self.codecs = codecs
        self.frame = frame

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        frame = self.frame
        return b"".join(frame(codec.pub_push(channel, data, offset)) for codec in self.codecs)

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        json = data.json_form()
        return self.pub_push(channel, json, offset) if json is not None else None

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None:
        frame = self.frame
        messages = [codec.event_push(channel, kind, body) for codec in self.codecs]
        return b"".join(frame(m) for m in messages if m is not None) or None


class BaseCodec:
    """The codec of a connection's own wire format. The protocol's messages are
    built by the functions above and publications per identifier
    (:class:`IdentifierCodec`): the hub never renders with this one."""

    name = "cable"
    binary = False
    ping = b""

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        raise TypeError("an Action Cable subscription renders with its identifier's codec")

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        raise TypeError("an Action Cable subscription renders with its identifier's codec")

    def event_push(self, channel: str, kind: str, body: dict) -> None:
        return None
