"""Action Cable over Server-Sent Events: ``GET /events``, as AnyCable serves
it, for a plain ``EventSource`` (or Turbo's ``<turbo-stream-source>``) with
no Action Cable client at all.

The request names one subscription in its query, the first of these present:

* ``identifier``: an Action Cable identifier, as it is;
* ``channel``: ``{"channel":<it>}``;
* ``stream``: ``{"channel":"$pubsub","stream_name":<it>}``;
* ``signed_stream``: ``{"channel":"$pubsub","signed_stream_name":<it>}``;
* ``turbo_signed_stream_name``:
  ``{"channel":"Turbo::StreamsChannel","signed_stream_name":<it>}``;

and the connection's JWT as at ``/cable`` (``?jid=`` or ``X-JID``). It is
authenticated and the subscription checked before the response starts: an
unauthorized connection gets ``401``, a rejected subscription ``400`` (as
AnyCable's code answers; a browser's ``EventSource`` does not retry after
either).

The response is ``text/event-stream``. Action Cable's own messages are
named events with the whole message as data (``event: welcome``,
``confirm_subscription``, ``ping`` every 3 s, ``confirm_history`` /
``reject_history``, ``disconnect``, with ``retry: 31536000000`` when the
client should not come back). A broadcast is an unnamed event whose data is
the message part alone (a string as it is, so a Turbo stream's HTML arrives
as HTML; anything else as JSON), with its stream position as the event's
id: ``id: <offset>/<epoch>/<stream>``. A browser sends the last id back as
``Last-Event-ID`` when it reconnects, and the session answers it as a
history request, on any node (positions are the same on every node):
exactly the missed broadcasts and ``confirm_history``, or ``reject_history``
and none of them. ``history_since`` (Unix seconds) asks for the broadcasts
since then.

Everything else is the Action Cable session (:mod:`.session`), the same
history and hub as every other connection, and the HTTP stream transport
(:mod:`gateway.transports.http`): this module is a framing and an endpoint.
"""
from __future__ import annotations

import re

import ujson

from gateway.core.host import SessionHost
from gateway.core.session import CONNECTED, Session
from gateway.core.wire import Transport, WireFormat
from gateway.protocols.cable.protocol import EXT, MAX_SINCE, BaseCodec, quote
from gateway.protocols.cable.session import CableSession
from gateway.protocols.cable.streams import PUBSUB, TURBO, Refused
from gateway.transports.endpoint import Choice, Endpoint, HttpRefusal, Kind, Request
from gateway.transports.http import SSE_PREAMBLE, SSE_TYPE

NO_RETRY = b"retry: 31536000000\n"   # a year: what AnyCable sends when the client should not come back
_LINES = re.compile(rb"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]{1,20}")   # str.isdigit() also says yes to "²", which int() refuses


def sse_event(message: bytes) -> bytes:
    """One Action Cable message as an SSE event (see the module doc). Called
    once per message and per identifier, never per subscriber: the hub shares
    a broadcast's event among every subscriber of its identifier."""
    parsed = ujson.loads(message)
    kind = parsed.get("type")
    if kind is not None:
        event = b"event: %s\ndata: %s\n" % (str(kind).encode(), message)
        if kind == "disconnect" and parsed.get("reconnect") is False:
            event += NO_RETRY
        return event + b"\n"
    data = parsed.get("message")
    text = data.encode() if isinstance(data, str) else \
        ujson.dumps(data, ensure_ascii=False, escape_forward_slashes=False).encode()
    event = b"".join(b"data: " + line + b"\n" for line in _LINES.split(text))
    offset = parsed.get("offset")
    if offset is not None:
        event += b"id: %d/%s/%s\n" % (offset, str(parsed.get("epoch")).encode(), str(parsed.get("stream_id")).encode())
    return event + b"\n"


EVENTS_WIRE = WireFormat("cable-sse", BaseCodec(), sse_event)


def identifier_of(request: Request) -> str | None:
    """The subscription the query names (the first form present), or None."""
    if request.arg("identifier"):
        return request.arg("identifier")
    for name, channel, key in (("channel", None, None), ("stream", PUBSUB, "stream_name"),
                               ("signed_stream", PUBSUB, "signed_stream_name"),
                               ("turbo_signed_stream_name", TURBO, "signed_stream_name")):
        value = request.arg(name)
        if value:
            try:
                if channel is None:
                    return '{"channel":%s}' % quote(value).decode()
                return '{"channel":%s,"%s":%s}' % (quote(channel).decode(), key, quote(value).decode())
            except ValueError:
                return None   # a lone surrogate: refused below like any bad identifier
    return None


def history_of(request: Request) -> dict | HttpRefusal | None:
    """The history request of ``Last-Event-ID`` (``<offset>/<epoch>/<stream>``)
    and ``history_since``, or None when neither is given."""
    history: dict = {}
    last = request.headers.get("last-event-id", "")
    if last:
        parts = last.split("/", 2)
        if len(parts) == 3:
            offset, epoch, stream = parts
            if not _DIGITS.fullmatch(offset):
                return HttpRefusal(400, "Last-Event-ID: the offset is not a number")
            history["streams"] = {stream: {"offset": int(offset), "epoch": epoch}}
    since = request.arg("history_since")
    if since:
        if not _DIGITS.fullmatch(since) or int(since) > MAX_SINCE:
            return HttpRefusal(400, "history_since: Unix seconds expected")
        history["since"] = int(since)
    return history or None


def refuse(request: Request) -> str | None:
    if identifier_of(request) is None:
        return ("name the subscription: identifier, channel, stream, signed_stream or "
                "turbo_signed_stream_name in the query")
    return None


def opened(session: Session, request: Request) -> HttpRefusal | None:
    assert isinstance(session, CableSession)
    identifier = identifier_of(request)
    assert identifier is not None   # refused before
    history = history_of(request)
    if isinstance(history, HttpRefusal):
        return history
    session.start(request.headers.get("x-jid", "") or request.arg("jid"), restorable=False)
    if session.state is not CONNECTED:
        return HttpRefusal(401, "unauthorized")
    try:
        session.resolve(identifier)
    except Refused as exc:
        return HttpRefusal(400, f"subscription rejected: {exc}")
    command: dict = {"command": "subscribe", "identifier": identifier}
    if history is not None:
        command["history"] = history
    session.run([command])
    return None


def new_session(host: SessionHost, transport: Transport) -> CableSession:
    # AnyCable's extended protocol: broadcasts carry their positions (the ids).
    return CableSession(host, transport, EXT)


EVENTS = Endpoint("/events", Kind.STREAM, lambda request: Choice(EVENTS_WIRE, content_type=SSE_TYPE,
                                                                 preamble=SSE_PREAMBLE),
                  new_session, refuse=refuse, opened=opened, pongs=False, unidirectional=True)
