"""The control bus: nodes talk to each other through NSQ alone, each cluster\n(the nodes of one --topic) on its own."""
from __future__ import annotations

import asyncio
import json

import ujson

from gateway.cluster.bus import ControlBus
from gateway.config import ephemeral_channel
from gateway.core.metrics import Metrics
from tests.clients import sdk_client
from tests.helpers import wait_for, wait_until
from tests.stack import API_KEY, http


def bus(name: str, nsqd, lookupd) -> ControlBus:
    return ControlBus(node=name, topic="test-control", channel=f"{name}#ephemeral",
                      nsqd_http_address=f"http://{nsqd.http_address}", nsqd_tcp_addresses=[],
                      lookupd_http_addresses=[f"http://{lookupd.http_address}"], lookupd_poll_interval=1,
                      metrics=Metrics())


def test_a_message_reaches_its_node_a_broadcast_every_node_and_nobody_hears_itself(nsqd, lookupd):
    async def scenario():
        a, b, c = bus("a", nsqd, lookupd), bus("b", nsqd, lookupd), bus("c", nsqd, lookupd)
        heard = {"a": [], "b": [], "c": []}
        for node in (a, b, c):
            node.on("hello", lambda m, name=node.node: heard[name].append((m["from"], m["n"])))
        http("POST", f"http://{nsqd.http_address}/topic/create?topic=test-control")  # lookupd finds it
        for node in (a, b, c):
            node.start()
        await wait_for(lambda: a.ready() and b.ready() and c.ready())
        await a.send("hello", to="b", n=1)      # to one node
        await a.send("hello", n=2)              # to all
        await wait_for(lambda: len(heard["b"]) == 2 and len(heard["c"]) == 1)
        assert heard == {"a": [], "b": [("a", 1), ("a", 2)], "c": [("a", 2)]}
        for node in (a, b, c):
            await node.close()
    asyncio.run(scenario())



# --- one cluster per topic -------------------------------------------------------------------

def info_names(gateway) -> set[str]:
    status, body = http("POST", f"{gateway.url}/api/info", b"{}", {"X-API-Key": API_KEY})
    assert status == 200, body
    return {node["name"] for node in json.loads(body)["result"]["nodes"]}


def control_channels(nsqd) -> dict[str, set[str]]:
    """Each control topic on nsqd, and the channels read from it now."""
    _, body = http("GET", f"http://{nsqd.http_address}/stats?format=json")
    return {t["topic_name"]: {c["channel_name"] for c in t["channels"] if c["client_count"]}
            for t in json.loads(body)["topics"] if t["topic_name"].endswith("-control")}


def test_deployments_with_their_own_topic_get_their_own_control_topic(start_gateway, nsqd):
    a1 = start_gateway("--topic=deploy-a", "--presence-interval=1", "--presence-ttl=3")
    b1 = start_gateway("--topic=deploy-b", "--presence-interval=1", "--presence-ttl=3")
    a2 = start_gateway("--topic=deploy-a", "--presence-interval=1", "--presence-ttl=3")
    channels = control_channels(nsqd)
    # Each node reads its own cluster's control topic, <topic>-control, and only that one:
    # the deployments cannot hear each other.
    assert {a1.nsq_channel, a2.nsq_channel} <= channels.get("deploy-a-control", set())
    assert b1.nsq_channel in channels.get("deploy-b-control", set())
    assert not {a1.nsq_channel, a2.nsq_channel} & channels.get("deploy-b-control", set())
    assert b1.nsq_channel not in channels.get("deploy-a-control", set())
    wait_until(lambda: info_names(a1) == {a1.node_name, a2.node_name}, what="a1 to hear a2")
    assert info_names(b1) == {b1.node_name}


def test_two_clusters_given_one_control_topic_stay_apart_and_say_so_once(start_gateway, nsqd):
    shared = ("--control-topic=shared-control", "--presence-interval=1", "--presence-ttl=3")
    a1 = start_gateway("--topic=deploy-a", *shared)
    a2 = start_gateway("--topic=deploy-a", *shared)
    b1 = start_gateway("--topic=deploy-b", *shared)

    async def scenario():
        mine, _ = await sdk_client(a1.ws_url, "same-user")
        theirs, their_events = await sdk_client(b1.ws_url, "same-user")
        try:
            # a1 hears a2, and drops b1's heartbeats unread: info is its own cluster's.
            await wait_for(lambda: info_names(a1) == {a1.node_name, a2.node_name}, what="a1 to hear a2")
            await wait_for(lambda: a1.metric("pushgate_control_messages_total", event="foreign", kind="node") >= 2,
                           what="a1 to receive two of b1's heartbeats")
            assert info_names(a1) == {a1.node_name, a2.node_name} and info_names(b1) == {b1.node_name}

            # b1's server API disconnects its own user's connection, not a1's.
            status, body = http("POST", f"{b1.url}/api/disconnect", b'{"user": "same-user"}',
                                {"X-API-Key": API_KEY})
            assert (status, json.loads(body)) == (200, {"result": {}})
            await wait_for(lambda: their_events.disconnects, what="b1's client to be disconnected")
            await wait_for(lambda: a1.metric("pushgate_control_messages_total", event="foreign",
                                             kind="api-disconnect") == 1, what="a1 to drop b1's disconnect")
            assert a1.metric("pushgate_connections") == 1
            assert a1.metric("pushgate_disconnects_total", reason="force_disconnect") == 0
        finally:
            await mine.disconnect()
            await theirs.disconnect()

    asyncio.run(scenario())
    # One warning about the other cluster, not one per message.
    warnings = [line for line in a1.log().splitlines() if "another cluster" in line]
    assert len(warnings) == 1 and "deploy-b" in warnings[0] and "--control-topic" in warnings[0], warnings


def test_messages_of_another_cluster_are_dropped_and_warned_about_once_a_minute(caplog):
    # In process: a bus that is not started, handed messages as its reader would.
    from tests.inprocess import FakeClock
    clock = FakeClock()
    metrics = Metrics()
    node = ControlBus(node="a1", topic="shared-control", channel="a1#ephemeral", nsqd_http_address="http://x:1",
                      nsqd_tcp_addresses=["127.0.0.1:1"], lookupd_http_addresses=[], lookupd_poll_interval=1,
                      metrics=metrics, cluster="deploy-a", clock=clock.monotonic)
    heard = []
    node.on("hello", heard.append)

    def receive(**message) -> None:
        node._receive("shared-control", json.dumps(message).encode(), 0, "nsqd", b"id")

    for n in range(100):
        receive(to="", cluster="deploy-b", kind="hello", **{"from": "b1"}, n=n)
    receive(to="", cluster="deploy-a", kind="hello", **{"from": "a2"}, n=0)
    receive(to="", kind="hello", **{"from": "old-a3"}, n=1)   # a node of an earlier version: no cluster
    assert [(m["from"], m["n"]) for m in heard] == [("a2", 0), ("old-a3", 1)]
    assert metrics.control_messages.labels("foreign", "hello")._value.get() == 100
    warnings = [r for r in caplog.records if "another cluster" in r.getMessage()]
    assert len(warnings) == 1 and "deploy-b" in warnings[0].getMessage()
    clock.advance(61)
    receive(to="", cluster="deploy-b", kind="hello", **{"from": "b1"}, n=100)
    assert len([r for r in caplog.records if "another cluster" in r.getMessage()]) == 2


def test_a_message_for_another_node_is_not_even_parsed():
    # An /emulation forward is up to twice its 64 KiB request, and every node's
    # reader receives it: the others drop it by its first bytes. Shown with a
    # message that would not parse: only its addressee counts it as bad.
    buses = {name: ControlBus(node=name, topic="t-control", channel=ephemeral_channel(name), nsqd_http_address="http://x:1",
                              nsqd_tcp_addresses=["127.0.0.1:1"], lookupd_http_addresses=[], lookupd_poll_interval=1,
                              metrics=Metrics(), cluster="t") for name in ("a1", "a2", 'a"3')}
    heard = {name: [] for name in buses}
    for name, node in buses.items():
        node.on("emulation", heard[name].append)
    broken = b'{"to":"a1","cluster":"t","kind":"emulation","from":"a9","data":"' + b"x" * 100_000   # cut short
    for node in buses.values():
        node._receive("t-control", broken, 0, "nsqd", b"id")
    bad = {name: node._metrics.control_messages.labels("bad", "")._value.get() for name, node in buses.items()}
    assert bad == {"a1": 1, "a2": 0, 'a"3': 0}
    # Whole messages: each reaches its addressee only, whatever its name; a broadcast reaches all.
    for to in ("a1", 'a"3', ""):
        body = ujson.dumps({"to": to, "cluster": "t", "kind": "emulation", "from": "a9", "n": to},
                           ensure_ascii=False).encode()   # as ControlBus.send writes them
        for node in buses.values():
            node._receive("t-control", body, 0, "nsqd", b"id")
    assert {name: [m["n"] for m in got] for name, got in heard.items()} == {
        "a1": ["a1", ""], "a2": [""], 'a"3': ['a"3', ""]}
