"""Publication fields against the real stack (nsqd, one gateway node) with
stock clients: the `cent` server API client, centrifuge-js in Node (JSON
and Protobuf) and centrifuge-python (JSON and Protobuf).

Tags from the server API and the NSQ envelope reach ``ctx.tags`` /
``pub.tags``; a ``tagsFilter`` subscription gets only what its filter takes;
``b64data`` reaches Protobuf clients as its bytes and closes JSON clients
with 3506 unless it is JSON; ``skip_history`` and ``version`` are honoured;
the publish proxy's ``tags`` and ``idempotency_key`` apply; ``rpc("ping")``
is answered; ``--max-channels-per-connection`` counts the personal channel.
The evaluator and codecs alone: tests/test_publication_fields.py.
"""
from __future__ import annotations

import base64
import json

import pytest
from cent import AsyncClient, BroadcastRequest, HistoryRequest, PublishRequest
from centrifuge import SubscriptionState
from centrifuge.filter import Filter, FilterNode

from tests.clients import sdk_client
from tests.helpers import run, wait_for
from tests.jsclient import JsClient
from tests.proxy_backend import Backend
from tests.stack import API_KEY, Gateway, free_port, http


@pytest.fixture(scope="module")
def backend_port():
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nsqd, lookupd, backend_port):
    gw = Gateway(tmp_path_factory.mktemp("gw"), nsqd, lookupd, "--public-channels=news,feed,match,room:*,chat:*",
                 "--history-size=10", f"--publish-proxy-url=http://127.0.0.1:{backend_port}/centrifugo/publish",
                 "--publish-proxy=room:*", "--max-channels-per-connection=4").start()
    yield gw
    gw.stop()


def api_raw(gateway, method: str, body: dict) -> dict:
    status, answer = http("POST", f"{gateway.url}/api/{method}", json.dumps(body).encode(), {"X-API-Key": API_KEY})
    assert status == 200, answer
    return json.loads(answer)


async def js_client(gateway, user: str, protocol: str) -> JsClient:
    client = await JsClient.start([{"transport": "websocket", "endpoint": gateway.ws_url}],
                                  f"{gateway.url}/emulation", user, protocol=protocol)
    await client.wait_for(lambda e: e["event"] == "connected")
    return client


def tag_recorder(recorder, channel: str, seen: list):
    """A subscription handler that also records each publication's tags."""
    class Tagged(recorder.channel(channel).__class__):
        async def on_publication(self, ctx) -> None:
            seen.append(ctx.pub.tags)
            await super().on_publication(ctx)
    return Tagged(recorder, channel)


def test_tags_from_the_server_api_and_the_envelope_reach_ctx_tags_live_and_in_history(gateway, nsqd):
    async def scenario():
        api = AsyncClient(f"{gateway.url}/api", API_KEY)
        js = {protocol: await js_client(gateway, f"js-{protocol}", protocol) for protocol in ("json", "protobuf")}
        for client in js.values():
            await client.send(op="subscribe", channel="news")
            await client.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "news")
        py, recorder = await sdk_client(gateway.ws_url, "py", use_protobuf=True)
        seen: list = []
        await py.new_subscription("news", events=tag_recorder(recorder, "news", seen)).subscribe()
        await wait_for(lambda: "news" in recorder.subscribed)

        await api.publish(PublishRequest(channel="news", data={"n": 1}, tags={"kind": "goal", "minute": "12"}))
        nsqd.publish({"channel": "news", "data": {"n": 2}, "tags": {"kind": "foul"}})
        await api.broadcast(BroadcastRequest(channels=["news", "feed"], data={"n": 3}, tags={"kind": "goal"}))
        await api.publish(PublishRequest(channel="news", data={"n": 4}))
        expected = [(1, {"kind": "goal", "minute": "12"}), (2, {"kind": "foul"}), (3, {"kind": "goal"}), (4, None)]
        for client in js.values():
            await client.wait_for(lambda e: e["event"] == "publication" and e["data"] == {"n": 4})
            assert [(e["data"]["n"], e.get("tags") or None) for e in client.events
                    if e["event"] == "publication"] == expected   # Protobuf: an empty map
        assert [json.loads(data)["n"] for _, data in await recorder.collect(4)] == [1, 2, 3, 4]
        assert seen == [tags or {} for _, tags in expected]
        history = await api.history(HistoryRequest(channel="news", limit=10))
        assert [p.tags for p in history.publications] == [tags for _, tags in expected]
        for client in js.values():
            await client.close()
        await py.disconnect()
    run(scenario())


def test_a_tags_filter_is_applied_on_the_server_and_an_invalid_one_is_107(gateway):
    async def scenario():
        api = AsyncClient(f"{gateway.url}/api", API_KEY)
        goals_js = await js_client(gateway, "js-pb", "protobuf")
        await goals_js.send(op="subscribe", channel="match", tagsFilter={"key": "kind", "cmp": "eq", "val": "goal"})
        await goals_js.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "match")
        py, recorder = await sdk_client(gateway.ws_url, "py")
        seen: list = []
        sub = py.new_subscription("match", events=tag_recorder(recorder, "match", seen),
                                  tags_filter=Filter.any(Filter.eq("kind", "goal"), Filter.gt("minute", "89")))
        await sub.subscribe()
        await wait_for(lambda: "match" in recorder.subscribed)
        for n, tags in enumerate([{"kind": "goal", "minute": "12"}, {"kind": "foul", "minute": "30"},
                                  {"kind": "foul", "minute": "90"}, None, {"kind": "goal"}]):
            await api.publish(PublishRequest(channel="match", data={"n": n}, tags=tags))
        await goals_js.wait_for(lambda e: e["event"] == "publication" and e["data"] == {"n": 4})
        assert [e["data"]["n"] for e in goals_js.events if e["event"] == "publication"] == [0, 4]
        assert [data["n"] for _, data in await recorder.collect(3)] == [0, 2, 4]
        assert await recorder.nothing_more(0.3)
        # An invalid filter ("starts" is not an operator: "sw" is): 107 for the subscription, the connection stays.
        bad = py.new_subscription("feed", events=recorder.channel("feed"),
                                  tags_filter=FilterNode({"key": "kind", "cmp": "starts", "val": "g"}))
        await bad.subscribe()
        await wait_for(lambda: "feed" in recorder.sub_errors or "feed" in recorder.unsubscribed)
        assert bad.state is not SubscriptionState.SUBSCRIBED and "feed" not in recorder.subscribed
        codes = [getattr(getattr(ctx, "error", None), "code", None) for ctx in recorder.sub_errors.get("feed", [])]
        unsubscribed = recorder.unsubscribed.get("feed")
        assert 107 in codes or (unsubscribed is not None and unsubscribed.code == 107), (codes, unsubscribed)
        assert py.state.value == "connected" and sub.state is SubscriptionState.SUBSCRIBED
        await goals_js.close()
        await py.disconnect()
    run(scenario())


def test_binary_publications_reach_protobuf_as_bytes_and_json_as_json_or_3506(gateway):
    async def scenario():
        api = AsyncClient(f"{gateway.url}/api", API_KEY)
        pb, pb_recorder = await sdk_client(gateway.ws_url, "pb", channels=("chat:bin",), use_protobuf=True)
        js, js_recorder = await sdk_client(gateway.ws_url, "js", channels=("chat:bin",))
        # JSON bytes: both get them, the JSON client as the value.
        await api.publish(PublishRequest(channel="chat:bin", data=None,
                                         b64data=base64.b64encode(b'{"a": [1, 2]}').decode()))
        assert await pb_recorder.next() == ("chat:bin", b'{"a": [1, 2]}')
        assert await js_recorder.next() == ("chat:bin", {"a": [1, 2]})
        # Other bytes: exact for Protobuf, 3506 for the JSON client (as Centrifugo).
        raw = bytes(range(256))
        await api.publish(PublishRequest(channel="chat:bin", data=None, b64data=base64.b64encode(raw).decode()))
        assert await pb_recorder.next() == ("chat:bin", raw)
        await wait_for(lambda: (3506, "inappropriate protocol") in js_recorder.disconnects)
        await js.disconnect()
        # The server API's history gives bytes that are not JSON as b64data.
        answer = api_raw(gateway, "history", {"channel": "chat:bin", "limit": 10})
        assert base64.b64decode(answer["result"]["publications"][1]["b64data"]) == raw
        await pb.disconnect()
    run(scenario())


def test_skip_history_is_delivered_and_not_kept(gateway):
    async def scenario():
        api = AsyncClient(f"{gateway.url}/api", API_KEY)
        client, recorder = await sdk_client(gateway.ws_url, "sk", channels=("chat:skip",))
        await api.publish(PublishRequest(channel="chat:skip", data={"n": "kept"}))
        await api.publish(PublishRequest(channel="chat:skip", data={"n": "not kept"}, skip_history=True))
        assert [d["n"] for _, d in await recorder.collect(2)] == ["kept", "not kept"]
        history = await api.history(HistoryRequest(channel="chat:skip", limit=10))
        assert [p.data for p in history.publications] == [{"n": "kept"}]
        await client.disconnect()
    run(scenario())


def test_stale_versions_are_dropped(gateway):
    async def scenario():
        client, recorder = await sdk_client(gateway.ws_url, "ver", channels=("chat:ver",))
        # cent has no field for version / version_epoch: the raw API, as Centrifugo documents it.
        for version, epoch, text in [(2, "", "v2"), (1, "", "v1"), (2, "", "v2 again"), (3, "", "v3"),
                                     (1, "day2", "v1 of day 2"), (0, "", "end")]:
            assert api_raw(gateway, "publish", {"channel": "chat:ver", "data": text, "version": version,
                                                "version_epoch": epoch}) == {"result": {}}
        got: list = []
        while not got or got[-1] != "end":
            got.append((await recorder.next())[1])
        assert got == ["v2", "v3", "v1 of day 2", "end"]
        await client.disconnect()
    run(scenario())


def test_the_publish_proxy_results_tags_and_idempotency_key(gateway, backend_port):
    async def scenario():
        backend = await Backend().start(backend_port)
        try:
            reader, recorder = await sdk_client(gateway.ws_url, "reader", channels=("room:lobby",), use_protobuf=True)
            tags_seen: list = []

            class Tagged(recorder.channel("room:lobby").__class__):
                async def on_publication(self, ctx) -> None:
                    tags_seen.append((ctx.pub.tags, ctx.pub.info.user if ctx.pub.info else None))
                    await super().on_publication(ctx)
            writer, _ = await sdk_client(gateway.ws_url, "writer")
            sub = writer.new_subscription("room:lobby", events=Tagged(recorder, "room:lobby"))
            await sub.subscribe()
            await wait_for(lambda: sub.state is SubscriptionState.SUBSCRIBED)
            for _ in range(2):   # the same idempotency key twice: delivered once
                await sub.publish({"text": "hi", "tags": {"mood": "happy"}, "key": "msg-1"})
            await sub.publish({"text": "bye"})
            got = [json.loads(d) if isinstance(d, bytes) else d for _, d in await recorder.collect(4)]
            texts = sorted(p["text"] for p in got)
            assert texts == ["bye", "bye", "hi", "hi"]   # reader and writer each: "hi" once, "bye" once
            assert ({"mood": "happy"}, "writer") in tags_seen and ({}, "writer") in tags_seen
            assert await recorder.nothing_more(0.5)
            await reader.disconnect()
            await writer.disconnect()
        finally:
            await backend.stop()
    run(scenario())


def test_the_ping_rpc_is_answered_with_an_empty_result(gateway):
    async def scenario():
        client, _ = await sdk_client(gateway.ws_url, "pinger")
        result = await client.rpc("ping", None)
        assert not result.data
        await client.disconnect()
    run(scenario())


def test_the_channel_limit_counts_the_personal_channel_and_refuses_past_it_with_106(gateway):
    async def scenario():
        client, recorder = await sdk_client(gateway.ws_url, "limited", channels=("news", "feed"))
        # #limited, news and feed: one more fits under 4, the next is refused with 106.
        extra = client.new_subscription("chat:1", events=recorder.channel("chat:1"))
        await extra.subscribe()
        await wait_for(lambda: "chat:1" in recorder.subscribed)
        over = client.new_subscription("chat:2", events=recorder.channel("chat:2"))
        await over.subscribe()
        await wait_for(lambda: "chat:2" in recorder.sub_errors or "chat:2" in recorder.unsubscribed)
        codes = [getattr(getattr(ctx, "error", None), "code", None) for ctx in recorder.sub_errors.get("chat:2", [])]
        unsubscribed = recorder.unsubscribed.get("chat:2")
        assert 106 in codes or (unsubscribed is not None and unsubscribed.code == 106), (codes, unsubscribed)
        await client.disconnect()
    run(scenario())
