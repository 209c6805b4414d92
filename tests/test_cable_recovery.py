"""Missed messages on /cable with AnyCable's extended protocol: the stock
@anycable/web client (npm, under Node, actioncable-v1-ext-json) is cut off by
a switchable proxy standing in for the network and a load balancer, comes
back to the same node (its session is restored, then its history request
answered) or to another one (its session is unknown there; it resubscribes
with its stream positions, which every node shares), and gets exactly the
publications it missed, in order, once. When a node cannot vouch for the gap
the client is told (reject_history: `history_not_found`) and gets none of it.
"""
from __future__ import annotations

import asyncio
import json
import math

import pytest

from auth import connection_token
from tests.cable_clients import NodeClient
from tests.helpers import run, wait_for, wait_for_time, wait_until_time
from tests.proxy import SwitchingProxy
from tests.stack import SECRET, Reading

FAST = ("--history-margin=0.2", "--public-channels=room")
ROOM = json.dumps({"channel": "$pubsub", "stream_name": "room"}, separators=(",", ":"))
MINE = json.dumps({"channel": "$pubsub", "stream_name": "#ana"}, separators=(",", ":"))


def publish(nsqd, numbers) -> None:
    bodies = []
    for n in numbers:
        bodies.append(json.dumps({"channel": "room", "data": {"n": n}}).encode())
        bodies.append(json.dumps({"user": "ana", "data": {"n": n}}).encode())
    nsqd.mpublish(bodies)


def numbers(client, identifier) -> list[int]:
    return [d["n"] for d in client.received(identifier)]


async def listening_client(proxy) -> NodeClient:
    """@anycable/web through the proxy, on "room" and its own personal stream,
    with two publications received (and their positions recorded)."""
    url = f"ws://127.0.0.1:{proxy.port}/cable?jid={connection_token(SECRET, 'ana')}"
    client = await NodeClient.start("anycable_client.mjs", "--url", url, "--stream", "room", "--stream", "#ana",
                                    "--raw")
    for identifier in (ROOM, MINE):
        await client.event("channel", identifier=identifier, state="connect")
        await client.event("info", identifier=identifier, type="history_received")  # the first subscribe's
    assert (await client.event("socket", state="open"))["protocol"] == "actioncable-v1-ext-json"
    return client


async def cut_and_miss(client, proxy, nsqd, missed, nodes) -> None:
    await wait_for_time(nodes[0].margin_passed())   # positions older than the nodes' margin
    proxy.route(None)
    proxy.cut()                            # RST: no close frame, no disconnect message
    await client.event("cable", state="disconnect")
    read = Reading(*nodes)
    publish(nsqd, missed)
    await wait_for(lambda: read.caught_up(2 * len(missed)), what="every node to read what it missed")


def vouched_page_load(*nodes) -> float:
    """When a client may start for ``nodes`` to vouch for its first positions
    and for the `since` of its first subscribes: its page load in whole
    seconds, rounded down, must not be before a node's continuity starts."""
    return max(max(n.recovers_from(), math.floor(n.ready_at + n.history_margin) + 1) for n in nodes)


@pytest.fixture
def two_nodes(start_gateway):
    a, b = start_gateway(*FAST), start_gateway(*FAST)
    wait_until_time(vouched_page_load(a, b))
    return a, b


@pytest.mark.parametrize("same_node", [True, False], ids=["same node", "other node"])
def test_anycable_client_recovers_exactly_what_it_missed(two_nodes, nsqd, same_node):
    a, b = two_nodes

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        client = await listening_client(proxy)
        try:
            publish(nsqd, [1, 2])
            await client.wait(lambda: len(client.of("received")) == 4, what="1 and 2 on both streams")
            before = {i: client.of("received", identifier=i)[-1]["offset"] for i in (ROOM, MINE)}
            await cut_and_miss(client, proxy, nsqd, [3, 4, 5], (a, b))
            proxy.route(a.port if same_node else b.port)
            await client.event("cable", timeout=40, state="connect", reconnect=True)
            for identifier in (ROOM, MINE):
                await client.wait(lambda: len(client.of("info", identifier=identifier)) == 2,
                                  what=f"the history answer for {identifier}")
                assert [i["type"] for i in client.of("info", identifier=identifier)] == ["history_received"] * 2
            publish(nsqd, [6])
            await client.wait(lambda: len(client.of("received")) == 12, what="6 on both streams")
            await asyncio.sleep(0.5)   # silence: nothing more may come (a duplicate); only waiting shows it
            for identifier in (ROOM, MINE):
                assert numbers(client, identifier) == [1, 2, 3, 4, 5, 6]   # each once, in order
                received = client.of("received", identifier=identifier)
                offsets = [r["offset"] for r in received]
                assert offsets == sorted(offsets) and len(set(offsets)) == 6
                assert received[2]["offset"] > before[identifier]
                assert len({r["epoch"] for r in received}) == 1
            restored = client.of("cable", state="connect", reconnect=True)[0]["restored"]
            if same_node:
                # The session came back on its node: no resubscribe, the history
                # command brought the gap.
                assert restored is True
                assert not client.of("channel", state="disconnect")
                assert any('"command":"history"' in f["data"] for f in client.of("frame", dir="out"))
            else:
                # Unknown there: the channels resubscribe with their positions.
                assert restored is False
                assert {c["reason"] for c in client.of("channel", state="disconnect")} == {"recovery_failed"}
        finally:
            await client.stop()
            await proxy.close()
    run(scenario())
    assert b.metric("pushgate_recoveries_total", recovered="true") == (0 if same_node else 2)


@pytest.mark.parametrize("why", ["node started after the cut", "more missed than history keeps"])
def test_anycable_client_is_told_when_the_gap_cannot_be_filled(start_gateway, nsqd, why):
    first = start_gateway(*FAST, "--history-size=3")
    wait_until_time(vouched_page_load(first))   # so that only what is under test can refuse

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(first.port)
        client = await listening_client(proxy)
        try:
            publish(nsqd, [1])
            await client.wait(lambda: len(client.of("received")) == 2, what="1 on both streams")
            if why == "node started after the cut":
                await wait_for_time(first.margin_passed())
                proxy.route(None)
                proxy.cut()
                target = await asyncio.get_running_loop().run_in_executor(None, lambda: start_gateway(*FAST))
                read = Reading(target)
                publish(nsqd, [2, 3])
                await wait_for(lambda: read.caught_up(4), what="the new node to read 2 and 3")
            else:
                target = first
                await cut_and_miss(client, proxy, nsqd, [2, 3, 4, 5, 6], (first,))
            proxy.route(target.port)
            for identifier in (ROOM, MINE):
                info = await client.event("info", timeout=40, identifier=identifier, type="history_not_found")
                assert info  # reject_history: the app knows it must reload what it shows
            publish(nsqd, [7])
            await client.wait(lambda: len(client.received(ROOM)) == 2 and len(client.received(MINE)) == 2,
                              what="7 on both streams")
            await asyncio.sleep(0.5)   # silence: nothing of the gap may follow; only waiting shows it
            for identifier in (ROOM, MINE):
                assert numbers(client, identifier) == [1, 7]   # nothing of the gap, not even a part
        finally:
            await client.stop()
            await proxy.close()
    run(scenario())
