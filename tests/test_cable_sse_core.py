"""Action Cable over SSE (/events) in process, on a fake clock: the events
as AnyCable frames them, the query's subscription forms, refusals by status,
and a resume from Last-Event-ID answered from history. The browser, two
nodes and a cut are in tests/test_cable_sse.py."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

from auth import connection_token
from gateway.protocols.cable import protocol, sse
from gateway.transports.endpoint import HttpRefusal, Request
from tests.inprocess import FakeClock, FakeTransport, make_host
from tests.stack import SECRET

TURBO_SECRET = "turbo-secret-for-the-sse-tests-0123456789"


def sign(name: str, secret: str = TURBO_SECRET) -> str:
    """What ActiveSupport::MessageVerifier (SHA256, JSON) makes of ``name``."""
    data = base64.b64encode(json.dumps(name).encode()).decode()
    return data + "--" + hmac.new(secret.encode(), data.encode(), hashlib.sha256).hexdigest()


def request(headers: dict | None = None, **query: str) -> Request:
    return Request("GET", "/events", headers or {}, {k: [v] for k, v in query.items()})


def events(raw: bytes) -> list[dict]:
    """SSE events as a browser parses them: fields, with data lines joined by \\n."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        event: dict = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            event[field] = f"{event[field]}\n{value}" if field == "data" and "data" in event else value
        out.append(event)
    return out


def open_events(host, req: Request):
    transport = FakeTransport(sse.EVENTS_WIRE)
    transport.pongs = False
    session = host.accept(sse.EVENTS.session(host, transport))
    refusal = sse.EVENTS.opened(session, req) if sse.EVENTS.opened is not None else None
    return session, transport, refusal


def received(transport: FakeTransport) -> list[dict]:
    out = events(b"".join(transport.sent))
    transport.sent.clear()
    return out


def test_action_cable_messages_are_named_events_and_broadcasts_their_message_with_the_position():
    assert sse.sse_event(protocol.welcome()) == b'event: welcome\ndata: {"type":"welcome"}\n\n'
    assert sse.sse_event(protocol.disconnect("unauthorized", False)) == (
        b'event: disconnect\ndata: {"type":"disconnect","reason":"unauthorized","reconnect":false}\n'
        b"retry: 31536000000\n\n")
    assert b"retry:" not in sse.sse_event(protocol.disconnect("server_restart", True))
    html = '<turbo-stream action="append">\n<template>hi</template>\r\n</turbo-stream>'
    message = b'{"identifier":"x","message":%s,"stream_id":"room","epoch":"7","offset":42}' % json.dumps(html).encode()
    assert sse.sse_event(message) == (b'data: <turbo-stream action="append">\ndata: <template>hi</template>\n'
                                      b"data: </turbo-stream>\nid: 42/7/room\n\n")
    assert events(sse.sse_event(message)) == [{"data": html.replace("\r\n", "\n"), "id": "42/7/room"}]
    assert sse.sse_event(b'{"identifier":"x","message":{"n":1}}') == b'data: {"n":1}\n\n'


def test_the_query_names_one_subscription_in_any_of_anycables_forms():
    assert sse.identifier_of(request(identifier='{"channel":"X"}')) == '{"channel":"X"}'
    assert sse.identifier_of(request(channel="Chat")) == '{"channel":"Chat"}'
    assert sse.identifier_of(request(stream="news")) == '{"channel":"$pubsub","stream_name":"news"}'
    assert sse.identifier_of(request(signed_stream="abc--00")) == \
        '{"channel":"$pubsub","signed_stream_name":"abc--00"}'
    assert sse.identifier_of(request(turbo_signed_stream_name="abc--00")) == \
        '{"channel":"Turbo::StreamsChannel","signed_stream_name":"abc--00"}'
    assert sse.identifier_of(request()) is None and sse.refuse(request()) is not None
    assert sse.identifier_of(request(stream="\ud800")) is None


def test_a_stream_opens_with_welcome_and_confirmation_then_broadcasts_and_pings():
    clock = FakeClock()
    host = make_host(clock, turbo_streams_secret=TURBO_SECRET)
    token = connection_token(SECRET, "ana", now=clock.wall())
    session, transport, refusal = open_events(host, request(turbo_signed_stream_name=sign("room:1"), jid=token))
    assert refusal is None
    opening = received(transport)
    assert [e.get("event") for e in opening] == ["welcome", "confirm_subscription"]
    assert json.loads(opening[0]["data"]) == {"type": "welcome"}   # no session id: nothing to restore
    clock.advance(0.01)
    offset = host.history.add("room:1", clock.ns(), b'"<turbo-stream></turbo-stream>"', clock.ns())
    host.hub.publish("room:1", b'"<turbo-stream></turbo-stream>"', offset)
    [broadcast] = received(transport)
    epoch, top = host.history.top("room:1", clock.ns())
    assert broadcast == {"data": "<turbo-stream></turbo-stream>", "id": f"{offset}/{epoch}/room:1"}
    session.ping()
    [ping] = received(transport)
    assert ping["event"] == "ping" and json.loads(ping["data"])["type"] == "ping"


def test_refusals_are_statuses_before_the_stream_starts():
    clock = FakeClock()
    host = make_host(clock, turbo_streams_secret=TURBO_SECRET)
    good = connection_token(SECRET, "ana", now=clock.wall())
    forged = connection_token("not-the-secret-of-this-gateway-at-all!!", "ana", now=clock.wall())
    expired = connection_token(SECRET, "ana", now=clock.wall() - 3600, ttl=60)
    for token in ("", forged, expired):
        _, _, refusal = open_events(host, request(stream="news", jid=token))
        assert refusal == HttpRefusal(401, "unauthorized"), token
    for query in ({"turbo_signed_stream_name": sign("room:1", "another-secret")},
                  {"stream": "#bob"}, {"stream": "not-public"}, {"channel": "ChatChannel"}):
        _, _, refusal = open_events(host, request(jid=good, **query))
        assert refusal is not None and refusal.status == 400, query
    _, _, refusal = open_events(host, request({"last-event-id": "x/1/news"}, stream="news", jid=good))
    assert refusal is not None and refusal.status == 400
    _, _, refusal = open_events(host, request(stream="news", jid=good, history_since="1e300"))
    assert refusal is not None and refusal.status == 400


def test_last_event_id_resumes_with_exactly_what_was_missed_on_any_node():
    clock = FakeClock()
    a = make_host(clock, turbo_streams_secret=TURBO_SECRET)
    b = make_host(clock, turbo_streams_secret=TURBO_SECRET)
    for host in (a, b):   # both have read the topic without a gap for a while
        host.history.continuity_from(clock.ns() - 60 * 10**9)
    offsets = []
    for n in range(5):   # every node reads every message: the same positions on both
        clock.advance(0.01)
        stamp = clock.ns()
        for host in (a, b):
            offset = host.history.add("news", stamp, b'{"n":%d}' % n, stamp)
        offsets.append(offset)
    epoch, _ = a.history.top("news", clock.ns())
    token = connection_token(SECRET, "ana", now=clock.wall())
    last = f"{offsets[1]}/{epoch}/news"    # the client had n=0 and n=1 from node A
    _, transport, refusal = open_events(b, request({"last-event-id": last}, stream="news", jid=token))
    assert refusal is None
    got = received(transport)
    assert [e.get("event") for e in got] == ["welcome", "confirm_subscription", None, None, None, "confirm_history"]
    assert [json.loads(e["data"])["n"] for e in got[2:5]] == [2, 3, 4]
    assert [e["id"] for e in got[2:5]] == [f"{o}/{epoch}/news" for o in offsets[2:]]
    # From a position this node cannot vouch for: reject_history, and live from now.
    _, transport, refusal = open_events(b, request({"last-event-id": f"{offsets[1]}/other-epoch/news"},
                                                   stream="news", jid=token))
    assert refusal is None and [e.get("event") for e in received(transport)] == \
        ["welcome", "confirm_subscription", "reject_history"]


def test_a_refused_stream_is_answered_with_its_status_and_leaves_nothing_behind():
    import asyncio
    import socket
    from types import SimpleNamespace

    from gateway.transports.http import HttpStream
    from gateway.transports.stream import Closing, WriteBatcher

    async def scenario():
        clock = FakeClock()
        host = make_host(clock, turbo_streams_secret=TURBO_SECRET)
        loop = asyncio.get_running_loop()
        transports = SimpleNamespace(session_host=host, max_queue_bytes=host.settings.max_queue_bytes,
                                     batcher=WriteBatcher(lambda: 0.0), closing=Closing(),
                                     watch=loop.add_reader, unwatch=loop.remove_reader)
        answers = []
        for token in ("", connection_token(SECRET, "ana", now=clock.wall())):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            req = request(stream="not-public", jid=token)
            HttpStream(transports, sse.EVENTS, ours, sse.EVENTS.choose(req), req, "https://app.example.com")
            theirs.settimeout(2)
            data = b""
            while chunk := theirs.recv(4096):
                data += chunk
            answers.append(data)
            theirs.close()
        assert answers[0].startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert answers[1].startswith(b"HTTP/1.1 400 Bad Request\r\n")
        for answer in answers:
            assert b"Access-Control-Allow-Origin: https://app.example.com\r\n" in answer
            assert b"text/event-stream" not in answer and b"welcome" not in answer
        assert len(host.sessions) == 0 and host.hub.channels() == 0

    asyncio.run(scenario())
