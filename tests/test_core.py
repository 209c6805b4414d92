"""The session core, hub, heartbeat, expiry and write path in process, on a
fake clock: what the integration tests check over seconds of real time, here
in milliseconds, in both encodings."""
from __future__ import annotations

import asyncio
import socket

import pytest
import ujson

from auth import connection_token, subscription_token
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF, split_delimited
from gateway.protocols.centrifugo.schema import CLASSES
from gateway.core.hub import Hub
from gateway.core.session import CLOSED, CONNECTED
from gateway.core.wire import WireFormat
from gateway.transports.stream import SocketWriter, WriteBatcher
from tests.inprocess import WIRE_JSON, WIRE_PROTOBUF, FakeClock, FakeTransport, frame, make_host, open_session
from tests.stack import SECRET

Reply = CLASSES["Reply"]


def connected(host, user="u", wire=WIRE_JSON, **token_options):
    session, transport = open_session(host, wire)
    token = connection_token(SECRET, user, now=host.wall(), **token_options)
    if wire is WIRE_JSON:
        session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    else:
        session.handle_frame(pb_command(1, "connect", token=token))
    assert session.state is CONNECTED
    return session, transport


def pb_command(cmd_id: int, method: str, **fields) -> bytes:
    from gateway.protocols.centrifugo.protobuf_codec import uvarint
    command = CLASSES["Command"](id=cmd_id)
    target = getattr(command, method)
    target.SetInParent()
    for key, value in fields.items():
        setattr(target, key, value)
    raw = command.SerializeToString()
    return uvarint(len(raw)) + raw


def pb_messages(transport: FakeTransport) -> list:
    out = [Reply.FromString(m) for f in transport.sent for m in split_delimited(f)]
    transport.sent.clear()
    return out


# --- hub ------------------------------------------------------------------------------

class CountingCodec:
    """Wraps a codec and counts the publications it encodes."""

    def __init__(self, codec):
        self.codec = codec
        self.encoded = 0
        self.ping = codec.ping

    def pub_push(self, channel, data, offset):
        self.encoded += 1
        return self.codec.pub_push(channel, data, offset)


class Subscriber:
    def __init__(self):
        self.frames = []
        self.push = self.frames.append


def test_the_hub_encodes_once_per_codec_and_frames_once_per_wire_format():
    from gateway.protocols.centrifugo.json_codec import JSON
    json_codec, pb_codec = CountingCodec(JSON), CountingCodec(PROTOBUF)
    framed = []

    def framing(tag):
        def frame(message):
            framed.append(tag)
            return tag + message
        return frame
    wires = [WireFormat("ws-json", json_codec, framing(b"T")), WireFormat("stream-json", json_codec, framing(b"S")),
             WireFormat("ws-pb", pb_codec, framing(b"B"))]
    framed.clear()  # each wire format framed its ping once, when it was made
    hub = Hub()
    subscribers = [(Subscriber(), wires[i % 3]) for i in range(300)]
    for subscriber, wire in subscribers:
        hub.subscribe("news", subscriber, wire)
    assert hub.publish("news", b'{"n":1}', 7) == 300
    assert (json_codec.encoded, pb_codec.encoded) == (1, 1)      # once per encoding
    assert sorted(framed) == [b"B", b"S", b"T"]                  # once per wire format
    by_wire = {}
    for subscriber, wire in subscribers:
        by_wire.setdefault(wire.name, set()).add(id(subscriber.frames[0]))
    assert all(len(ids) == 1 for ids in by_wire.values())        # the very same bytes
    assert ujson.loads(subscribers[0][0].frames[0][1:]) == {"push": {"channel": "news", "pub": {
        "data": {"n": 1}, "offset": 7}}}
    assert hub.publish("nobody", b"1", None) == 0


def test_json_and_protobuf_subscribers_of_one_channel_both_get_every_publication():
    host = make_host()
    js, js_transport = connected(host, "js", channels=["feed"])
    pb, pb_transport = connected(host, "pb", WIRE_PROTOBUF, channels=["feed"])
    js_transport.messages(), pb_messages(pb_transport)
    for n in range(3):
        host.hub.publish("feed", b'{"n":%d}' % n, 10 + n)
    assert [m["push"]["pub"] for m in js_transport.messages()] == [
        {"data": {"n": n}, "offset": 10 + n} for n in range(3)]
    assert [(r.push.channel, r.push.pub.data, r.push.pub.offset) for r in pb_messages(pb_transport)] == [
        ("feed", b'{"n":%d}' % n, 10 + n) for n in range(3)]


# --- a whole session in Protobuf ---------------------------------------------------

def test_a_protobuf_session_connects_subscribes_recovers_and_is_refused_like_a_json_one():
    clock = FakeClock()
    host = make_host(clock)
    host.history.continuity_from(clock.ns() - 60 * 10**9)
    session, transport = connected(host, "pb", WIRE_PROTOBUF, ttl=600)
    connect = pb_messages(transport)[0]
    assert connect.id == 1 and connect.connect.client == session.client_id and connect.connect.ttl == 600
    assert "#pb" in connect.connect.subs and connect.connect.subs["#pb"].recoverable
    session.handle_frame(pb_command(2, "subscribe", channel="news"))
    reply = pb_messages(transport)[0]
    epoch, offset = reply.subscribe.epoch, reply.subscribe.offset
    assert reply.id == 2 and reply.subscribe.recoverable and offset > 0
    # Publications while it is away, then a recovering subscribe on a new connection.
    session.transport_closed()
    clock.advance(1)
    for n in range(3):
        offset_n = host.history.add("news", clock.ns() + n, b'{"n":%d}' % n, clock.ns())
        host.hub.publish("news", b'{"n":%d}' % n, offset_n)
    clock.advance(2)
    again, transport = connected(host, "pb", WIRE_PROTOBUF)
    pb_messages(transport)
    again.handle_frame(pb_command(2, "subscribe", channel="news", recover=True, epoch=epoch, offset=offset))
    result = pb_messages(transport)[0].subscribe
    assert result.recovered and result.was_recovering
    assert [p.data for p in result.publications] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    # Errors carry code and message; a refused personal channel is 103.
    again.handle_frame(pb_command(3, "subscribe", channel="#someone"))
    error = pb_messages(transport)[0].error
    assert (error.code, error.message) == (103, "permission denied")
    # A text frame on a Protobuf connection is a protocol error.
    again.handle_frame('{"id":4,"unsubscribe":{"channel":"news"}}')
    assert again.state is CLOSED and transport.closed == model.DISCONNECT_BAD_REQUEST


# --- heartbeat ------------------------------------------------------------------------

def test_pings_go_to_every_connection_and_silence_costs_3012():
    clock = FakeClock()
    host = make_host(clock, ping_interval=4, pong_timeout=2)
    answering, a_transport = connected(host, "a")
    silent, s_transport = connected(host, "s")
    uni, u_transport = connected(host, "u")
    u_transport.pongs = False  # a unidirectional transport: pinged, owes no pong
    for transport in (a_transport, s_transport, u_transport):
        transport.sent.clear()
    for _ in range(12):
        clock.advance(1)
        host.heartbeat.tick()
        if b"{}" in a_transport.sent:
            a_transport.sent.clear()
            answering.handle_frame("{}")
    assert answering.state is CONNECTED and uni.state is CONNECTED
    assert u_transport.sent.count(b"{}") >= 2            # pinged all along
    assert silent.state is CLOSED and s_transport.closed == model.DISCONNECT_NO_PONG


def test_a_node_far_behind_does_not_close_clients_for_pongs_it_gave_them_no_time_for():
    # bench/million.py: a broadcast to a million connections put every
    # worker's write path seconds behind, pings went out late, and 154,609
    # connections were closed for "no pong". The node's own lateness is not
    # the client's: a round whose pings may have left late is judged at the
    # next ping instead.
    clock = FakeClock()
    host = make_host(clock, ping_interval=4, pong_timeout=2)
    behind = {"seconds": 0.0}
    host.heartbeat.behind = lambda: behind["seconds"]
    silent, transport = connected(host, "s")
    behind["seconds"] = 1.5                              # more than half the pong timeout
    for _ in range(8):                                   # two whole rounds while the node is late
        clock.advance(1)
        host.heartbeat.tick()
    assert silent.state is CONNECTED and transport.sent.count(b"{}") == 2
    assert host.heartbeat.deferred >= 1                  # judged, and put off
    behind["seconds"] = 0.9                              # behind, but under half the timeout: no excuse
    for _ in range(8):
        clock.advance(1)
        host.heartbeat.tick()
    assert silent.state is CLOSED and transport.closed == model.DISCONNECT_NO_PONG


def test_a_connection_that_never_connects_is_stale_after_the_connect_timeout():
    clock = FakeClock()
    host = make_host(clock, connect_timeout=3.0)
    session, transport = open_session(host)
    for _ in range(2):
        clock.advance(1)
        host.heartbeat.tick()
    assert session.state is not CLOSED and transport.closed is None
    clock.advance(1)
    host.heartbeat.tick()
    assert transport.closed == model.DISCONNECT_STALE


# --- expiry -----------------------------------------------------------------------------

def test_a_token_not_refreshed_is_closed_with_3005_and_a_refreshed_one_lives_on():
    clock = FakeClock()
    host = make_host(clock, expired_close_delay=1.0)
    lapsed, l_transport = connected(host, "lapsed", ttl=2)
    kept, k_transport = connected(host, "kept", ttl=2)
    clock.advance(1.5)
    kept.handle_frame(frame({"id": 2, "refresh": {"token": connection_token(SECRET, "kept", ttl=60,
                                                                            now=clock.wall())}}))
    refresh = k_transport.messages()[-1]["refresh"]
    assert refresh["expires"] is True and 59 <= refresh["ttl"] <= 60
    clock.advance(2)
    host.expiry.check(clock.wall())
    assert l_transport.closed == model.DISCONNECT_EXPIRED and kept.state is CONNECTED
    clock.advance(60)
    host.expiry.check(clock.wall())
    assert k_transport.closed == model.DISCONNECT_EXPIRED


def test_a_subscription_token_not_refreshed_ends_its_subscription_with_2501():
    clock = FakeClock()
    host = make_host(clock, expired_close_delay=1.0)
    session, transport = connected(host, "vip")
    for channel in ("private:a", "private:b"):
        token = subscription_token(SECRET, "vip", channel, ttl=2, now=clock.wall())
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": channel, "token": token}}))
    assert [m["subscribe"]["ttl"] for m in transport.messages()[1:]] == [2, 2]
    clock.advance(1.5)
    session.handle_frame(frame({"id": 3, "sub_refresh": {"channel": "private:b", "token": subscription_token(
        SECRET, "vip", "private:b", ttl=60, now=clock.wall())}}))
    assert transport.messages()[0]["sub_refresh"]["ttl"] in (59, 60)
    clock.advance(2)
    host.expiry.check(clock.wall())
    assert transport.messages() == [{"push": {"channel": "private:a", "unsubscribe": {
        "code": 2501, "reason": "subscription expired"}}}]
    assert session.channels == {"#vip", "private:b"} and session.state is CONNECTED


# --- write path -------------------------------------------------------------------------

def test_the_batcher_writes_each_connection_once_per_flush_and_cuts_a_slow_one():
    async def scenario():
        server_side, client_side = socket.socketpair()
        client_side.setblocking(False)
        server_side.setblocking(False)
        flushes = []
        batcher = WriteBatcher(last_publication=lambda: 0.0, on_flush=flushes.append)
        overflowed, errors = [], []
        writer = SocketWriter(server_side, batcher, 64 * 1024, lambda: overflowed.append(1), lambda: errors.append(1))
        for n in range(50):
            writer.send(b"frame-%02d;" % n)
        await asyncio.sleep(0.01)
        received = client_side.recv(1 << 16)
        assert received == b"".join(b"frame-%02d;" % n for n in range(50))
        assert flushes == [1]                       # one flush, one connection written
        # A reader that stops: its queue passes --max-queue-bytes and it is cut (3008).
        big = b"x" * 16384
        for _ in range(200):
            writer.send(big)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert overflowed == [1] and errors == []
        server_side.close()
        client_side.close()
    asyncio.run(scenario())


def test_a_big_flush_lets_the_loop_run_between_slices_and_a_frame_queued_meanwhile_shares_a_write():
    # Issue 24: one flush of 16,000 connections in one turn of the loop held
    # the NSQ reader back for seconds (a burst publication read 30 s late).
    async def scenario():
        pairs = [socket.socketpair() for _ in range(30)]
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        flushes: list[int] = []
        batcher = WriteBatcher(last_publication=lambda: 0.0, on_flush=flushes.append, slice_size=10)
        writers = [SocketWriter(a, batcher, 64 * 1024, lambda: None, lambda: None) for a, _ in pairs]
        for writer in writers:
            writer.send(b"one;")

        def written() -> list[bytes]:
            out = []
            for _, b in pairs:
                try:
                    out.append(b.recv(1024))
                except BlockingIOError:
                    out.append(b"")
            return out
        seen: list[list[bytes]] = []

        def publication_arrives() -> None:   # as the NSQ reader would, between two slices
            seen.append(written())
            writers[5].send(b"two;")    # written already: marked for the next flush
            writers[25].send(b"two;")   # not yet: joins its pending frame
        asyncio.get_running_loop().call_soon(publication_arrives)
        await asyncio.sleep(0.05)
        assert seen == [[b"one;"] * 10 + [b""] * 20], "the first slice only, before the loop ran anything else"
        rest = written()
        assert rest[5] == b"two;" and rest[25] == b"one;two;" and rest[:5] == [b""] * 5
        assert flushes == [30, 1]
        for a, b in pairs:
            a.close()
            b.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("wire", [WIRE_JSON, WIRE_PROTOBUF], ids=["json", "protobuf"])
def test_the_command_rate_limit_holds_in_both_encodings(wire):
    clock = FakeClock()
    host = make_host(clock, client_command_rate=5.0, client_command_burst=10)
    session, transport = connected(host, "r", wire)
    pong = "{}" if wire is WIRE_JSON else b"\x00"
    for _ in range(9):
        session.handle_frame(pong)
    clock.advance(1)  # five more allowed
    for _ in range(5):
        session.handle_frame(pong)
    assert session.state is CONNECTED
    session.handle_frame(pong)
    assert transport.closed == model.DISCONNECT_TOO_MANY_REQUESTS
