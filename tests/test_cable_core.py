"""The Action Cable protocol in process, on a fake clock: signed stream names,
identifier rules, the session (v1-json and ext-json), the hub's shared
frames per identifier, pings, disconnects, history answers and restores.
The stock clients over real sockets are in tests/test_cable.py."""
from __future__ import annotations

import asyncio
import json

import pytest

from auth import connection_token
from gateway.transports.wsproto import text_frame
from gateway.protocols.cable import protocol
from gateway.protocols.cable.protocol import EXT, V1, epoch_for
from gateway.protocols.cable.session import RESTORE_WAIT
from gateway.protocols.cable.state import RestoreStore
from gateway.protocols.cable.streams import CableStreams, Refused, verify_signed
from gateway.core import vocabulary
from gateway.protocols.centrifugo import model
from gateway.core.history import PERIOD_NS, Retention, epoch_of, from_position, to_position
from gateway.core.session import CLOSED, CONNECTED
from tests.inprocess import FakeClock, make_host, open_cable, open_session, unframe
from tests.stack import ROOT, SECRET

VECTORS = json.loads((ROOT / "bridges" / "testdata" / "signed_streams.json").read_text())
KEY = VECTORS["key"]


def signed(name: str) -> str:
    return next(v["signed"] for v in VECTORS["valid"] if v["name"] == name and v["alphabet"] == "standard")


def ident(**params) -> str:
    return json.dumps(params)


def pubsub(stream: str) -> str:
    return ident(channel="$pubsub", stream_name=stream)


def turbo(signed_name: str, **extra) -> str:
    return ident(channel="Turbo::StreamsChannel", signed_stream_name=signed_name, **extra)


def cmd(command: str, identifier: str | None = None, **fields) -> str:
    body = {"command": command, **({"identifier": identifier} if identifier is not None else {}), **fields}
    return json.dumps(body)


def cable(host, user="u", subprotocol=V1, sid="", **token_options):
    token = connection_token(SECRET, user, now=host.wall(), **token_options)
    session, transport = open_cable(host, token, subprotocol, sid)
    assert session.state is CONNECTED, transport.messages()
    return session, transport


def publish(host, clock, channel: str, data: bytes) -> int | None:
    """What Ingest does with a message of ``channel`` stamped now."""
    clock.advance(0.001)
    offset = host.history.add(channel, clock.ns(), data, clock.ns())
    host.hub.publish(channel, data, offset)
    return offset


def cable_host(clock=None, **overrides):
    options = dict(turbo_streams_secret=KEY, public_channels="news,chat:*")
    options.update(overrides)
    host = make_host(clock, **options)
    if clock is not None:
        host.history.continuity_from(clock.ns() - 60 * 10**9)
    return host


# --- signed stream names and identifiers ------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: f"{v['alphabet']}:{v['name']}")
def test_signed_stream_names_in_every_alphabet_verify_to_their_name(vector):
    assert verify_signed(vector["signed"], KEY.encode()) == vector["name"]


@pytest.mark.parametrize("vector", VECTORS["forged"], ids=lambda v: v["why"])
def test_forged_signed_stream_names_do_not_verify(vector):
    assert verify_signed(vector["signed"], KEY.encode()) is None


def test_the_signature_is_checked_over_the_text_received():
    standard = signed("room?0>")
    data, digest = standard.split("--")
    # The URL-safe spelling of the same JSON under the standard text's digest: a
    # re-encoding would verify it, the text received does not.
    assert verify_signed(data.replace("/", "_") + "--" + digest, KEY.encode()) is None
    assert verify_signed("é" + standard, KEY.encode()) is None
    assert verify_signed("", KEY.encode()) is None


def test_identifiers_resolve_to_channels_with_the_prefix_and_personal_streams_unprefixed():
    streams = CableStreams(KEY, "myapp")
    assert streams.resolve(turbo(signed("chat"), data_x="1")) == ("myapp:chat", True)
    assert streams.resolve(ident(channel="$pubsub", signed_stream_name=signed("chat"))) == ("myapp:chat", True)
    assert streams.resolve(pubsub("news")) == ("myapp:news", False)
    assert streams.resolve(pubsub("#42")) == ("#42", False)
    assert streams.resolve(turbo(signed("#42"))) == ("#42", True)
    for identifier, why in [
        (ident(channel="ChatChannel", room="1"), "Ruby channel classes do not run"),
        (ident(channel="$pubsub", stream_name="a", signed_stream_name=signed("chat")), "both given"),
        (ident(channel="$pubsub"), "no stream_name"),
        (turbo(signed("chat").replace("a", "b", 1)), "does not verify"),
        ("not json", "not JSON"),
        ('["$pubsub"]', "not an object"),
        (pubsub("x" * 300), "not a channel name"),
        (pubsub("x" * 2000), "longer than"),
    ]:
        with pytest.raises(Refused, match=why):
            streams.resolve(identifier)
    with pytest.raises(Refused, match="--turbo-streams-secret"):
        CableStreams(None).resolve(turbo(signed("chat")))


def test_epoch_of_a_live_offset_is_the_period_it_was_stamped_in():
    now = 200 * PERIOD_NS + 5 * 10**9
    for stamped in (now - 2 * 10**9, now + 10**9, now - 10 * 10**9):  # the last one: the period before
        epoch, offset = to_position(stamped)
        assert epoch_for(offset, now) == epoch.encode()


# --- the session: v1-json -----------------------------------------------------------------

def test_welcome_subscribe_confirm_duplicate_message_unsubscribe_exactly_as_rails_sends_them():
    host = cable_host()
    session, transport = cable(host)
    assert transport.raw() == [b'{"type":"welcome"}']
    identifier = '{"channel": "$pubsub", "stream_name": "news", "x": "Zoë \\"q\\" /"}'
    session.handle_frame(cmd("subscribe", identifier))
    session.handle_frame(cmd("subscribe", identifier))  # the guarantor's resend: a no-op
    messages = transport.messages()
    assert messages == [{"identifier": identifier, "type": "confirm_subscription"}]
    host.hub.publish("news", b'{"text":"hi"}', None)
    assert transport.raw() == [b'{"identifier":%s,"message":{"text":"hi"}}' % json.dumps(
        identifier, ensure_ascii=False).encode()]
    session.handle_frame(cmd("unsubscribe", identifier))
    session.handle_frame(cmd("unsubscribe", identifier))
    assert transport.raw() == []
    assert host.hub.publish("news", b"1", None) == 0


def test_refusals_are_reject_subscription_and_a_later_subscribe_is_judged_afresh():
    host = cable_host()
    session, transport = cable(host, "u")
    transport.raw()
    refused = [
        pubsub("secret"),                      # not public
        pubsub("#v"),                          # another user's personal stream
        turbo(signed("#42")),                  # ... even validly signed
        turbo(signed("chat").replace("a", "c", 1)),  # forged
        ident(channel="ChatChannel", room="1"),  # Ruby channel code does not run here
        "{not json",
    ]
    for identifier in refused:
        session.handle_frame(cmd("subscribe", identifier))
        assert transport.messages() == [{"identifier": identifier, "type": "reject_subscription"}]
    session.handle_frame(cmd("subscribe", refused[0]))
    assert transport.messages() == [{"identifier": refused[0], "type": "reject_subscription"}]
    accepted = [pubsub("news"), pubsub("chat:1"), pubsub("#u"), turbo(signed("chat")),
                ident(channel="$pubsub", signed_stream_name=signed("gid://app/Room/1:messages"))]
    for identifier in accepted:
        session.handle_frame(cmd("subscribe", identifier))
        assert transport.messages() == [{"identifier": identifier, "type": "confirm_subscription"}]
    assert session.channels == {"news", "chat:1", "#u", "chat", "gid://app/Room/1:messages"}
    assert session.state is CONNECTED


def test_a_token_channels_claim_grants_stream_name_subscriptions():
    host = cable_host()
    session, transport = cable(host, "u", channels=["vip"])
    session.handle_frame(cmd("subscribe", pubsub("vip")))
    assert transport.messages()[-1]["type"] == "confirm_subscription"
    assert session.channels == {"vip"}  # nothing is joined by itself on /cable


def test_connection_refusals_say_why_and_whether_to_reconnect():
    clock = FakeClock()
    host = cable_host(clock)
    cases = [
        ("", V1, "unauthorized", False),
        ("not-a-token", V1, "unauthorized", False),
        (connection_token("another-secret-of-at-least-32-bytes!!", "u"), V1, "unauthorized", False),
        # Expired at the handshake: AnyCable's answer; the stock client retries with its URL.
        (connection_token(SECRET, "u", now=clock.wall() - 700, ttl=600), V1, "token_expired", True),
        (connection_token(SECRET, "u", now=clock.wall() - 700, ttl=600), EXT, "token_expired", False),
    ]
    for token, subprotocol, reason, reconnect in cases:
        session, transport = open_cable(host, token, subprotocol)
        assert transport.messages() == [{"type": "disconnect", "reason": reason, "reconnect": reconnect}]
        assert session.state is CLOSED and transport.closed is not None


def test_expiry_on_an_open_connection_and_a_drain_tell_the_client_to_reconnect():
    clock = FakeClock()
    host = cable_host(clock, expired_close_delay=5)
    expiring, e_transport = cable(host, "e", ttl=60)
    draining, d_transport = cable(host, "d")
    e_transport.raw(), d_transport.raw()
    clock.advance(64)
    host.expiry.check(clock.wall())
    assert expiring.state is CONNECTED
    clock.advance(2)
    host.expiry.check(clock.wall())
    assert e_transport.messages() == [{"type": "disconnect", "reason": "token_expired", "reconnect": True}]
    draining.close(vocabulary.SHUTDOWN)
    assert d_transport.messages() == [{"type": "disconnect", "reason": "server_restart", "reconnect": True}]


def test_bad_frames_end_the_connection_with_invalid_request_and_unknown_commands_are_ignored():
    host = cable_host()
    session, transport = cable(host)
    transport.raw()
    for frame in (cmd("message", pubsub("news"), data='{"action":"speak"}'), cmd("pong"), cmd("whisper", "x"),
                  cmd("future_command")):
        session.handle_frame(frame)
    assert transport.raw() == [] and session.state is CONNECTED
    assert host.metrics.ignored_commands.labels("cable_message")._value.get() == 1
    for bad in ("not json", "[1]", '{"command": 1}', '{"command":"subscribe"}', '{"command":"subscribe","identifier":3}'):
        session, transport = cable(host)
        transport.raw()
        session.handle_frame(bad)
        assert transport.messages() == [{"type": "disconnect", "reason": "invalid_request", "reconnect": False}]
        assert session.state is CLOSED


def test_cable_sessions_are_pinged_every_three_seconds_with_the_unix_time_and_centrifugo_ones_are_not():
    clock = FakeClock(wall=1_795_622_723.4)
    host = cable_host(clock)
    sessions = [cable(host, f"u{i}") for i in range(12)]
    centrifugo, c_transport = open_session(host)
    for _, transport in sessions:
        transport.raw()
    frames = []
    for _ in range(3):
        clock.advance(1)
        host.fast_heartbeat.tick()
        frames.append(host.shared("cable", None).ping_frame(text_frame))
    for _, transport in sessions:
        assert len(transport.sent) == 1 and transport.sent[0] in frames  # one ping in three seconds
    assert unframe(frames[0]) == [b'{"type":"ping","message":1795622724}']
    assert c_transport.sent == []
    # The same bytes for everybody pinged within one second.
    assert len({id(t.sent[0]) for _, t in sessions}) <= 3


# --- the hub: one rendering per identifier ---------------------------------------------------

def test_subscribers_with_one_identifier_share_one_wire_and_the_same_frame_bytes():
    host = cable_host()
    identifier = turbo(signed("gid://app/Room/1:messages"))
    pairs = [cable(host, f"u{i}") for i in range(3)]
    other, o_transport = cable(host, "o")
    for session, transport in pairs:
        session.handle_frame(cmd("subscribe", identifier))
        transport.raw()
    other.handle_frame(cmd("subscribe", turbo(signed("gid://app/Room/1:messages"), data_x="1")))
    o_transport.raw()
    hub = host.hub
    wires = {id(hub.wire_of("gid://app/Room/1:messages", s)) for s, _ in pairs}
    assert len(wires) == 1
    assert hub.publish("gid://app/Room/1:messages", b'"<turbo-stream></turbo-stream>"', None) == 4
    frames = [t.sent[0] for _, t in pairs]
    assert all(f is frames[0] for f in frames)
    assert json.loads(unframe(o_transport.sent[0])[0])["identifier"] != identifier
    registry = host.shared("cable", None).wires
    assert len(registry) == 2
    for session, _ in pairs[:2]:
        session.handle_frame(cmd("unsubscribe", identifier))
    pairs[2][0].transport_closed()
    other.close(vocabulary.SHUTDOWN)
    assert len(registry) == 0  # identifiers are the client's strings: none outlives its subscriptions


def test_two_identifiers_for_one_channel_on_one_connection_each_get_every_message():
    host = cable_host()
    session, transport = cable(host)
    first, second = pubsub("news"), ident(channel="$pubsub", stream_name="news", extra=1)
    session.handle_frame(cmd("subscribe", first))
    session.handle_frame(cmd("subscribe", second))
    transport.raw()
    host.hub.publish("news", b"1", None)
    assert sorted(m["identifier"] for m in transport.messages()) == sorted([first, second])
    session.handle_frame(cmd("unsubscribe", first))
    host.hub.publish("news", b"2", None)
    assert transport.messages() == [{"identifier": second, "message": 2}]
    session.handle_frame(cmd("unsubscribe", second))
    assert session.channels == set() and len(host.shared("cable", None).wires) == 0


# --- ext-json: positions and history ---------------------------------------------------------

def test_ext_messages_carry_their_position_and_late_ones_carry_none():
    clock = FakeClock()
    host = cable_host(clock)
    session, transport = cable(host, "u", EXT)
    welcome = transport.messages()[0]
    assert welcome["type"] == "welcome" and len(welcome["sid"]) >= 20
    session.handle_frame(cmd("subscribe", pubsub("news")))
    transport.raw()
    offset = publish(host, clock, "news", b'{"n":1}')
    assert transport.messages() == [{"identifier": pubsub("news"), "message": {"n": 1}, "stream_id": "news",
                                     "epoch": epoch_of(clock.ns()), "offset": offset}]
    host.hub.publish("news", b'{"n":0}', None)
    assert transport.messages() == [{"identifier": pubsub("news"), "message": {"n": 0}}]


def ext_subscriber(host, clock, stream="news", user="u"):
    session, transport = cable(host, user, EXT)
    session.handle_frame(cmd("subscribe", pubsub(stream), history={"since": int(clock.wall()), "streams": {}}))
    return session, transport


def test_subscribe_with_a_position_gets_exactly_what_followed_it_then_confirm_history():
    clock = FakeClock()
    host = cable_host(clock)
    session, transport = ext_subscriber(host, clock)
    offsets = [publish(host, clock, "news", b'{"n":%d}' % n) for n in range(5)]
    got = transport.messages()
    assert [m["type"] for m in got[:3]] == ["welcome", "confirm_subscription", "confirm_history"]
    epoch = got[3]["epoch"]
    session.transport_closed()
    clock.advance(3)
    again, transport = cable(host, "u", EXT)
    transport.raw()
    request = {"since": int(clock.wall()) - 10, "streams": {"news": {"epoch": epoch, "offset": offsets[1]}}}
    again.handle_frame(cmd("subscribe", pubsub("news"), history=request))
    got = transport.messages()
    assert got[0] == {"identifier": pubsub("news"), "type": "confirm_subscription"}
    assert [(m["message"]["n"], m["offset"]) for m in got[1:4]] == list(zip((2, 3, 4), offsets[2:]))
    assert got[4] == {"identifier": pubsub("news"), "type": "confirm_history"} and len(got) == 5
    publish(host, clock, "news", b'{"n":5}')
    assert transport.messages()[0]["message"] == {"n": 5}


def test_what_cannot_be_vouched_for_is_reject_history_and_none_of_the_backlog():
    clock = FakeClock()
    host = cable_host(clock, history_size=3, public_channels="news,chat:*,quiet")
    host.history.rules.insert(0, ("quiet", Retention(0, 300)))  # a channel that keeps no history
    session, transport = ext_subscriber(host, clock)
    first = publish(host, clock, "news", b'{"n":0}')
    epoch = transport.messages()[-1]["epoch"]
    for n in range(1, 6):  # more than the channel keeps
        publish(host, clock, "news", b'{"n":%d}' % n)
    other, o_transport = cable(host, "v", EXT)
    o_transport.raw()
    for identifier, request in [
        (pubsub("news"), {"streams": {"news": {"epoch": epoch, "offset": first}}}),    # trimmed
        (pubsub("chat:1"), {"streams": {"chat:1": {"epoch": "12", "offset": 5}}}),    # another epoch
        (pubsub("chat:2"), {"since": int(clock.wall()) - 3600}),                     # older than the TTL
        (pubsub("quiet"), {"since": int(clock.wall())}),                             # keeps no history
    ]:
        other.handle_frame(cmd("subscribe", identifier, history=request))
        assert [m["type"] for m in o_transport.messages()] == ["confirm_subscription", "reject_history"], identifier
    # A node that started after the position cannot vouch for it either.
    clock.advance(5)
    late = cable_host(clock)
    late.history.continuity_from(clock.ns())
    session, transport = cable(late, "u", EXT)
    transport.raw()
    session.handle_frame(cmd("subscribe", pubsub("news"), history={"streams": {"news": {
        "epoch": epoch, "offset": first}}}))
    assert [m["type"] for m in transport.messages()] == ["confirm_subscription", "reject_history"]


def test_since_on_a_first_subscribe_is_answered_at_once_and_replays_what_followed_it():
    clock = FakeClock()
    host = cable_host(clock)
    publish(host, clock, "news", b'{"n":0}')
    clock.advance(2)
    since = int(clock.wall())
    clock.advance(1.5)
    publish(host, clock, "news", b'{"n":1}')
    session, transport = cable(host, "u", EXT)
    transport.raw()
    session.handle_frame(cmd("subscribe", pubsub("news"), history={"since": since, "streams": {}}))
    got = transport.messages()
    assert [m.get("type") or m["message"] for m in got] == ["confirm_subscription", {"n": 1}, "confirm_history"]
    # A since just now (the page was loaded a moment ago) costs no wait.
    fresh, transport = cable(host, "w", EXT)
    transport.raw()
    fresh.handle_frame(cmd("subscribe", pubsub("news"), history={"since": int(clock.wall()) + 1, "streams": {}}))
    assert [m["type"] for m in transport.messages()] == ["confirm_subscription", "confirm_history"]
    # v1-json ignores history requests, as Rails does.
    plain, transport = cable(host, "p", V1)
    transport.raw()
    plain.handle_frame(cmd("subscribe", pubsub("news"), history={"since": since, "streams": {}}))
    assert [m["type"] for m in transport.messages()] == ["confirm_subscription"]


def test_a_session_is_restored_on_its_node_and_its_history_request_fills_the_gap_exactly():
    clock = FakeClock()
    host = cable_host(clock)
    session, transport = ext_subscriber(host, clock)
    session.handle_frame(cmd("subscribe", pubsub("#u"), history={"since": int(clock.wall()), "streams": {}}))
    sid = transport.messages()[0]["sid"]
    seen = publish(host, clock, "news", b'{"n":0}')
    epoch = transport.messages()[-1]["epoch"]
    session.transport_closed()  # a network cut: no disconnect message
    missed = [publish(host, clock, "news", b'{"n":%d}' % n) for n in (1, 2, 3)]
    clock.advance(1)
    again, transport = cable(host, "u", EXT, sid=sid)
    welcome = transport.messages()[0]
    assert welcome["restored"] is True and welcome["sid"] != sid
    assert sorted(welcome["restored_ids"]) == sorted([pubsub("news"), pubsub("#u")])
    publish(host, clock, "news", b'{"n":4}')   # before the client's history request: not lost, not doubled
    assert transport.raw() == []
    again.handle_frame(cmd("history", pubsub("news"), history={
        "since": int(clock.wall()) - 5, "streams": {"news": {"epoch": epoch, "offset": seen}}}))
    got = transport.messages()
    assert [m.get("message", m.get("type")) for m in got] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4},
                                                             "confirm_history"]
    assert [m["offset"] for m in got[:3]] == missed
    publish(host, clock, "news", b'{"n":5}')
    assert [m["message"] for m in transport.messages()] == [{"n": 5}]
    # The sid was used up; another user cannot take a session either.
    third, transport = cable(host, "u", EXT, sid=sid)
    assert "restored" not in transport.messages()[0]


def test_a_restore_without_history_requests_joins_at_the_next_ping_with_what_followed_the_restore():
    clock = FakeClock()
    host = cable_host(clock)
    session, transport = ext_subscriber(host, clock)
    sid = transport.messages()[0]["sid"]
    session.transport_closed()
    stranger, s_transport = cable(host, "intruder", EXT, sid=sid)
    assert "restored" not in s_transport.messages()[0]
    session, transport = ext_subscriber(host, clock)
    sid = transport.messages()[0]["sid"]
    session.transport_closed()
    again, transport = cable(host, "u", EXT, sid=sid)
    assert transport.messages()[0]["restored_ids"] == [pubsub("news")]
    publish(host, clock, "news", b'{"n":1}')
    clock.advance(RESTORE_WAIT)
    for _ in range(3):
        host.fast_heartbeat.tick()
    got = [m for m in transport.messages() if m.get("type") != "ping"]
    assert [m["message"] for m in got] == [{"n": 1}]
    publish(host, clock, "news", b'{"n":2}')
    assert [m["message"] for m in transport.messages()] == [{"n": 2}]
    # When even that cannot be vouched for (here: the node lost its NSQ
    # connection meanwhile), the client is told.
    again.transport_closed()
    restored, transport = cable(host, "u", EXT, sid=again.sid)
    assert transport.messages()[0]["restored_ids"] == [pubsub("news")]
    host.history.continuity_lost()
    clock.advance(RESTORE_WAIT)
    for _ in range(3):
        host.fast_heartbeat.tick()
    got = [m for m in transport.messages() if m.get("type") != "ping"]
    assert got == [{"identifier": pubsub("news"), "type": "reject_history"}]


def test_the_restore_store_is_bounded_by_time_and_memory():
    clock = FakeClock()
    store = RestoreStore(ttl=10, clock=clock.monotonic, budget=4000)
    for n in range(20):
        store.keep(f"sid{n}", "u", ("x" * 500,))
    assert store.cost <= 4000 and store.take("sid0") is None and store.take("sid19") is not None
    assert store.take("sid19") is None  # once
    clock.advance(11)
    assert store.take("sid18") is None and len(store) == 0


def test_a_history_request_ahead_of_this_node_is_held_until_it_catches_up():
    clock = FakeClock()
    host = cable_host(clock)

    async def scenario():
        session, transport = cable(host, "u", EXT)
        transport.raw()
        ahead = clock.ns() + 10**8   # a position another node handed out, this one has not seen yet
        epoch, offset = to_position(ahead)
        session.handle_frame(cmd("subscribe", pubsub("news"), history={"streams": {"news": {
            "epoch": epoch, "offset": offset}}}))
        session.handle_frame(cmd("subscribe", pubsub("news")))   # queued behind it
        assert transport.raw() == [] and session.held is not None
        host.history.add("news", ahead, b'{"n":0}', clock.ns())
        host.history.add("news", ahead + 10, b'{"n":1}', clock.ns())
        await asyncio.sleep(0.1)
        got = transport.messages()
        assert [m.get("message", m.get("type")) for m in got] == ["confirm_subscription", {"n": 1},
                                                                 "confirm_history"]
        assert from_position(got[1]["epoch"], got[1]["offset"]) == ahead + 10
    asyncio.run(scenario())


def test_protocol_messages_have_rails_shapes():
    assert protocol.welcome() == b'{"type":"welcome"}'
    assert protocol.ping(1795622723) == b'{"type":"ping","message":1795622723}'
    assert protocol.disconnect("unauthorized", False) == \
        b'{"type":"disconnect","reason":"unauthorized","reconnect":false}'
    assert protocol.disconnect_reason(vocabulary.SHUTDOWN) == ("server_restart", True)
    assert protocol.disconnect_reason(vocabulary.TOO_MANY_REQUESTS) == ("too_many_requests", True)
    assert protocol.disconnect_reason(vocabulary.CONNECTION_LIMIT) == ("connection_limit", False)


def test_a_subscription_the_core_ends_gives_its_shared_wire_back():
    """A lost publication ends the subscription from the core (stream_broken,
    then end_subscription's leave): the identifier's shared wire format goes
    with it, as on the client's own unsubscribe."""
    host = cable_host()
    sessions = [cable(host, user=f"u{n}")[0] for n in range(5)]
    registry = host.shared("cable", None).wires
    for session in sessions:
        session.handle_frame(cmd("subscribe", pubsub("news")))
    assert len(registry) == 1
    host.streams_broken(("news",))
    assert all(s.state is CLOSED for s in sessions)
    assert len(registry) == 0
