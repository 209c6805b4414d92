"""Subscription options with stock clients against real nodes and nsqd: the
server API's ``subscribe`` with ``recover_since``, ``override`` and
``expire_at``, ``refresh`` with ``info`` (presence on every node), the
subscribe and refresh proxies' ``override`` and ``info``, and the latest
value on subscribe (``--cache``) for centrifuge-js, centrifuge-python, a
uni_http_stream client with no SDK and the stock @rails/actioncable. The pure parts, on a fake clock:
tests/test_subscription_options.py."""
from __future__ import annotations

import json
import time

import pytest
from cent import (AsyncClient, BoolValue, CentApiResponseError, ChannelOptionsOverride, PresenceRequest,
                  StreamPosition, SubscribeRequest)

from auth import connection_token
from tests.cable_clients import NodeClient
from tests.clients import sdk_client
from tests.helpers import run, wait_for, wait_for_time
from tests.httpstream import HttpStreamClient
from tests.jsclient import JsClient
from tests.proxy_backend import Backend
from tests.stack import API_KEY, SECRET, http
from tests.test_server_api import cluster_ready, raw

FLAGS = ("--public-channels=news,room:*,prices:*", "--presence=room:*", "--presence-interval=1",
         "--presence-ttl=3", "--history-margin=0.2", "--history=bare:*=0")


def stream(gateway) -> dict:
    return {"transports": [{"transport": "http_stream", "endpoint": f"{gateway.url}/connection/http_stream"}],
            "emulation": f"{gateway.url}/emulation"}


async def js_client(gateway, user: str) -> JsClient:
    """The stock centrifuge-js (JSON, its http_stream transport in Node), connected."""
    client = await JsClient.start(stream(gateway)["transports"], stream(gateway)["emulation"], user)
    await client.wait_for(lambda e: e["event"] == "connected")
    return client


def history_of(gateway, channel: str) -> list:
    return raw(gateway, "history", {"channel": channel, "limit": -1})[1]["result"].get("publications", [])


def test_server_subscribe_recovers_since_a_position_honours_overrides_and_expires(start_gateway, nsqd):
    a = start_gateway(*FLAGS)

    async def scenario():
        api = AsyncClient(f"{a.url}/api", API_KEY)
        js = await js_client(a, "jo")
        try:
            # recover_since: the publications after a position, then live ones; recovered true.
            await wait_for_time(a.recovers_from())
            status, body = raw(a, "history", {"channel": "news", "limit": 0})
            since = StreamPosition(offset=body["result"]["offset"], epoch=body["result"]["epoch"])
            await wait_for_time(a.margin_passed())
            for n in range(3):
                nsqd.publish({"channel": "news", "data": {"n": n}})
            await wait_for(lambda: len(history_of(a, "news")) == 3, what="node A to store 3 publications")
            await api.subscribe(SubscribeRequest(user="jo", channel="news", recover_since=since))
            subscribed = await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "news")
            assert subscribed["wasRecovering"] and subscribed["recovered"] and subscribed["recoverable"]
            await wait_for(lambda: len(js.publications("news")) == 3)
            assert js.publications("news") == [{"n": 0}, {"n": 1}, {"n": 2}]
            nsqd.publish({"channel": "news", "data": {"n": 3}})
            await wait_for(lambda: js.publications("news")[-1:] == [{"n": 3}])

            # From a position this node cannot vouch for: recovered false, and nothing recovered.
            await api.subscribe(SubscribeRequest(user="jo", channel="room:old",
                                                 recover_since=StreamPosition(offset=5, epoch="1")))
            old = await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "room:old")
            assert old["wasRecovering"] and not old["recovered"]

            # override: force_recovery false (not recoverable), presence false (not in presence).
            quiet = ChannelOptionsOverride(force_recovery=BoolValue(value=False), presence=BoolValue(value=False))
            await api.subscribe(SubscribeRequest(user="jo", channel="room:1", override=quiet))
            room = await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "room:1")
            assert room["recoverable"] is False
            presence = (await api.presence(PresenceRequest(channel="room:1"))).presence
            assert presence == {}
            # One pushgate cannot honour: refused with 108 and the reason, nobody subscribed.
            with pytest.raises(CentApiResponseError) as refused:
                await api.subscribe(SubscribeRequest(user="jo", channel="room:2", override=ChannelOptionsOverride(
                    join_leave=BoolValue(value=True))))
            assert refused.value.code == 108 and "--join-leave" in refused.value.message

            # expire_at (cent 5 has no field for it: the raw body): delivered until then, then 3006.
            expire_at = int(time.time()) + 2
            status, body = raw(a, "subscribe", {"user": "jo", "channel": "room:brief", "expire_at": expire_at})
            assert (status, body) == (200, {"result": {}})
            await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "room:brief")
            nsqd.publish({"channel": "room:brief", "data": {"n": 1}})
            await wait_for(lambda: js.publications("room:brief") == [{"n": 1}])
            closed = await js.wait_for(lambda e: e["event"] == "connecting" and e["code"] == 3006, timeout=15)
            assert closed["reason"] == "subscription expired" and time.time() >= expire_at
            mark = len(js.events)
            await js.wait_for(lambda e: e["event"] == "connected", start=mark)
            nsqd.publish({"channel": "room:brief", "data": {"n": 2}})
            nsqd.publish({"channel": "news", "data": {"n": 4}, "user": "jo"})
            await js.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "#jo", start=mark)
            assert js.publications("room:brief", mark) == []
        finally:
            await js.close()

    run(scenario())
    assert a.metric("pushgate_disconnects_total", reason="subscription_expired") == 1


def test_refresh_info_reaches_presence_on_every_node(start_gateway):
    a, b = start_gateway(*FLAGS), start_gateway(*FLAGS)
    cluster_ready(a, b)

    async def scenario():
        client, _ = await sdk_client(a.ws_url, token=connection_token(SECRET, "ann", info={"name": "Ann"}),
                                     channels=("room:1",))
        try:
            def conn_info(gateway):
                presence = raw(gateway, "presence", {"channel": "room:1"})[1]["result"]["presence"]
                return [entry.get("conn_info") for entry in presence.values()]
            for gateway in (a, b):
                await wait_for(lambda g=gateway: conn_info(g) == [{"name": "Ann"}], what=f"{gateway.name}: Ann")
            status, body = raw(b, "refresh", {"user": "ann", "expire_at": int(time.time()) + 600,
                                              "info": {"name": "Ann B."}})
            assert (status, body) == (200, {"result": {}})
            for gateway in (a, b):
                await wait_for(lambda g=gateway: conn_info(g) == [{"name": "Ann B."}],
                               what=f"{gateway.name}: Ann B.")
            # Without a future expire_at, info is refused (Centrifugo would drop it).
            status, body = raw(a, "refresh", {"user": "ann", "info": {"name": "X"}})
            assert body["error"]["code"] == 107
        finally:
            await client.disconnect()

    run(scenario())


def test_the_subscribe_proxys_override_and_the_refresh_proxys_info_apply(start_gateway):
    async def scenario():
        backend = await Backend().start()
        backend.sub_override = {"force_recovery": {"value": False}}
        backend.refresh_info = {"name": "Renewed"}
        backend.extend = 600
        gateway = start_gateway(*FLAGS, f"--subscribe-proxy-url={backend.url('subscribe')}",
                                "--subscribe-proxy=room:*", f"--refresh-proxy-url={backend.url('refresh')}")
        clients = []
        try:
            # The subscribe proxy's override: not recoverable; one pushgate cannot honour: error 100.
            client, recorder = await sdk_client(gateway.ws_url, token=connection_token(
                SECRET, "ann", ttl=2, info={"name": "Ann"}), channels=("room:lobby",))
            clients.append(client)
            assert recorder.subscribed["room:lobby"].recoverable is False
            backend.sub_override = {"join_leave": {"value": True}}
            other, other_recorder = await sdk_client(gateway.ws_url, "bob", channels=("room:lobby",),
                                                     wait_subscribed=False)
            clients.append(other)
            errors = await wait_for(lambda: other_recorder.sub_errors.get("room:lobby"))
            assert errors[0].error.code == 100 and "room:lobby" not in other_recorder.subscribed
            # The refresh proxy's info: ann's presence entry takes it when her token's expiry comes.
            await wait_for(lambda: [e.get("conn_info") for e in raw(gateway, "presence", {"channel": "room:lobby"})[1]
                                    ["result"]["presence"].values()] == [{"name": "Renewed"}], timeout=10,
                           what="the refreshed info in presence")
            assert backend.calls["refresh"] and recorder.disconnects == []
        finally:
            for c in clients:
                await c.disconnect()
            await backend.stop()

    run(scenario())


def test_cache_channels_give_the_latest_value_on_subscribe_and_at_connect(start_gateway, nsqd):
    a = start_gateway(*FLAGS, "--cache=prices:*", "--cache=#uni")

    async def scenario():
        await wait_for_time(a.recovers_from())
        for n in range(3):
            nsqd.publish({"channel": "prices:eur", "data": {"n": n}})
        nsqd.publish({"user": "uni", "data": {"balance": 7}})
        await wait_for(lambda: len(history_of(a, "prices:eur")) == 3 and history_of(a, "#uni"),
                       what="node A to store the publications")
        js = await js_client(a, "jo")
        try:
            # centrifuge-js: the latest publication alone, recovered, at once.
            await js.send(op="subscribe", channel="prices:eur")
            subscribed = await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "prices:eur")
            assert subscribed["wasRecovering"] and subscribed["recovered"]
            await wait_for(lambda: js.publications("prices:eur") == [{"n": 2}])
            # An empty cache channel: recovered false, nothing.
            await js.send(op="subscribe", channel="prices:usd")
            empty = await js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "prices:usd")
            assert empty["wasRecovering"] and not empty["recovered"]
        finally:
            await js.close()
        # centrifuge-python likewise.
        client, recorder = await sdk_client(a.ws_url, "py", channels=("prices:eur",))
        try:
            assert await recorder.next() == ("prices:eur", {"n": 2})
            assert recorder.subscribed["prices:eur"].recovered
            await recorder.nothing_more(0.3)
        finally:
            await client.disconnect()
        # A uni_http_stream client (no SDK): its personal channel's latest value in the connect push.
        uni = await HttpStreamClient.open(a.port, "POST", "/connection/uni_http_stream",
                                          {"token": connection_token(SECRET, "uni")})
        try:
            push = await uni.line()
            sub = push["connect"]["subs"]["#uni"]
            assert sub["recovered"] and [p["data"] for p in sub["publications"]] == [{"balance": 7}]
        finally:
            uni.close()
        # The stock @rails/actioncable client: the latest value as its first message.
        params = {"channel": "$pubsub", "stream_name": "prices:eur"}
        cable = await NodeClient.start("actioncable_client.mjs", "--url",
                                       f"ws://127.0.0.1:{a.port}/cable?jid={connection_token(SECRET, 'rails')}",
                                       "--subscribe", json.dumps(params))
        try:
            ident = json.dumps(params, separators=(",", ":"))
            await cable.event("connected", identifier=ident)
            await cable.wait(lambda: cable.received(ident), what="the latest value")
            assert cable.received(ident) == [{"n": 2}]
        finally:
            await cable.stop()

    run(scenario())


@pytest.mark.parametrize("name", ["go", "python"])
def test_protobuf_sdks_get_what_recover_since_recovers_and_close_with_3006(start_gateway, nsqd, tmp_path, name):
    """centrifuge-go and centrifuge-python in Protobuf mode (tests/sdks.py):
    the recovered publications after the subscribe push, in order, with their
    offsets; then the subscription's expire_at closes the connection with 3006."""
    from tests.sdks import SDKS, HarnessProcess
    sdk = next(s for s in SDKS if s.name == name)
    if sdk.unavailable():
        pytest.skip(sdk.unavailable())
    a = start_gateway(*FLAGS)

    async def scenario():
        harness = HarnessProcess(sdk, tmp_path / f"{name}.stderr")
        try:
            await harness.start(a.ws_url, connection_token(SECRET, f"pb-{name}"))
            await harness.wait_for(lambda: harness.seen("connected"), "connected", timeout=20)
            await wait_for_time(a.recovers_from())
            body = raw(a, "history", {"channel": "news", "limit": 0})[1]["result"]
            await wait_for_time(a.margin_passed())
            for n in range(3):
                nsqd.publish({"channel": "news", "data": {"n": n}})
            await wait_for(lambda: len(history_of(a, "news")) == 3, what="node A to store 3 publications")
            status, reply = raw(a, "subscribe", {"user": f"pb-{name}", "channel": "news",
                                                 "recover_since": {"offset": body["offset"], "epoch": body["epoch"]},
                                                 "expire_at": int(time.time()) + 3})
            assert reply == {"result": {}}
            await harness.wait_for(lambda: harness.seen("subscribed", channel="news", server_side=True), "subscribed")
            got = await harness.collect(3)
            assert [data for _, data, _ in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
            offsets = [offset for _, _, offset in got]
            assert offsets == sorted(offsets) and offsets[0] > body["offset"]
            await harness.wait_for(lambda: [e for e in harness.seen("connecting") if e.get("code") == 3006],
                                   "closed with 3006", timeout=15)
        finally:
            await harness.kill()

    run(scenario())
