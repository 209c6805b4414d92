"""Bidirectional emulation with the stock centrifuge-js SDK (in Node.js, whose
fetch and ReadableStream its http_stream transport uses), against real nodes
and nsqd: the stream on node A, every /emulation request sent to node B,
which forwards it to A through NSQ. No sticky sessions anywhere."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from auth import connection_token
from tests.helpers import run, wait_for, wait_for_time, wait_until
from tests.httpstream import HttpStreamClient
from tests.jsclient import JsClient
from tests.proxy import SwitchingProxy
from tests.stack import SECRET, Reading, http

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


# --- what a hostile client can cost the cluster ----------------------------------------------

def test_an_emulation_flood_through_another_node_is_bounded_before_it_reaches_nsq(two_nodes):
    a, b = two_nodes

    def post(body: dict | bytes, headers: dict | None = None) -> tuple[int, bytes]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http("POST", f"{b.url}/emulation", raw, {"Content-Type": "application/json", **(headers or {})})

    async def scenario():
        flooder = await HttpStreamClient.open(a.port, "POST", "/connection/http_stream",
                                              {"id": 1, "connect": {"token": connection_token(SECRET, "mal")}})
        honest = await HttpStreamClient.open(a.port, "POST", "/connection/http_stream",
                                             {"id": 1, "connect": {"token": connection_token(SECRET, "hon")}})
        mine, theirs = (await flooder.line())["connect"], (await honest.line())["connect"]
        node = mine["node"]
        padding = " " * 60_000
        try:
            # Anonymous: a session id node a never issued. Nothing is forwarded.
            for n in range(200):
                status, _ = await asyncio.to_thread(post, {"session": f"forged{n}", "node": node, "data": "{}" + padding})
                assert status == 404
            # Bad input: 400, before anything is looked up; no traceback (tests/test_bad_input.py has the rest).
            assert (await asyncio.to_thread(post, {"session": mine["session"], "node": node, "data": "\ud800"}))[0] == 400
            assert (await asyncio.to_thread(post, b"{}", {"Content-Length": "\u00b2"}))[0] == 400
            # A session of its own: 60 KB requests, a KiB counting as a command, at the
            # command rate (50/s, burst 200): a few go through, then 429.
            started = time.monotonic()
            statuses = [(await asyncio.to_thread(post, {"session": mine["session"], "node": node,
                                                        "data": "{}" + padding}))[0] for _ in range(100)]
            elapsed = time.monotonic() - started
            assert set(statuses) == {204, 429} and statuses[:3] == [204] * 3, statuses
            assert statuses.count(204) <= 3 + (elapsed * 50 / 60) + 1, (statuses.count(204), elapsed)
            # Everyone else is served as before: the honest session's command through b.
            data = json.dumps({"id": 2, "subscribe": {"channel": "news"}})
            assert (await asyncio.to_thread(post, {"session": theirs["session"], "node": node, "data": data}))[0] == 204
            # Pushes may come first (a loss notice when the machine is slow enough to
            # drop the nodes' nsqd connections); the reply is what counts.
            reply = await skip_pings(honest)
            while "id" not in reply:
                reply = await skip_pings(honest)
            assert reply["id"] == 2 and "subscribe" in reply
        finally:
            flooder.close()
            honest.close()

    run(scenario())
    forwarded = b.metric("pushgate_emulation_requests_total", result="forwarded")
    assert b.metric("pushgate_emulation_requests_total", result="unverified") == 200
    assert b.metric("pushgate_emulation_requests_total", result="limited") > 0
    # Node a received exactly what b forwarded: the flood's few and the honest command.
    wait_until(lambda: a.metric("pushgate_emulation_requests_total", result="received") == forwarded,
               what="a to receive what b forwarded")
    assert "Traceback" not in a.log() + b.log()


async def skip_pings(client: HttpStreamClient) -> dict:
    while True:
        line = await client.line()
        if line:
            return line
