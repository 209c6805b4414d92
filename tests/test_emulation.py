"""Bidirectional emulation with the stock centrifuge-js SDK (in Node.js, whose
fetch and ReadableStream its http_stream transport uses), against real nodes
and nsqd: the stream on node A, every /emulation request sent to node B,
which forwards it to A through NSQ. No sticky sessions anywhere."""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers import run, wait_for, wait_for_time
from tests.jsclient import JsClient
from tests.proxy import SwitchingProxy
from tests.stack import Reading

# Pings every 2 s, a pong due within 1 s: the pongs travel B -> NSQ -> A in time.
FLAGS = ("--public-channels=news", "--ping-interval=2", "--pong-timeout=1", "--expired-close-delay=1",
         "--history-margin=0.2")


@pytest.fixture
def two_nodes(start_gateway):
    return start_gateway(*FLAGS), start_gateway(*FLAGS)


def stream(port: int, transport: str = "http_stream") -> list[dict]:
    return [{"transport": transport, "endpoint": f"http://127.0.0.1:{port}/connection/{transport}"}]


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_the_sdk_streams_from_one_node_and_sends_its_commands_through_another(two_nodes, nsqd, protocol):
    a, b = two_nodes

    async def scenario():
        client = await JsClient.start(stream(a.port), f"{b.url}/emulation", "erin", protocol=protocol,
                                      token_ttl=3)
        try:
            connected = await client.wait_for(lambda e: e["event"] == "connected")
            assert connected["transport"] == "http_stream"

            nsqd.publish({"user": "erin", "data": {"n": 1}})
            await client.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "#erin")

            # subscribe: a command through B, its reply on A's stream
            await client.send(op="subscribe", channel="news")
            subscribed = await client.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "news")
            assert subscribed["recoverable"]
            nsqd.publish({"channel": "news", "data": {"n": 2}})
            await client.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "news")

            # unsubscribe: nothing more from news, the personal channel carries on
            await client.send(op="unsubscribe", channel="news")
            await client.wait_for(lambda e: e["event"] == "unsubscribed" and e["channel"] == "news")
            mark = len(client.events)
            nsqd.publish({"channel": "news", "data": {"n": 3}})
            nsqd.publish({"user": "erin", "data": {"n": 4}})
            await client.wait_for(lambda e: e["event"] == "publication" and e.get("data") == {"n": 4}, start=mark)
            assert client.publications("news", mark) == []

            # The 3-second token is refreshed through B before it expires (an
            # unrefreshed one is cut 1 s after), and the pongs through B keep
            # the 2-second pings answered: still the first connection.
            await client.wait_for(lambda e: e["event"] == "token", timeout=6)
            await asyncio.sleep(4)  # the thing under test: the connection outlives its first token
            nsqd.publish({"user": "erin", "data": {"n": 5}})
            await client.wait_for(lambda e: e["event"] == "publication" and e.get("data") == {"n": 5})
            assert client.count("connected") == 1 and client.count("connecting") == 1, client.events  # the first, only
        finally:
            await client.close()

    run(scenario())
    forwarded = b.metric("pushgate_emulation_requests_total", result="forwarded")
    received = a.metric("pushgate_emulation_requests_total", result="received")
    # subscribe, unsubscribe, a refresh and a pong or more
    assert forwarded >= 4 and received >= 4, (forwarded, received)
    assert a.metric("pushgate_emulation_requests_total", result="local") == 0
    assert a.metric("pushgate_disconnects_total", reason="no_pong") == 0


def test_after_a_network_cut_the_sdk_recovers_exactly_what_it_missed(two_nodes, nsqd):
    a, b = two_nodes

    async def scenario():
        await wait_for_time(a.recovers_from())  # the node it comes back to vouches for its positions
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        client = await JsClient.start(stream(proxy.port), f"{b.url}/emulation", "finn")
        try:
            await client.wait_for(lambda e: e["event"] == "connected")
            await client.send(op="subscribe", channel="news")
            await client.wait_for(lambda e: e["event"] == "subscribed" and e["channel"] == "news")
            nsqd.publish({"channel": "news", "data": {"n": -1}})
            nsqd.publish({"user": "finn", "data": {"n": -1}})
            await client.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "#finn")
            await wait_for_time(a.margin_passed())  # positions older than the nodes' --history-margin

            proxy.route(None)
            proxy.cut()
            await client.wait_for(lambda e: e["event"] == "connecting")
            mark = len(client.events)
            read = Reading(a, b)
            for n in range(5):
                nsqd.publish({"channel": "news", "data": {"n": n}})
                nsqd.publish({"user": "finn", "data": {"n": n}})
            await wait_for(lambda: read.caught_up(10), what="both nodes to read what it missed")
            proxy.route(a.port)

            for channel in ("news", "#finn"):
                subscribed = await client.wait_for(
                    lambda e: e["event"] == "subscribed" and e["channel"] == channel, start=mark)
                assert subscribed["wasRecovering"] and subscribed["recovered"], subscribed
            await client.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "news"
                                  and e["data"] == {"n": 4}, start=mark)
            await client.wait_for(lambda e: e["event"] == "publication" and e["channel"] == "#finn"
                                  and e["data"] == {"n": 4}, start=mark)
            await asyncio.sleep(0.3)  # silence: nothing more may come (a duplicate); only waiting shows it
            for channel in ("news", "#finn"):
                assert client.publications(channel, mark) == [{"n": n} for n in range(5)]
        finally:
            await client.close()
            await proxy.close()

    run(scenario())
