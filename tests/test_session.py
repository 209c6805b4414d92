"""The session core in process (no sockets, no NSQ): what a connection can and
cannot do to the host, and that nothing outlives a closed connection."""
from __future__ import annotations

import asyncio
import gc
import time

import jwt

from auth import connection_token, subscription_token
from gateway.protocols.centrifugo import model
from gateway.core.history import to_position
from gateway.config import Settings
from gateway.node import Node
from gateway.core.session import CLOSED, CONNECTED, HELD_LIMIT
from tests.helpers import wait_for
from tests.inprocess import FakeClock, frame, make_host, open_session
from tests.stack import SECRET

HOUR = 3600


def connect(host, user="u", **token_options):
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {"token": connection_token(SECRET, user, **token_options)}}))
    return session, transport


def test_a_closed_connection_leaves_nothing_behind_however_long_its_tokens():
    host = make_host()
    for round_ in range(30):
        sessions = [connect(host, f"u{i}", ttl=HOUR, channels=["news"])[0] for i in range(200)]
        for session in sessions[:50]:  # some also hold a subscription token that expires in an hour
            session.handle_frame(frame({"id": 2, "subscribe": {
                "channel": "private:x", "token": subscription_token(SECRET, session.user, "private:x", ttl=HOUR)}}))
            assert session.sub_expiry
        assert all(s.state is CONNECTED for s in sessions)
        for session in sessions:
            session.transport_closed()
    gc.collect()
    assert not host.sessions and not host.user_connections and not host.held
    assert len(host.expiry) == 0 and len(host.heartbeat) == 0
    assert host.hub.subscribers("news") == [] and host.hub.subscribers("#u1") == []
    # The heap itself is compacted: it does not grow with every closed connection.
    assert len(host.expiry._heap) <= 1024 + 250
    assert all(entry[2] is None for entry in host.expiry._heap)


def test_a_handshake_that_never_connects_is_forgotten_when_it_closes():
    host = make_host()
    for _ in range(5000):
        session, _ = open_session(host)
        session.transport_closed()
    assert len(host.heartbeat) == 0 and not host.sessions


def ahead_position(now_ns: int | None = None) -> dict:
    """A recovery position this host has not reached, half a second after
    ``now_ns`` (the host's now; by default the real one): it would be held."""
    epoch, offset = to_position((time.time_ns() if now_ns is None else now_ns) + 500_000_000)
    return {"recover": True, "epoch": epoch, "offset": offset}


def test_a_forged_token_is_refused_before_any_recovery_is_held():
    async def scenario():
        host = make_host()
        host.history.continuity_from(time.time_ns() - 60 * 10**9)
        session, transport = open_session(host)
        forged = jwt.encode({"sub": "victim"}, "not-the-secret-but-32-bytes-long!!", algorithm="HS256")
        session.handle_frame(frame({"id": 1, "connect": {"token": forged, "subs": {"#victim": ahead_position()}}}))
        assert session.state is CLOSED and transport.closed == model.DISCONNECT_INVALID_TOKEN
        assert not host.held and session.held is None
    asyncio.run(scenario())


def test_what_a_held_connection_may_queue_is_bounded():
    async def scenario():
        host = make_host()
        host.history.continuity_from(time.time_ns() - 60 * 10**9)
        session, transport = open_session(host)
        token = connection_token(SECRET, "held")
        session.handle_frame(frame({"id": 1, "connect": {"token": token, "subs": {"#held": ahead_position()}}}))
        assert session.held is not None and session in host.held  # a real client: held a moment
        subscribe = frame(*({"id": n, "subscribe": {"channel": "news"}} for n in range(2, 62)))
        for _ in range(HELD_LIMIT // 60):
            session.handle_frame(subscribe)
            session.credit = 1000.0  # this test is about the held queue, not the rate
        assert session.state is not CLOSED
        session.handle_frame(subscribe)
        assert session.state is CLOSED and transport.closed == model.DISCONNECT_BAD_REQUEST
        assert not host.held
    asyncio.run(scenario())


def test_a_held_connect_is_answered_once_the_node_catches_up():
    async def scenario():
        clock = FakeClock()
        host = make_host(clock)
        host.history.continuity_from(clock.ns() - 60 * 10**9)
        session, transport = open_session(host)
        position = ahead_position(clock.ns())
        session.handle_frame(frame({"id": 1, "connect": {"token": connection_token(SECRET, "w", now=clock.wall()),
                                                         "subs": {"#w": position}}},
                                   {"id": 2, "subscribe": {"channel": "news"}}))
        assert transport.messages() == [] and session in host.held
        # The position falls a margin (1 s) behind now: this host has seen it all.
        # 1.7 s is within the hold's limit (RECOVERY_WAIT, 2 s): it is the catching
        # up that ends the hold, on the host's next poll of its held sessions.
        clock.advance(1.7)
        await wait_for(lambda: transport.sent, what="the held commands to be answered")
        replies = transport.messages()
        assert [r["id"] for r in replies] == [1, 2]
        assert replies[0]["connect"]["subs"]["#w"]["recovered"] is True
    asyncio.run(scenario())


def test_a_command_flood_is_cut_off_and_pongs_count():
    host = make_host(client_command_rate=10.0, client_command_burst=20)
    session, transport = connect(host, "flood")
    for _ in range(19):
        session.handle_frame("{}")
    assert session.state is CONNECTED
    session.handle_frame("{}\n{}\n{}")
    assert session.state is CLOSED and transport.closed == model.DISCONNECT_TOO_MANY_REQUESTS
    assert host.metrics.registry.get_sample_value("pushgate_refused_commands_total") == 1


def test_a_connect_with_every_subscribe_in_one_frame_fits_the_default_burst():
    host = make_host()
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {"token": connection_token(SECRET, "js")}},
                               *({"id": n, "subscribe": {"channel": f"chat:{n}"}} for n in range(2, 129))))
    assert session.state is CONNECTED and len(session.channels) == 128


def test_personal_channels_are_readable_by_their_owner_only():
    host = make_host()
    mallory, transport = connect(host, "mallory")
    transport.messages()
    # A subscription token for someone else's personal channel, even one minted
    # for mallory by a careless backend, grants nothing.
    mallory.handle_frame(frame({"id": 2, "subscribe": {"channel": "#42",
                                                       "token": subscription_token(SECRET, "mallory", "#42")}}))
    assert transport.messages() == [{"id": 2, "error": {"code": 103, "message": "permission denied"}}]
    mallory.handle_frame(frame({"id": 3, "subscribe": {"channel": "#42"}}))
    assert transport.messages()[0]["error"]["code"] == 103
    assert mallory.channels == {"#mallory"}


def token_with(claims: dict) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def refused_at_connect(host, token: str):
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    return transport.closed


def test_tokens_that_could_read_what_is_not_theirs_are_invalid():
    host = make_host()
    for claims in ({"sub": "mallory", "channels": ["news", "#victim"]},   # another user's personal channel
                   {"sub": ""},                                           # anonymous, not allowed here
                   {"sub": "x" * 255},                                    # no envelope can address it
                   {"sub": "line\nbreak"},
                   {"sub": "u", "exp": float("inf")},                     # not interchangeable JSON
                   {"sub": "u", "info": {"name": "\ud800"}}):
        assert refused_at_connect(host, token_with(claims)) == model.DISCONNECT_INVALID_TOKEN, claims
    anonymous = make_host(allow_anonymous=True)
    assert refused_at_connect(anonymous, token_with({"sub": ""})) is None


def test_a_subscription_token_bound_to_another_connection_is_refused():
    host = make_host()
    session, transport = connect(host, "u")
    transport.messages()
    other = subscription_token(SECRET, "u", "private:x", extra={"client": "someone-else"})
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "private:x", "token": other}}))
    assert transport.closed == model.DISCONNECT_INVALID_TOKEN
    session, transport = connect(host, "u")
    transport.messages()
    mine = subscription_token(SECRET, "u", "private:x", extra={"client": session.client_id})
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "private:x", "token": mine}}))
    assert "subscribe" in transport.messages()[0]


def test_a_lost_publication_is_told_to_its_live_subscribers():
    host = make_host()
    session, transport = connect(host, "u", channels=["feed"])
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "news"}}))
    transport.messages()
    host.history.gap("news", time.time_ns())
    host.streams_broken(("news",))
    assert transport.messages() == [{"push": {"channel": "news", "unsubscribe": {
        "code": 2500, "reason": "insufficient state"}}}]
    assert "news" not in session.channels and session.state is CONNECTED
    host.streams_broken(("feed",))  # a server-side subscription: the client reconnects
    assert transport.closed == model.DISCONNECT_INSUFFICIENT_STATE


def test_handshakes_are_shed_while_the_loop_runs_late():
    host = Node(Settings(jwt_secret=SECRET, lookupd_http_address=["http://127.0.0.1:1"]))
    assert host.admit_handshake() is None
    host.loop_lag = 0.5
    assert host.admit_handshake() == "overloaded"
    host.loop_lag = 0.0
    host.draining = True
    assert host.admit_handshake() == "draining"


def test_map_subscriptions_and_publishes_and_track_are_refused_not_served_as_plain_ones():
    # The protocol's map features (subscribe/publish ``type``, ``key``,
    # ``removed``; sub_refresh track/untrack): taken as plain commands they
    # would subscribe to, or publish into, a stream the client did not ask for.
    host = make_host()
    session, transport = connect(host, channels=["news"])
    transport.messages()
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "sport", "type": 1}},
                               {"id": 3, "publish": {"channel": "news", "data": {}, "type": 1, "key": "k"}},
                               {"id": 4, "sub_refresh": {"channel": "news", "token": "t", "type": 1}}))
    replies = {m["id"]: m for m in transport.messages()}
    for cmd_id in (2, 3, 4):
        assert replies[cmd_id]["error"] == {"code": 108, "message": model.ERROR_NO_MAPS.message}, replies[cmd_id]
    assert session.state is CONNECTED and "sport" not in session.channels


def test_the_protobuf_schema_carries_the_map_fields_so_they_are_not_dropped():
    from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF, uvarint
    from gateway.protocols.centrifugo.schema import CLASSES
    command = CLASSES["Command"](id=7, publish=CLASSES["PublishRequest"](channel="news", type=1, key="k"))
    body = command.SerializeToString()
    (decoded,) = PROTOBUF.decode(uvarint(len(body)) + body)
    assert decoded.method == "publish" and decoded.params.get("type") == 1 and decoded.params.get("key") == "k"
