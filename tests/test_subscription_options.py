"""Subscription options in process, on a fake clock: the server API's
``subscribe`` options (``expire_at``, ``recover_since``, ``override``), a
refresh's ``info`` in presence, overrides as pushgate honours or refuses
them, and the latest value on subscribe (``--cache``, Centrifugo's cache
recovery mode). The same with stock clients against real nodes:
tests/test_subscription_options_stack.py."""
from __future__ import annotations

import asyncio

import pytest

from gateway.core.history import History, Published, Retention, epoch_of, offset_of, to_position
from gateway.core.session import CLOSED, CONNECTED, ServerSubscription
from gateway.core.presence import NO_PRESENCE
from gateway.config import ConfigError
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.options import DEFAULT, BadOverride, SubscriptionOptions, Unhonoured, options_for
from gateway.ops.server_api import BadRequest, Failed
from tests.inprocess import FakeClock, frame, make_host
from tests.test_core import connected
from tests.test_server_api_core import make_api

NS = 10**9


def on(value: bool) -> dict:
    return {"value": value}


# --- overrides ---------------------------------------------------------------------------

def test_each_override_is_honoured_or_refused_with_a_reason():
    host = make_host(presence=["both:*", "listed:*"], join_leave=["both:*", "announced:*"])
    presence, history = host.presence, History(Retention(100, 300), [("bare:*", Retention(0, 300))])

    def options(channel, **override):
        return options_for({k: on(v) for k, v in override.items()}, channel, presence, history)

    assert options("listed:1") == DEFAULT and options_for(None, "x", presence, history) == DEFAULT
    # presence: false keeps a subscriber out; true needs --presence.
    assert options("listed:1", presence=False) == SubscriptionOptions(in_presence=False)
    assert options("both:1", presence=False, join_leave=False).in_presence is False
    assert options("listed:1", presence=True) == DEFAULT
    with pytest.raises(Unhonoured, match="--presence"):
        options("announced:1", presence=True)
    # join_leave: false where only --join-leave tracks it; refused where presence lists the subscriber.
    assert options("announced:1", join_leave=False).in_presence is False
    assert options("listed:1", join_leave=False) == DEFAULT   # nothing announced there anyway
    with pytest.raises(Unhonoured, match="give presence false too"):
        options("both:1", join_leave=False)
    with pytest.raises(Unhonoured, match="--join-leave"):
        options("listed:1", join_leave=True)
    with pytest.raises(Unhonoured, match="presence false"):
        options("both:1", join_leave=True, presence=False)
    # force_push_join_leave follows the channel.
    assert options("announced:1", force_push_join_leave=True) == DEFAULT
    assert options("listed:1", force_push_join_leave=False) == DEFAULT
    with pytest.raises(Unhonoured, match="every subscriber"):
        options("announced:1", force_push_join_leave=False)
    with pytest.raises(Unhonoured, match="--join-leave"):
        options("listed:1", force_push_join_leave=True)
    # force_recovery false: no recovery; true and force_positioning need history; positioning false is refused.
    assert options("news", force_recovery=False) == SubscriptionOptions(recoverable=False)
    assert options("news", force_recovery=True, force_positioning=True) == DEFAULT
    assert options("bare:1", force_positioning=False, force_recovery=False) == SubscriptionOptions(recoverable=False)
    for override in ({"force_recovery": True}, {"force_positioning": True}):
        with pytest.raises(Unhonoured, match="no history"):
            options("bare:1", **override)
    with pytest.raises(Unhonoured, match="positions every subscriber"):
        options("news", force_positioning=False)
    # Shapes: an unknown option, a bare boolean.
    for bad in ({"presense": on(False)}, {"presence": False}, {"presence": {"value": "no"}}, ["presence"]):
        with pytest.raises(BadOverride):
            options_for(bad, "listed:1", presence, history)
    assert options_for({"presence": None}, "x", NO_PRESENCE, history) == DEFAULT


# --- the server API's subscribe -----------------------------------------------------------

def test_a_server_subscription_with_expire_at_closes_the_connection_with_3006_when_it_comes():
    clock = FakeClock()
    host = make_host(clock)
    session, transport = connected(host, "ann")
    other, _ = connected(host, "bob")
    transport.messages()
    assert session.server_subscribe("news", ServerSubscription(expires_at=int(clock.wall()) + 5)) is None
    assert session.server_subscribe("chat:1", ServerSubscription(expires_at=int(clock.wall()) - 1)).reason == \
        "expire_at is not in the future"
    assert other.server_subscribe("news", ServerSubscription()) is None
    push = transport.messages()[0]["push"]
    assert push["channel"] == "news" and push["subscribe"]["recoverable"] and "expires" not in push["subscribe"]
    clock.advance(4)
    host.expiry.check(clock.wall())
    assert session.state is CONNECTED
    clock.advance(1.5)
    host.expiry.check(clock.wall())
    # Nothing more for it: closed, as Centrifugo closes a server-side subscription that expired.
    assert session.state is CLOSED and transport.closed == model.DISCONNECT_SUBSCRIPTION_EXPIRED
    assert other.state is CONNECTED and "news" in other.channels
    assert host.hub.count("news") == 1


def test_recover_since_on_a_server_subscription_sends_what_was_missed_or_says_it_cannot():
    clock = FakeClock()
    host = make_host(clock)
    host.history.continuity_from(clock.ns() - 60 * NS)
    epoch, before = to_position(clock.ns() - 2 * NS)
    offsets = []
    for n in range(3):
        offset = host.history.add("news", clock.ns() - NS + n, b'{"n":%d}' % n, clock.ns())
        offsets.append(offset)
    clock.advance(2)
    session, transport = connected(host, "ann")
    transport.messages()
    assert session.server_subscribe("news", ServerSubscription(since=(epoch, before))) is None
    messages = transport.messages()
    assert messages[0]["push"]["subscribe"] == {"recoverable": True, "positioned": True, "epoch": epoch,
                                                "offset": before, "was_recovering": True, "recovered": True}
    assert [(m["push"]["pub"]["data"], m["push"]["pub"]["offset"]) for m in messages[1:]] == \
        [({"n": n}, offsets[n]) for n in range(3)]
    # From a position this node cannot vouch for: the top, recovered false, nothing else.
    assert session.server_subscribe("chat:1", ServerSubscription(since=("1", 5))) is None
    messages = transport.messages()
    assert len(messages) == 1 and messages[0]["push"]["subscribe"]["recovered"] is False
    assert messages[0]["push"]["subscribe"]["offset"] > 5


def test_server_subscribe_overrides_reach_the_session():
    clock = FakeClock()
    host = make_host(clock, presence=["room:*"])
    session, transport = connected(host, "ann")
    transport.messages()
    hidden = ServerSubscription(override={"presence": on(False), "force_recovery": on(False)})
    assert session.server_subscribe("room:1", hidden) is None
    assert "recoverable" not in transport.messages()[0]["push"]["subscribe"]
    assert host.presence.clients("room:1") == {} and "room:1" in session.channels
    refused = session.server_subscribe("room:2", ServerSubscription(override={"join_leave": on(True)}))
    assert refused is not None and "--join-leave" in refused.reason and "room:2" not in session.channels


def test_the_server_api_checks_subscribe_options_before_it_acts():
    api = make_api(join_leave=[], history=[("bare:*", 0, None)])

    def failed(params):
        with pytest.raises(Failed) as caught:
            asyncio.run(api.subscribe({"user": "ann", **params}))
        return caught.value.error

    wall = int(api.node.host.wall())
    assert failed({"channel": "news", "expire_at": wall - 10}).code == 110
    error = failed({"channel": "bare:1", "recover_since": {"offset": 1, "epoch": "1"}})
    assert error.code == 108 and "no history" in error.message
    error = failed({"channel": "room:1", "override": {"join_leave": on(True)}})
    assert error.code == 108 and "--join-leave" in error.message
    assert failed({"channel": "room:1", "override": {"nope": on(True)}}).code == 107
    with pytest.raises(BadRequest):
        asyncio.run(api.subscribe({"user": "ann", "channel": "news", "recover_since": {"offset": "1"}}))
    # info on refresh needs a future expire_at, as Centrifugo applies it.
    with pytest.raises(Failed) as caught:
        asyncio.run(api.refresh({"user": "ann", "info": {"name": "Ann"}}))
    assert caught.value.error.code == 107 and "future expire_at" in caught.value.error.message


# --- refresh info in presence -----------------------------------------------------------

def test_a_refresh_with_info_updates_this_connections_presence_entries_and_tells_the_other_nodes():
    clock = FakeClock()
    host = make_host(clock, presence=["room:*"])
    session, transport = connected(host, "ann", info={"name": "Ann"})
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "chat:1"}}))
    session.server_subscribe("room:1", ServerSubscription())
    assert host.presence.clients("room:1")[session.client_id]["conn_info"] == b'{"name":"Ann"}'
    host.presence.take_deltas()
    session.server_refresh(int(clock.wall()) + 60, b'{"name":"Ann B."}')
    assert host.presence.clients("room:1")[session.client_id]["conn_info"] == b'{"name":"Ann B."}'
    deltas = host.presence.take_deltas()
    assert [d["up"] for d in deltas] == [[["room:1", session.client_id, "ann", '{"name":"Ann B."}', None]]]
    refresh = transport.messages()[-1]["push"]["refresh"]
    assert refresh["expires"] is True and refresh["ttl"] == 60


# --- the latest value on subscribe (--cache) ---------------------------------------------

def test_history_latest_is_centrifugos_cache_mode_and_vouches_like_a_recovery():
    now = 1_763_700_000 * NS
    history = History(Retention(10, 300), margin_ns=NS)
    history.continuity_from(now - 60 * NS)
    epoch = epoch_of(now)
    for n in range(3):
        history.add("prices", now - 10 * NS + n, b'{"n":%d}' % n, now)
    # An empty channel: not recovered (Centrifugo: no latest publication).
    answer = history.latest("quiet", "", 0, now)
    assert not answer.recovered and answer.publications == []
    # No position: the latest alone, recovered, with the client's offset (0).
    answer = history.latest("prices", "", 0, now)
    assert answer.recovered and [p.data for p in answer.publications] == [b'{"n":2}'] and answer.offset == 0
    # A position it can recover from: only the newest of what it missed; none when up to date.
    first = offset_of(now - 10 * NS)
    answer = history.latest("prices", epoch, first, now)
    assert answer.recovered and [p.data for p in answer.publications] == [b'{"n":2}'] and answer.offset == first
    top = offset_of(now - 10 * NS + 2)
    answer = history.latest("prices", epoch, top, now)
    assert answer.recovered and answer.publications == []
    # A message lost after the latest one: this node cannot vouch for it.
    history.gap("prices", now)
    answer = history.latest("prices", "", 0, now + NS)
    assert not answer.recovered and answer.publications == []
    # A node that started reading after the latest one cannot either.
    late = History(Retention(10, 300), margin_ns=NS)
    late.add("prices", now - 10 * NS, b"1", now)
    late.continuity_from(now - 5 * NS)
    assert not late.latest("prices", "", 0, now).recovered


def test_cache_channels_give_the_latest_publication_on_subscribe_and_at_connect():
    clock = FakeClock()
    host = make_host(clock, cache=["prices:*", "#ann"], public_channels="news,prices:*")
    host.history.continuity_from(clock.ns() - 60 * NS)
    for n in range(3):
        host.history.add("prices:eur", clock.ns() - 5 * NS + n, b'{"n":%d}' % n, clock.ns())
    host.history.add("#ann", clock.ns() - 5 * NS, b'{"hi":1}', clock.ns())
    session, transport = connected(host, "ann")
    connect = transport.messages()[0]["connect"]
    assert connect["subs"]["#ann"]["recovered"] is True and connect["subs"]["#ann"]["was_recovering"] is True
    assert [p["data"] for p in connect["subs"]["#ann"]["publications"]] == [{"hi": 1}]
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "prices:eur"}},
                               {"id": 3, "subscribe": {"channel": "prices:usd", "flag": 2}},
                               {"id": 4, "subscribe": {"channel": "news"}}))
    messages = transport.messages()
    assert [m["id"] for m in messages] == [2, 3, 4], messages
    eur, usd, news = (m["subscribe"] for m in messages)
    assert eur["recovered"] and eur["was_recovering"] and eur["offset"] == 0
    assert [p["data"] for p in eur["publications"]] == [{"n": 2}]
    # An empty channel: recovered false (never refused with 112 in cache mode), nothing to give.
    assert usd["was_recovering"] and not usd["recovered"] and "publications" not in usd
    assert "was_recovering" not in news   # not a --cache channel


def _tagged(data: bytes, **tags: str) -> Published:
    published = Published(data)
    published.tags = tags
    return published


def test_history_latest_with_a_filter_is_the_newest_publication_it_accepts():
    now = 1_763_700_000 * NS
    history = History(Retention(10, 300), margin_ns=NS)
    history.continuity_from(now - 60 * NS)
    epoch = epoch_of(now)
    history.add("prices", now - 11 * NS, _tagged(b'{"n":-1}', cur="eur"), now)
    history.add("prices", now - 10 * NS, _tagged(b'{"n":0}', cur="eur"), now)
    history.add("prices", now - 10 * NS + 1, _tagged(b'{"n":1}', cur="usd"), now)
    history.add("prices", now - 10 * NS + 2, _tagged(b'{"n":2}', cur="gbp"), now)

    def eur(data: bytes) -> bool:
        return getattr(data, "tags", None) == {"cur": "eur"}

    # No position: the newest eur one, though two others came after it.
    answer = history.latest("prices", "", 0, now, eur)
    assert answer.recovered and [p.data for p in answer.publications] == [b'{"n":0}'] and answer.offset == 0
    # From a position: the newest eur one of what it missed; none missed matches: up to date.
    answer = history.latest("prices", epoch, offset_of(now - 11 * NS), now, eur)
    assert answer.recovered and [p.data for p in answer.publications] == [b'{"n":0}']
    answer = history.latest("prices", epoch, offset_of(now - 10 * NS), now, eur)
    assert answer.recovered and answer.publications == []
    # None held matches: as an empty channel.
    answer = history.latest("prices", "", 0, now, lambda data: False)
    assert not answer.recovered and answer.publications == []


def test_a_filtered_cache_subscribe_gets_the_newest_publication_that_matches():
    clock = FakeClock()
    host = make_host(clock, cache=["prices:*"], public_channels="prices:*")
    host.history.continuity_from(clock.ns() - 60 * NS)
    host.history.add("prices:fx", clock.ns() - 5 * NS, _tagged(b'{"n":0}', cur="eur"), clock.ns())
    host.history.add("prices:fx", clock.ns() - 5 * NS + 1, _tagged(b'{"n":1}', cur="usd"), clock.ns())
    session, transport = connected(host, "ann")
    transport.messages()
    session.handle_frame(frame({"id": 2, "subscribe": {
        "channel": "prices:fx", "tf": {"key": "cur", "cmp": "eq", "val": "eur"}}}))
    (reply,) = transport.messages()
    assert reply["subscribe"]["recovered"] is True
    # Before: the latest (usd) was dropped by the filter and the eur one never sent.
    assert [p["data"] for p in reply["subscribe"].get("publications", [])] == [{"n": 0}]


def test_cache_needs_history():
    from gateway.config import Settings, check
    with pytest.raises(ConfigError, match="--cache"):
        check(Settings(jwt_secret="x" * 32, lookupd_http_address=["http://127.0.0.1:1"],
                       cache=["prices:*"], history=[("prices:*", 0, None)]))


def test_session_targets_the_connection_whose_connect_result_named_it():
    api = make_api()
    host = api.node.host
    first, _ = connected(host, "ann")
    second, transport = connected(host, "ann")
    transport.session_id = "s-1"   # an emulation transport's session, as its connect result said
    assert api.node.peering.apply("api-subscribe", {"user": "ann", "channel": "news", "session": "s-1"}) == 1
    assert "news" in second.channels and "news" not in first.channels
    assert api.node.peering.apply("api-subscribe", {"user": "ann", "channel": "chat:1", "session": "nope"}) == 0


def test_a_server_subscriptions_expire_at_asks_the_sub_refresh_proxy_when_it_is_on():
    from gateway.backend.caller import ANSWER, Outcome
    from gateway.protocols.centrifugo import proxy
    from tests.test_proxy_core import Calls, settle

    async def scenario():
        clock = FakeClock()
        host = make_host(clock, sub_refresh_proxy_url="http://127.0.0.1:9/centrifugo/sub_refresh")
        calls = proxy.proxies_of(host).sub_refresh.call = Calls()
        session, transport = connected(host, "ann")
        assert session.server_subscribe("news", ServerSubscription(expires_at=int(clock.wall()) + 5)) is None
        clock.advance(5)
        host.expiry.check(clock.wall())
        await settle()
        assert calls.calls[0][0]["channel"] == "news" and session.state is CONNECTED
        calls.answer(0, {"result": {"expire_at": int(clock.wall()) + 10}})   # extended
        await settle()
        clock.advance(10)
        host.expiry.check(clock.wall())
        await settle()
        calls.calls[1][1].set_result(Outcome(ANSWER, {"result": {"expired": True}}))
        await settle()
        assert session.state is CLOSED and transport.closed == model.DISCONNECT_SUBSCRIPTION_EXPIRED

    asyncio.run(scenario())


def test_the_refresh_proxys_info_reaches_presence_and_bytes_that_are_not_json_are_refused():
    import base64

    from gateway.protocols.centrifugo import proxy
    from tests.inprocess import WIRE_PROTOBUF
    from tests.test_proxy_core import Calls, settle

    async def scenario():
        clock = FakeClock()
        host = make_host(clock, presence=["news"], refresh_proxy_url="http://127.0.0.1:9/centrifugo/refresh")
        calls = proxy.proxies_of(host).refresh.call = Calls()
        session, _ = connected(host, "ann", WIRE_PROTOBUF, ttl=2, info={"v": 1})
        session.server_subscribe("news", ServerSubscription())

        def conn_info():
            return host.presence.clients("news")[session.client_id].get("conn_info")
        assert conn_info() == b'{"v":1}'
        clock.advance(2)
        host.expiry.check(clock.wall())
        await settle()
        calls.answer(0, {"result": {"expire_at": int(clock.wall()) + 5, "b64info": base64.b64encode(b"\xff").decode()}})
        await settle()
        assert conn_info() == b'{"v":1}' and session.state is CONNECTED   # refused: a minute more, asked again
        clock.advance(60)
        host.expiry.check(clock.wall())
        await settle()
        calls.answer(1, {"result": {"expire_at": int(clock.wall()) + 5,
                                    "b64info": base64.b64encode(b'{"v": 2}').decode()}})
        await settle()
        assert conn_info() == b'{"v":2}'

    asyncio.run(scenario())


def test_the_sub_refresh_proxys_info_becomes_the_subscribers_chan_info_in_presence():
    from gateway.protocols.centrifugo import proxy
    from tests.test_proxy_core import Calls, settle

    async def scenario():
        clock = FakeClock()
        host = make_host(clock, presence=["room:*"], subscribe_proxy_url="http://127.0.0.1:9/centrifugo/subscribe",
                         subscribe_proxy=["room:*"], sub_refresh_proxy_url="http://127.0.0.1:9/centrifugo/sub_refresh")
        proxies = proxy.proxies_of(host)
        subscribes = proxies.subscribe.call = Calls()
        refreshes = proxies.sub_refresh.call = Calls()
        session, transport = connected(host, "ann")
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": "room:1"}}))
        subscribes.answer(0, {"result": {"info": {"seat": 1}, "expire_at": int(clock.wall()) + 5}})
        await settle()

        def chan_info():
            return host.presence.clients("room:1")[session.client_id].get("chan_info")
        assert chan_info() == b'{"seat":1}'
        host.presence.take_deltas()
        clock.advance(5)
        host.expiry.check(clock.wall())
        await settle()
        refreshes.answer(0, {"result": {"expire_at": int(clock.wall()) + 60, "info": {"seat": 2}}})
        await settle()
        assert chan_info() == b'{"seat":2}' and session.state is CONNECTED
        assert [d["up"] for d in host.presence.take_deltas()] == [[["room:1", session.client_id, "ann", None,
                                                                     '{"seat":2}']]]

    asyncio.run(scenario())


def test_a_connect_proxys_cache_recover_is_honoured_on_cache_channels_and_refused_elsewhere():
    from gateway.protocols.centrifugo import proxy
    from tests.inprocess import open_session
    from tests.test_proxy_core import Calls, settle

    async def scenario():
        clock = FakeClock()
        host = make_host(clock, connect_proxy_url="http://127.0.0.1:9/centrifugo/connect", cache=["prices:*"])
        host.history.continuity_from(clock.ns() - 60 * NS)
        host.history.add("prices:eur", clock.ns() - 5 * NS, b'{"p":1}', clock.ns())
        connects = proxy.proxies_of(host).connect.call = Calls()
        replies = []
        for n, channel in enumerate(("prices:eur", "news")):
            session, transport = open_session(host)
            session.handle_frame(frame({"id": 1, "connect": {}}))
            connects.answer(n, {"result": {"user": "ann", "subs": {channel: {"cache_recover": True}}}})
            await settle()
            replies.append(transport.messages()[0])
        sub = replies[0]["connect"]["subs"]["prices:eur"]
        assert sub["recovered"] and [p["data"] for p in sub["publications"]] == [{"p": 1}]
        assert replies[1]["error"]["code"] == 100   # logged: not a --cache channel

    asyncio.run(scenario())
