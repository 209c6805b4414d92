"""The session while the backend decides, in process (no sockets): commands
wait their turn in order, a closed connection withdraws its call, what may
queue is bounded, and each decision is applied as the protocol says."""
from __future__ import annotations

import asyncio

import pytest
import ujson

from gateway.backend.caller import ANSWER, Outcome
from gateway.core.session import CLOSED, CONNECTED, HELD_LIMIT
from gateway.protocols.centrifugo import proxy
from gateway.config import ConfigError
from tests.helpers import run, wait_for
from tests.proxy_backend import Backend
from tests.test_config import settings
from tests.inprocess import frame, make_host, open_session

URL = "http://127.0.0.1:9/centrifugo"


class Calls:
    """Stands in for a proxy's caller: each call's body and its future, answered by the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, asyncio.Future]] = []
        self.headers: list[dict | None] = []

    def __call__(self, body: bytes, headers: dict | None = None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.calls.append((proxy.json_value(body), future))
        self.headers.append(headers)
        return future

    def answer(self, index: int, answer: dict) -> None:
        self.calls[index][1].set_result(Outcome(ANSWER, answer))


def host_with_proxies():
    host = make_host(connect_proxy_url=f"{URL}/connect", rpc_proxy_url=f"{URL}/rpc",
                     subscribe_proxy_url=f"{URL}/subscribe", subscribe_proxy=["room:*"])
    proxies = proxy.proxies_of(host)
    fakes = {}
    for name in ("connect", "rpc", "subscribe"):
        fakes[name] = Calls()
        getattr(proxies, name).call = fakes[name]
    return host, fakes


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_commands_wait_in_order_behind_the_backend():
    async def scenario():
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {"name": "js"}},
                                   {"id": 2, "subscribe": {"channel": "room:a"}},
                                   {"id": 3, "subscribe": {"channel": "news"}}))
        session.handle_frame(frame({"id": 4, "rpc": {"method": "m", "data": {"x": 1}}}))
        assert transport.messages() == [] and len(fakes["connect"].calls) == 1
        body = fakes["connect"].calls[0][0]
        assert body == {"client": session.client_id, "transport": "test", "protocol": "json", "encoding": "json",
                        "name": "js"} and len(body["client"]) == 36
        fakes["connect"].answer(0, {"result": {"user": "ann", "data": {"hi": 1}, "meta": {"m": 1}}})
        await settle()
        assert session.state is CONNECTED and session.user == "ann" and session.client_id == body["client"]
        sent = transport.messages()
        assert [m.get("id") for m in sent] == [1] and sent[0]["connect"]["data"] == {"hi": 1}  # room:a waits
        assert fakes["subscribe"].calls[0][0]["meta"] == {"m": 1}
        fakes["subscribe"].answer(0, {"result": {"data": {"welcome": 2}}})
        await settle()
        sent = transport.messages()
        assert [m.get("id") for m in sent] == [2, 3]   # news needs no call; the rpc waits
        assert sent[0]["subscribe"]["data"] == {"welcome": 2}
        assert fakes["rpc"].calls[0][0]["data"] == {"x": 1}
        fakes["rpc"].answer(0, {"error": {"code": 1001, "message": "no"}})
        await settle()
        assert transport.messages() == [{"id": 4, "error": {"code": 1001, "message": "no"}}]
    run(scenario())


def test_a_closed_connection_withdraws_its_call_and_nothing_is_applied():
    async def scenario():
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        future = fakes["connect"].calls[0][1]
        session.transport_closed()
        assert future.cancelled() and session.state is CLOSED and session.held is None
        assert session not in host.sessions
    run(scenario())


def test_what_may_queue_behind_the_backend_is_bounded():
    async def scenario():
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        for n in range(HELD_LIMIT + 1):
            session.handle_frame(frame({"id": n + 2, "rpc": {"method": "m"}}))
            if session.state is CLOSED:
                break
        assert session.state is CLOSED and transport.closed[0] == 3501
        assert fakes["connect"].calls[0][1].cancelled()
    run(scenario())


def test_a_failed_or_refused_connect_drops_the_rest_of_the_frame():
    async def scenario():
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": "news"}}))
        fakes["connect"].calls[0][1].set_result(Outcome("timeout"))
        await settle()
        assert transport.messages() == [{"id": 1, "error": {"code": 100, "message": "internal server error",
                                                            "temporary": True}}]
        assert session.state is not CLOSED   # it may connect again
        session.handle_frame(frame({"id": 3, "connect": {}}))
        fakes["connect"].answer(1, {"disconnect": {"code": 4501, "reason": "unauthorized"}})
        await settle()
        assert session.state is CLOSED and transport.closed[:2] == (4501, "unauthorized")
    run(scenario())


def test_rpc_goes_to_the_proxy_of_its_method_prefix():
    async def scenario():
        host = make_host(allow_anonymous=True, rpc_proxy_url=f"{URL}/rpc", rpc_proxy=[("admin.", f"{URL}/admin")])
        proxies = proxy.proxies_of(host)
        default, admin = Calls(), Calls()
        proxies.rpc.call = default
        proxies.rpc_routes[0][1].call = admin
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        session.handle_frame(frame({"id": 2, "rpc": {"method": "admin.stats"}}))
        assert len(admin.calls) == 1 and not default.calls and admin.calls[0][0]["method"] == "admin.stats"
        admin.answer(0, {"result": {"data": [1]}})
        await settle()
        session.handle_frame(frame({"id": 3, "rpc": {"method": "stats"}}))
        assert len(default.calls) == 1
        default.answer(0, {"result": {}})
        await settle()
        assert transport.messages()[1:] == [{"id": 2, "rpc": {"data": [1]}}, {"id": 3, "rpc": {}}]
    run(scenario())


def test_without_proxies_nothing_is_built_and_the_old_answers_stand():
    host = make_host(allow_anonymous=True)
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {}}, {"id": 2, "rpc": {"method": "m"}},
                               {"id": 3, "publish": {"channel": "news", "data": 1}}))
    assert [m.get("error", {}).get("code") for m in transport.messages()[1:]] == [108, 103]
    assert proxy.SHARED_KEY not in host._shared and session.proxied is None


def test_the_connect_result_applies_as_a_tokens_claims_would():
    async def scenario():
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        fakes["connect"].answer(0, {"result": {
            "user": "ann", "channels": ["news"], "info": {"name": "Ann"}, "expire_at": int(host.wall()) + 600,
            "subs": {"room:ann": {"data": {"welcome": 1}, "info": {"role": "owner"}}}}})
        await settle()
        reply = transport.messages()[0]["connect"]
        assert set(reply["subs"]) == {"#ann", "news", "room:ann"}
        assert reply["subs"]["room:ann"]["data"] == {"welcome": 1} and "data" not in reply["subs"]["news"]
        assert reply["expires"] is True and 590 <= reply["ttl"] <= 600   # no refresh proxy: the client refreshes
        assert session.channels == {"#ann", "news", "room:ann"}
    run(scenario())


def test_a_connect_result_of_the_wrong_shape_is_refused_and_counted():
    async def scenario():
        host, fakes = host_with_proxies()
        bad = [{"result": {"user": 42}}, {"result": {"user": "ann", "channels": ["#bob"]}},
               {"result": {"user": "ann", "subs": {"x": 1}}}, {"result": {"user": "ann", "b64data": "%%%"}},
               {"result": {"user": "ann", "expire_at": "soon"}}, {"result": {"user": "ann", "expire_at": 10**400}}]
        for n, answer in enumerate(bad):
            session, transport = open_session(host)
            session.handle_frame(frame({"id": 1, "connect": {}}))
            fakes["connect"].answer(n, answer)
            await settle()
            assert transport.messages() == [{"id": 1, "error": {"code": 100, "message": "internal server error",
                                                                "temporary": True}}], answer
        refused = host.metrics.registry.get_sample_value("pushgate_proxy_calls_total",
                                                         {"proxy": "connect", "outcome": "refused"})
        assert refused == len(bad)
        # An expire_at already past: error 110, as Centrifugo answers an expired connection.
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        fakes["connect"].answer(len(bad), {"result": {"user": "ann", "expire_at": int(host.wall()) - 1}})
        await settle()
        assert transport.messages()[0]["error"]["code"] == 110
    run(scenario())


def test_a_subscription_token_works_beside_the_subscribe_proxy():
    async def scenario():
        from auth import subscription_token
        from tests.stack import SECRET
        host, fakes = host_with_proxies()
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        fakes["connect"].answer(0, {"result": {"user": "ann"}})
        await settle()
        token = subscription_token(SECRET, "ann", "room:vip", ttl=600)
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": "room:vip", "token": token}}))
        assert not fakes["subscribe"].calls and "room:vip" in session.channels
        assert transport.messages()[-1]["subscribe"]["expires"] is True
    run(scenario())


@pytest.mark.parametrize("argv, named", [
    (["--connect-proxy-url=ftp://x"], "--connect-proxy-url"),
    (["--rpc-proxy=admin."], "--rpc-proxy"),
    (["--proxy-headers=bad header"], "--proxy-headers"),
    (["--subscribe-proxy=room:*"], "--subscribe-proxy"),
    (["--publish-proxy=room:*"], "--publish-proxy"),
    (["--proxy-concurrency=0"], "--proxy-concurrency"),
])
def test_proxy_settings_are_checked_and_name_the_flag(argv, named):
    with pytest.raises(ConfigError) as exc:
        settings(["--jwt-secret=" + "s" * 32, "--nsqd-tcp-address=h:1", *argv], {})
    assert str(exc.value).startswith(named)


def test_a_connect_proxy_alone_is_enough_to_authenticate():
    s = settings(["--connect-proxy-url=http://app/centrifugo/connect", "--nsqd-tcp-address=h:1",
                  "--proxy-headers=Cookie, X-Request-Id", "--rpc-proxy=admin.=http://admin/rpc"], {})
    assert s.proxy_headers == "cookie,x-request-id" and s.rpc_proxy == [("admin.", "http://admin/rpc")]


def test_failures_are_logged_at_most_once_a_second_and_all_counted(caplog):
    async def scenario():
        from gateway.backend.caller import Caller, CallerMetrics
        from gateway.core.metrics import Metrics
        now = [100.0]
        metrics = Metrics()
        caller = Caller("connect", f"{URL}/connect", CallerMetrics(metrics.registry), timeout=1, concurrency=1,
                        queue=1, clock=lambda: now[0])
        loop = asyncio.get_running_loop()
        for _ in range(50):
            caller._fail(loop.create_future(), "unavailable", "refused")
        now[0] += 1.5
        caller._fail(loop.create_future(), "unavailable", "refused")
        return metrics
    with caplog.at_level("ERROR", logger="pushgate.backend"):
        metrics = run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1].endswith("(49 more like it in the last 1 s)")
    assert metrics.registry.get_sample_value("pushgate_proxy_calls_total",
                                             {"proxy": "connect", "outcome": "unavailable"}) == 51


def test_override_presence_false_keeps_a_subscriber_out_of_presence():
    async def scenario():
        host = make_host(connect_proxy_url=f"{URL}/connect", subscribe_proxy_url=f"{URL}/subscribe",
                         subscribe_proxy=["room:*"], presence=["room:*"])
        proxies = proxy.proxies_of(host)
        connects, subscribes = Calls(), Calls()
        proxies.connect.call, proxies.subscribe.call = connects, subscribes
        sessions = []
        for n, user in enumerate(("ann", "ghost")):
            session, transport = open_session(host)
            session.handle_frame(frame({"id": 1, "connect": {}}))
            hidden = {"override": {"presence": {"value": False}}} if user == "ghost" else {}
            connects.answer(n, {"result": {"user": user, "subs": {"room:lobby": hidden}}})
            await settle()
            session.handle_frame(frame({"id": 2, "subscribe": {"channel": "room:a"}}))
            subscribes.answer(n, {"result": hidden})
            await settle()
            assert [m["id"] for m in transport.messages()] == [1, 2]
            sessions.append(session)
        for channel in ("room:a", "room:lobby"):
            assert {info["user"] for info in host.presence.clients(channel).values()} == {"ann"}, channel
        for session in sessions:
            assert {"room:a", "room:lobby"} <= session.channels
            session.transport_closed()
        assert host.presence.clients("room:a") == {}
        # An override of the wrong shape is refused like any garbage.
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        connects.answer(2, {"result": {"user": "x", "subs": {"room:b": {"override": {"presence": True}}}}})
        await settle()
        assert transport.messages()[0]["error"]["code"] == 100
    run(scenario())


def test_the_caller_bounds_calls_in_flight_the_queue_and_the_wait():
    async def scenario():
        from gateway.backend.caller import TIMEOUT, Caller, CallerMetrics, OVERLOADED
        from gateway.core.metrics import Metrics
        backend = await Backend().start()
        backend.delay = 0.4
        caller = Caller("rpc", backend.url("rpc"), CallerMetrics(Metrics().registry), timeout=0.6, concurrency=2,
                        queue=2)
        body = b'{"method":"echo","data":1}'
        try:
            futures = [caller.call(body) for _ in range(5)]
            assert caller.in_flight == 2 and futures[4].done() and futures[4].result().kind == OVERLOADED
            futures[3].cancel()       # its connection closed while it waited: never sent
            outcomes = [await f for f in futures[:3]]
            assert [o.kind for o in outcomes[:2]] == ["answer", "answer"]
            assert outcomes[0].body == {"result": {"data": 1}}
            # The third waited 0.4 s of its 0.6 s, then had 0.2 s left for a call that takes 0.4 s.
            assert outcomes[2].kind == TIMEOUT
            assert backend.max_in_flight == 2
            await wait_for(lambda: backend.in_flight == 0, what="the backend to finish the call given up on")
            assert len(backend.calls["rpc"]) == 3   # the cancelled one was never sent
            assert caller.in_flight == 0 and not caller._queue
        finally:
            await caller.close()
            await backend.stop()
    run(scenario())


def test_the_refresh_proxy_is_asked_aside_and_withdrawn_when_the_connection_closes():
    async def scenario():
        host = make_host(connect_proxy_url=f"{URL}/connect", refresh_proxy_url=f"{URL}/refresh")
        proxies = proxy.proxies_of(host)
        connects, refreshes = Calls(), Calls()
        proxies.connect.call, proxies.refresh.call = connects, refreshes
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        connects.answer(0, {"result": {"user": "ann", "expire_at": int(host.wall()) + 1}})
        await settle()
        assert "expires" not in transport.messages()[0]["connect"]   # the client is not asked
        host.expiry.check(host.wall() + 1)        # its expiry has come: no close delay, the backend is asked
        assert len(refreshes.calls) == 1 and refreshes.calls[0][0]["user"] == "ann"
        session.handle_frame(frame({"id": 2, "rpc": {"method": "m"}}))   # the client's commands do not wait
        assert transport.messages()[-1]["error"]["code"] == 108
        refreshes.answer(0, {"result": {"expire_at": int(host.wall()) + 60, "meta": {"v": 2}}})
        await settle()
        host.expiry.check(host.wall() + 30)
        assert session.state is CONNECTED and len(refreshes.calls) == 1
        host.expiry.check(host.wall() + 61)
        assert len(refreshes.calls) == 2 and refreshes.calls[1][0]["meta"] == {"v": 2}   # the refreshed meta
        session.transport_closed()
        assert refreshes.calls[1][1].cancelled()
    run(scenario())


def test_a_publish_carries_the_publishers_conn_info_and_chan_info_to_nsq(monkeypatch):
    sent: list[bytes] = []

    async def fake_publish(address, topic, body, timeout=5.0):
        sent.append(body)

    monkeypatch.setattr(proxy.publisher, "publish", fake_publish)

    async def scenario():
        host = make_host(connect_proxy_url=f"{URL}/connect", subscribe_proxy_url=f"{URL}/subscribe",
                         subscribe_proxy=["room:*"], publish_proxy_url=f"{URL}/publish", publish_proxy=["room:*"])
        proxies = proxy.proxies_of(host)
        connects, subscribes, publishes = Calls(), Calls(), Calls()
        proxies.connect.call, proxies.subscribe.call, proxies.publish.call = connects, subscribes, publishes
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {}}))
        connects.answer(0, {"result": {"user": "ann", "info": {"name": "Ann"}}})
        await settle()
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": "room:a"}}))
        subscribes.answer(0, {"result": {"info": {"role": "host"}}})
        await settle()
        session.handle_frame(frame({"id": 3, "publish": {"channel": "room:a", "data": {"t": 1}}},
                                   {"id": 4, "rpc": {"method": "m"}}))
        publishes.answer(0, {"result": {"skip_history": True}})
        await settle()
        assert [m["id"] for m in transport.messages()] == [1, 2, 3, 4]   # the rpc waited for nsqd's answer
        envelope = ujson.loads(sent[0])
        assert envelope == {"channel": "room:a", "data": {"t": 1}, "skip_history": True, "info": {
            "user": "ann", "client": session.client_id, "conn_info": {"name": "Ann"}, "chan_info": {"role": "host"}}}
        session.handle_frame(frame({"id": 5, "unsubscribe": {"channel": "room:a"}}))
        assert session.proxied.chan_info == {}
    run(scenario())


def test_a_connection_no_proxy_concerns_costs_nothing_more():
    import sys
    host = make_host(allow_anonymous=True, connect_proxy_url=f"{URL}/connect")
    session, transport = open_session(host)
    assert session.proxied is None and not hasattr(session, "__dict__")
    # The same size as a Session: the proxies keep their state apart.
    from gateway.core.session import Session
    assert sys.getsizeof(session) == sys.getsizeof(Session(host, transport))


def test_what_the_proxies_keep_goes_with_the_connection():
    async def scenario():
        host, fakes = host_with_proxies()
        sessions = []
        for n in range(20):
            session, transport = open_session(host)
            session.handle_frame(frame({"id": 1, "connect": {}}))
            fakes["connect"].answer(n, {"result": {"user": f"u{n}", "meta": {"n": n}}})
            sessions.append(session)
        await settle()
        assert all(s.proxied is not None for s in sessions)
        for session in sessions:
            session.transport_closed()
        assert not any(s in proxy.STATES for s in sessions)
    run(scenario())


def test_emulated_headers_are_passed_only_when_named():
    async def scenario():
        host = make_host(connect_proxy_url=f"{URL}/connect", rpc_proxy_url=f"{URL}/rpc",
                         proxy_emulated_headers="authorization")
        proxies = proxy.proxies_of(host)
        connects, rpcs = Calls(), Calls()
        proxies.connect.call, proxies.rpc.call = connects, rpcs
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {"headers": {"Authorization": "Bearer t", "Cookie": "x=1"}}}))
        assert connects.headers[0] == {"Authorization": "Bearer t"}   # Cookie is not named: never from the client
        connects.answer(0, {"result": {"user": "ann"}})
        await settle()
        session.handle_frame(frame({"id": 2, "rpc": {"method": "m"}}))
        assert rpcs.headers[0] == {"Authorization": "Bearer t"}   # and on the connection's later calls
        other = make_host(connect_proxy_url=f"{URL}/connect")   # not configured: nothing from the client
        proxy.proxies_of(other).connect.call = calls = Calls()
        session, _ = open_session(other)
        session.handle_frame(frame({"id": 1, "connect": {"headers": {"Authorization": "Bearer t"}}}))
        assert calls.headers[0] is None
    run(scenario())
